"""The export lifecycle, independent of dlt: submit → record → wait → download.

``ExportLifecycle`` drives one export through Insider's asynchronous API with an ``InsiderClient``
and a ``Recorder``. The recorder makes each step durable (the daily job records to dlt state and the
``exports`` table with its own small pipeline run), so that a process killed at any point resumes
the same export on the next run instead of submitting a second one:

1. ``submit``: POST once, then immediately ``recorder.submitted(record)``. Nothing else happens
   before the export id is durable.
2. ``wait``: poll the status with capped exponential backoff until ``completed`` (returns the
   manifest), ``failed``/``rejected`` (raises ``ExportOutcomeError``; the caller records it and
   decides what to submit instead) or ``max_wait_seconds`` (raises ``StillProcessing``: exit 75,
   the export stays in flight). An export the server no longer knows raises ``ExportNotFound``.
3. ``download``: stream every manifest file to ``dest_dir``; files already complete there from an
   earlier, interrupted run are kept. A refused (expired) signed URL makes it fetch the status
   again for fresh URLs.

A v2 result manifest delivered to the webhook inbox (``delivered``) answers ``wait`` without a
poll. Raw Export v1 has no export id and no status: ``submit_v1`` records the request under a ref
of ours that travels in the hook URL, and the job (job.py) waits for its delivery in the inbox.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from insider_source import settings as s
from insider_source.checkpoints import checkpoint
from insider_source.client import (
    DownloadUrlExpired,
    InsiderClient,
    redact_url,
    validate_status,
)
from insider_source.exceptions import ExportOutcomeError, StillProcessing
from insider_source.expect import expectation
from insider_source.files import SourceFile
from insider_source.progress import Progress, human_bytes
from insider_source.typing import TExportStatusBody
from insider_source.window import Window, parse_utc


def poll_intervals(first: float) -> Iterator[float]:
    """Seconds between looks at a pending export: ``first``, doubling, capped at ten times
    ``first`` or ``MAX_POLL_INTERVAL_SECONDS`` (whichever is smaller, never below ``first``)."""
    cap = max(first, min(s.MAX_POLL_INTERVAL_SECONDS, first * 10))
    interval = first
    while True:
        yield interval
        interval = min(interval * 2, cap)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class ExportRecord:
    """What is known about one submitted export; stored in dlt state and the exports table."""

    export_id: str
    window_start: str
    window_end: str
    format: str
    status: str = "processing"
    submitted_at: str | None = None
    completed_at: str | None = None
    loaded_at: str | None = None
    error: str | None = None
    attribute_files: int | None = None
    event_files: int | None = None
    rows_expected: int | None = None
    rows_loaded: int | None = None
    note: str | None = None
    api: str = "v2"  # "v1": no export id nor status; export_id is our ref, sent in the hook URL
    delivered_at: str | None = None  # when the webhook inbox received the result
    # the columns the request asked for (expect.py); kept in state, not in the exports table
    expect: dict[str, Any] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def window(self) -> Window:
        return Window(parse_utc(self.window_start), parse_utc(self.window_end))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportRecord:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Recorder(Protocol):
    def submitted(self, record: ExportRecord) -> None: ...


class ExportLifecycle:
    def __init__(
        self,
        client: InsiderClient,
        recorder: Recorder,
        *,
        progress: Progress | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        delivered: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> None:
        self.client = client
        # a v2 result manifest the webhook inbox holds for an export id (no poll needed then)
        self.delivered = delivered
        self.recorder = recorder
        self.progress = progress or Progress(enabled=False)
        self.clock = clock
        self.sleep = sleep

    def submit(self, body: dict[str, Any], window: Window, fmt: str) -> ExportRecord:
        """Submit one export and make its id durable before returning."""
        export_id = self.client.submit(body)
        record = ExportRecord(
            export_id=export_id,
            window_start=window.start.isoformat(),
            window_end=window.end.isoformat(),
            format=fmt,
            submitted_at=self.clock().isoformat(),
            expect=expectation(body),
        )
        self.progress.say(f"submitted export {export_id} for window {window}")
        self.recorder.submitted(record)
        return record

    def submit_v1(self, body: dict[str, Any], window: Window, fmt: str, ref: str,
                  expect: dict[str, Any]) -> ExportRecord:
        """Submit one v1 export (it answers without an id: ``ref``, carried in the hook URL,
        names it) and make the record durable before returning."""
        self.client.submit_v1(body)
        record = ExportRecord(
            export_id=ref, window_start=window.start.isoformat(),
            window_end=window.end.isoformat(), format=fmt, status="submitted",
            submitted_at=self.clock().isoformat(), api="v1", expect=expect,
        )
        self.progress.say(f"submitted v1 export {ref} for window {window}; its file link "
                          "arrives at the webhook inbox")
        self.recorder.submitted(record)
        return record

    def wait(
        self, record: ExportRecord, poll_interval: float, max_wait: float
    ) -> TExportStatusBody:
        """Poll until the export completes; return the completed status body (the manifest).
        A manifest delivered to the webhook inbox answers without polling."""
        started = time.monotonic()
        intervals = poll_intervals(poll_interval)
        while True:
            interval = next(intervals)
            body = self._delivered(record)
            if body is None:
                body = self.client.status(record.export_id)
            status = body["status"]
            waited = time.monotonic() - started
            if status == "completed":
                record.status = "completed"
                record.completed_at = self.clock().isoformat()
                self.progress.say(f"export {record.export_id} completed after {waited:.0f}s "
                                  f"of waiting: {_describe(body)}")
                return body
            if status in ("failed", "rejected"):
                record.status = status
                record.error = str(body.get("error") or "")[:500] or None
                raise ExportOutcomeError(record.export_id, status, record.error)
            if waited + interval > max_wait:
                raise StillProcessing(record.export_id, waited)
            self.progress.say(f"export {record.export_id}: {status}, waited {waited:.0f}s, "
                              f"next check in {interval:.0f}s")
            checkpoint("while_polling")
            self.sleep(interval)

    def _delivered(self, record: ExportRecord) -> TExportStatusBody | None:
        if self.delivered is None:
            return None
        body = self.delivered(record.export_id)
        if body is None:
            return None
        manifest = validate_status(body, record.export_id)
        if manifest["status"] == "processing":
            return None
        self.progress.say(f"export {record.export_id}: {manifest['status']} (delivered to the "
                          "webhook inbox)")
        return manifest

    def download(
        self, record: ExportRecord, manifest: TExportStatusBody, dest_dir: Path
    ) -> list[SourceFile]:
        """Download every file of a completed export into ``dest_dir``; return them in order."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        files = manifest["files"]
        entries = [("attributes", f) for f in files.get("attributes", [])] + [
            ("events", f) for f in files.get("events", [])
        ]
        suffix = "." + manifest.get("format", record.format)
        out: list[SourceFile] = []
        total_bytes = 0
        for i, (kind, entry) in enumerate(entries, start=1):
            name = entry["name"]
            local = name if name.endswith(suffix) else name + suffix
            dest = dest_dir / f"{kind}--{local}"
            if not dest.exists():
                total_bytes += self._download_one(record, kind, entry, dest, i, len(entries))
            out.append(SourceFile(kind, name, dest, entry["rows"]))
        self.progress.say(f"downloaded {len(entries)} files ({human_bytes(total_bytes)} this run)")
        return out

    def _download_one(
        self, record: ExportRecord, kind: str, entry: Any, dest: Path, index: int, total: int
    ) -> int:
        done = 0

        def on_bytes(n: int) -> None:
            nonlocal done
            done += n
            if done > 0 and index == total:
                checkpoint("mid_download")
            self.progress.bytes(entry["name"], done, total, index)

        url = entry["url"]
        try:
            size = self.client.download(url, dest, on_bytes)
        except DownloadUrlExpired:
            # Signed URLs live ~24 h; a fresh status answer carries fresh ones.
            self.progress.say(f"{redact_url(url)} was refused; fetching fresh download URLs")
            fresh = self.client.status(record.export_id)
            match = [f for f in fresh.get("files", {}).get(kind, []) if f["name"] == entry["name"]]
            if not match:
                raise
            size = self.client.download(match[0]["url"], dest, on_bytes)
        self.progress.bytes(entry["name"], size, total, index, force=True)
        return size


def _describe(body: TExportStatusBody) -> str:
    files = body.get("files", {})
    n_attr, n_ev = len(files.get("attributes", [])), len(files.get("events", []))
    rows = sum(f["rows"] for k in ("attributes", "events") for f in files.get(k, []))
    return f"{n_attr} attribute files, {n_ev} event files, {rows} rows"
