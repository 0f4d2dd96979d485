"""A directory of webhook deliveries: one JSON file each, written durably and stored once.

Layout: ``<dir>/<key>.json`` are pending deliveries, ``<dir>/done/<key>.json`` archived ones
(the daily job archives what it has loaded). ``key`` is the sha256 of the delivery's identity:

- v1 (``{"url": ...}``): ``("v1", ref, URL without its query)``; Insider may redeliver the same
  file with a fresh signature, which is the same delivery;
- v2 (a result manifest): ``("v2", export_id, status)``.

A file is written as ``<key>.json.tmp`` (mode 0600: it holds signed URLs), flushed and fsynced,
renamed over ``<key>.json`` with ``os.replace`` and the directory fsynced, so a reader sees a
whole file or none and an answered delivery survives a crash. Writers hold a lock (a thread
lock, plus ``flock`` on ``<dir>/.lock`` where available, for several processes) around "known?
then write", so concurrent identical deliveries are stored once. Readers take no lock and skip
files they cannot read, with a warning.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the thread lock alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

KINDS = ("v1", "v2")
_KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Delivery:
    """One stored webhook delivery.

    Attributes:
        key: file stem, the sha256 hex of the dedup identity.
        kind: ``"v1"`` (a file link) or ``"v2"`` (a result manifest).
        received_at: ISO-8601 UTC time of the first receipt.
        url: v1 only: the file link as delivered, with its signature.
        ref: v1 only: the ``ref`` query parameter of the hook URL it was POSTed to.
        export_id: v2 only: the manifest's ``export_id``.
        manifest: v2 only: the manifest as delivered.
        remote: the sender's address.
        path: where the file is stored (not part of the file).
    """

    key: str
    kind: str
    received_at: str
    url: str | None = None
    ref: str | None = None
    export_id: str | None = None
    manifest: dict[str, Any] | None = None
    remote: str | None = None
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> Delivery:
        """Build from a stored dict; raises ValueError when it is not a delivery."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(cls)} - {"path"}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("key", "kind", "received_at"):
            if not isinstance(values.get(name), str):
                raise ValueError(f"missing or invalid {name!r}")
        if values["kind"] not in KINDS:
            raise ValueError(f"unknown kind {values['kind']!r}")
        if values.get("manifest") is not None and not isinstance(values["manifest"], dict):
            raise ValueError("manifest is not an object")
        return cls(**values, path=path)


def delivery_key(kind: str, *, url: str | None = None, ref: str | None = None,
                 export_id: str | None = None, status: str | None = None) -> str:
    """The sha256 hex of a delivery's dedup identity (see the module docstring)."""
    if kind == "v1":
        if not isinstance(url, str) or not url:
            raise ValueError("a v1 delivery needs its url")
        p = urlsplit(url)
        identity: list[str] = ["v1", ref or "", urlunsplit((p.scheme, p.netloc, p.path, "", ""))]
    elif kind == "v2":
        if not isinstance(export_id, str) or not export_id or not isinstance(status, str):
            raise ValueError("a v2 delivery needs a manifest with export_id and status")
        identity = ["v2", export_id, status]
    else:
        raise ValueError(f"unknown delivery kind {kind!r} (expected one of {KINDS})")
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


class Inbox:
    """The delivery store in ``directory`` (created with ``done/`` if missing).

    Safe to share between threads; several processes may write to one directory on POSIX.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.done = self.directory / "done"
        self.done.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Inbox({str(self.directory)!r})"

    def put(self, kind: str, *, url: str | None = None, ref: str | None = None,
            manifest: dict[str, Any] | None = None,
            remote: str | None = None) -> tuple[Delivery, bool]:
        """Store a delivery unless the same one is already pending or archived.

        Returns:
            The stored delivery (the earlier one for a duplicate) and whether it is new.

        Raises:
            ValueError: the delivery lacks what its kind needs.
            OSError: the file could not be written.
        """
        export_id = status = None
        if kind == "v2":
            if not isinstance(manifest, dict):
                raise ValueError("a v2 delivery needs its manifest")
            export_id, status = manifest.get("export_id"), manifest.get("status")
        key = delivery_key(kind, url=url, ref=ref, export_id=export_id, status=status)
        delivery = Delivery(
            key=key, kind=kind, received_at=dt.datetime.now(dt.UTC).isoformat(),
            url=url if kind == "v1" else None, ref=ref if kind == "v1" else None,
            export_id=export_id, manifest=manifest if kind == "v2" else None, remote=remote,
        )
        with self._locked():
            existing = self._existing(key)
            if existing is not None:
                return self._read(existing) or delivery, False
            delivery.path = self._pending_path(key)
            self._write(delivery)
        return delivery, True

    def pending(self) -> list[Delivery]:
        """Deliveries not archived yet, oldest received first; unreadable files are skipped."""
        found = []
        for path in self.directory.glob("*.json"):
            delivery = self._read(path)
            if delivery is not None:
                found.append(delivery)
        return sorted(found, key=lambda d: (d.received_at, d.key))

    def find_v1(self, ref: str) -> Delivery | None:
        """The oldest pending v1 delivery POSTed with ``?ref=<ref>``."""
        return next((d for d in self.pending() if d.kind == "v1" and d.ref == ref), None)

    def find_v2(self, export_id: str) -> Delivery | None:
        """The oldest pending v2 manifest of ``export_id``."""
        return next(
            (d for d in self.pending() if d.kind == "v2" and d.export_id == export_id), None
        )

    def archive(self, key: str) -> None:
        """Move a pending delivery to ``done/``; archived or unknown keys are a no-op."""
        if not _KEY.match(key):
            raise ValueError(f"not a delivery key: {key!r}")
        with self._locked():
            source = self._pending_path(key)
            if not source.exists():
                return
            os.replace(source, self.done / source.name)
            _fsync_dir(self.done)
            _fsync_dir(self.directory)

    def is_known(self, key: str) -> bool:
        """Whether ``key`` is stored, pending or archived."""
        return bool(_KEY.match(key)) and self._existing(key) is not None

    # -- internals -------------------------------------------------------------------------------

    def _pending_path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def _existing(self, key: str) -> Path | None:
        for path in (self._pending_path(key), self.done / f"{key}.json"):
            if path.exists():
                return path
        return None

    def _read(self, path: Path) -> Delivery | None:
        try:
            return Delivery.from_dict(json.loads(path.read_text(encoding="utf-8")), path=path)
        except FileNotFoundError:  # archived between listing and reading
            return None
        except (OSError, ValueError, TypeError) as e:
            log.warning("inbox: skipping unreadable delivery file %s (%s)", path,
                        type(e).__name__)
            return None

    def _write(self, delivery: Delivery) -> None:
        assert delivery.path is not None
        tmp = delivery.path.with_name(delivery.path.name + ".tmp")
        data = json.dumps(delivery.to_dict(), indent=1, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, delivery.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(self.directory)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if fcntl is None:  # pragma: no cover
                yield
                return
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)
