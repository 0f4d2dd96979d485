"""A local HTTP simulator of Insider One's Raw Export v2 and v1 APIs (and signed file storage).

Endpoints (all on ``127.0.0.1``):

- ``POST /api/raw/v2/export``: validate, apply the daily quota, accept → ``{"export_id"}``.
- ``GET /api/raw/v2/export/{export_id}``: ``processing`` for the first ``processing_polls`` polls,
  then ``completed`` (manifest with signed URLs), ``failed`` or ``rejected``.
- ``POST /api/raw/v1/export``: validate (``v1.py``), apply v1's own daily quota (one request
  per partner per UTC day; 400s do not count), accept → ``{"message": "export request
  accepted"}`` (no id). One file ``<partner>-<YYYYMMDD>-<n>.<csv|parquet|json>`` is written in
  the background; ``hook_delay_seconds`` later its signed URL is POSTed to the request's
  ``hook`` as ``{"url": ...}`` (``faults.v1_deliveries`` copies; Insider never retries).
- ``GET /storage/{id}/{file}?X-Amz-Date&X-Amz-Expires&X-Amz-Signature``: the signed,
  expiring, ``Range``-capable download of one file of a v2 export or a v1 request (no API
  headers needed).
- ``POST /hook``: accepts webhook deliveries pointed at the simulator (and ignores them).

Webhooks are only sent to loopback hosts (``127.0.0.1``, ``localhost``, ``::1``), exactly to the
URL given (query string kept), as JSON with a short timeout; every attempt, sent or not, is
recorded in ``Simulator.deliveries``. v2 exports POST their final status body (the one the
status endpoint answers) to their hook only with ``deliver_v2_hooks=True``; polling works either
way. ``faults.hook_failures`` drops the next deliveries (v1 or v2) without sending them.

Files are generated on a background thread from submission; the status endpoint never reports
``completed`` before they are written. Nothing secret is logged.

Inspection: ``submissions``, ``ground_truth(export_id)``, ``manifest``, ``file_bytes`` (v2);
``v1_requests``, ``v1_ground_truth(id)``, ``v1_file_bytes(id)`` (v1); ``deliveries`` and
``wait_for_deliveries(n)`` (webhooks); ``request_log`` (every HTTP request served).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qs, quote, unquote, urlsplit
from urllib.request import ProxyHandler, Request, build_opener

import pyarrow as pa

from insider_source.simulator.data import World
from insider_source.simulator.output import (
    TIMESTAMP_FORMATS,
    Cancelled,
    ExportJob,
    FileEntry,
    ground_truth,
    write_export,
)
from insider_source.simulator.v1 import (
    V1Request,
    parse_v1_request,
    v1_file_name,
    v1_ground_truth,
    write_v1_file,
)
from insider_source.simulator.validation import BadRequest, parse_request

log = logging.getLogger(__name__)

EXPORT_PATH = "/api/raw/v2/export"
V1_EXPORT_PATH = "/api/raw/v1/export"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
HOOK_TIMEOUT_SECONDS = 2.0
STORAGE_PREFIX = "/storage/"
READY_WAIT_SECONDS = 20.0
STREAM_CHUNK_BYTES = 256 * 1024
_FAULT_LOCK = threading.RLock()
_STATUS_RE = re.compile(r"^/api/raw/v2/export/([^/]+)$")
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
FAIL_REASONS = {
    "failed": "query timeout: the export could not finish",
    "rejected": "estimated volume exceeds processing limits",
}


@dataclass
class Faults:
    """Failure switches; tests may change them at any time. Counters decrement as they fire."""

    outcome: str = "completed"  # "completed" | "failed" | "rejected"
    status_errors: int = 0  # next N status GETs → 503
    status_429: int = 0  # next N status GETs → 429 with Retry-After: 1
    submit_errors: int = 0  # next N POSTs → 500 (no quota used)
    download_errors: int = 0  # next N storage GETs → 500
    download_drop_after_bytes: int | None = None  # with download_drops: cut the body here
    download_drops: int = 0  # next N storage GETs close the connection early
    download_delay_seconds: float = 0.0  # sleep before each storage response
    expire_urls: bool = False  # storage answers 403 AccessDenied "Request has expired"
    truncate_file: str | None = None  # serve this file cut in half (matching Content-Length)
    # serve damage[name](original bytes) instead of the file (corrupt footers, wrong columns)
    damage: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)
    no_ranges: bool = False  # storage ignores Range and does not advertise Accept-Ranges
    reject_over_days: int | None = None  # exports of windows longer than this end "rejected"
    forget_exports: bool = False  # the status endpoint answers 404 for every export ("gone")
    forget: set[str] = field(default_factory=set)  # ... or for these export ids
    failures: int = 0  # the next N exports to finish end "failed"
    status_drops: int = 0  # next N status GETs: the connection closes without an answer
    delayed_downloads: int | None = None  # with download_delay_seconds: only the next N (None: all)
    expired_downloads: int = 0  # next N storage GETs answer 403 "Request has expired"
    status_raw: bytes | None = None  # serve this 200 body for every status GET while set
    # copies of each v1 webhook delivery: 0 = lost, 2 = duplicated (the second with a freshly
    # signed URL for the same file)
    v1_deliveries: int = 1
    hook_failures: int = 0  # next N webhook deliveries (v1 or v2) are dropped, never sent

    def take(self, name: str) -> bool:
        """Consume one firing of counter ``name``; False when it is at zero."""
        with _FAULT_LOCK:
            n = getattr(self, name)
            if n > 0:
                setattr(self, name, n - 1)
                return True
            return False

    def take_drop(self) -> int | None:
        """The byte count to cut the next download at, consuming one drop; None for no drop."""
        with _FAULT_LOCK:
            if self.download_drop_after_bytes is None or self.download_drops <= 0:
                return None
            self.download_drops -= 1
            return self.download_drop_after_bytes

    def reset(self) -> None:
        """Back to no faults."""
        with _FAULT_LOCK:
            for f in fields(self):
                setattr(self, f.name, f.default_factory() if callable(f.default_factory)
                        else f.default)


@dataclass
class _Export:
    job: ExportJob
    directory: Path
    polls: int = 0
    outcome: str | None = None  # decided at the first poll past processing
    quota_key: tuple[str, dt.date] | None = None
    files: list[FileEntry] = field(default_factory=list)
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _V1Export:
    export_id: str
    job: ExportJob
    spec: V1Request
    directory: Path
    name: str
    quota_key: tuple[str, dt.date]
    file: FileEntry | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Simulator:
    """Insider Raw Export v2 and v1 over real HTTP on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        partner_name: str = "demo",
        request_token: str = "s3cr3t-token",
        seed: int = 7,
        users: int = 500,
        events_per_user_day: float = 0.6,
        attribute_chunk_rows: int = 200,
        event_chunk_days: int = 2,
        timestamp_format: str = "iso",
        processing_polls: int = 2,
        url_ttl_seconds: int = 86400,
        now: Callable[[], dt.datetime] | None = None,
        failed_exports_use_quota: bool = False,
        hook_delay_seconds: float = 0.2,
        deliver_v2_hooks: bool = False,
    ) -> None:
        if timestamp_format not in TIMESTAMP_FORMATS:
            raise ValueError(f"timestamp_format must be one of {TIMESTAMP_FORMATS}")
        if seed < 0 or users < 0:
            raise ValueError("seed and users must be >= 0")
        self.partner_name = partner_name
        self.request_token = request_token
        self.seed = seed
        self.users = users
        self.events_per_user_day = events_per_user_day
        self.attribute_chunk_rows = attribute_chunk_rows
        self.event_chunk_days = event_chunk_days
        self.timestamp_format = timestamp_format
        self.processing_polls = processing_polls
        self.url_ttl_seconds = url_ttl_seconds
        self.faults = Faults()
        # Accepted exports that end failed/rejected give the day's quota back (as Insider's
        # "non-success requests do not count"); True makes them use it up.
        self.failed_exports_use_quota = failed_exports_use_quota
        self.hook_delay_seconds = hook_delay_seconds  # file written → webhook POST
        self.deliver_v2_hooks = deliver_v2_hooks
        self.submissions: list[dict[str, Any]] = []
        self.request_log: list[dict[str, Any]] = []
        self.v1_requests: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.base_url: str | None = None
        self._clock = now
        self._fixed_now: dt.datetime | None = None
        self._late: dict[dt.date, tuple[int, ...]] = {}
        self._lock = threading.RLock()
        self._exports: dict[str, _Export] = {}
        self._quota: set[tuple[str, dt.date]] = set()
        self._counter = 0
        self._v1: dict[str, _V1Export] = {}
        self._v1_quota: set[tuple[str, dt.date]] = set()
        self._v1_counter = 0
        self._workers: list[threading.Thread] = []
        self._delivered = threading.Condition(self._lock)
        self._secret = secrets.token_bytes(32)
        self._cancel = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._dir: Path | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1 (``port`` 0 = a free one); return the base URL."""
        if self._server is not None:
            assert self.base_url is not None
            return self.base_url
        self._cancel.clear()
        self._dir = Path(tempfile.mkdtemp(prefix="insider-sim-"))
        handler = type("Handler", (_Handler,), {"sim": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="insider-simulator", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and delete every generated file."""
        self._cancel.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            pending = [e for e in self._exports.values() if not e.done.is_set()]
            workers, self._workers = list(self._workers), []
        for e in pending:
            e.done.wait(timeout=10)
        for t in workers:
            t.join(timeout=10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._server = None
        self._thread = None
        self._dir = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clock and data -----------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The simulator clock (aware UTC)."""
        if self._fixed_now is not None:
            return self._fixed_now
        if self._clock is not None:
            return self._clock().astimezone(dt.UTC)
        return dt.datetime.now(dt.UTC)

    def set_now(self, when: dt.datetime) -> None:
        """Freeze the simulator clock at ``when`` (aware); moves the quota day and URL expiry."""
        if when.tzinfo is None:
            raise ValueError("set_now needs an aware datetime")
        self._fixed_now = when.astimezone(dt.UTC)

    def add_late_events(self, day: dt.date, n: int) -> None:
        """Make ``n`` more events exist for UTC ``day``; exports submitted later include them."""
        with self._lock:
            self._late[day] = (*self._late.get(day, ()), int(n))

    # -- inspection ---------------------------------------------------------------------------

    def _export(self, export_id: str) -> _Export:
        with self._lock:
            if export_id not in self._exports:
                raise KeyError(f"unknown export {export_id}")
            return self._exports[export_id]

    def ground_truth(self, export_id: str) -> dict[str, pa.Table]:
        """Exactly the rows served for an export, typed, with public column names."""
        exp = self._export(export_id)
        truth = ground_truth(exp.job)
        if exp.outcome in ("failed", "rejected"):
            return {k: t.slice(0, 0) for k, t in truth.items()}
        return truth

    def manifest(self, export_id: str) -> dict[str, Any]:
        """The body the status endpoint gives once the export is done (not counted as a poll)."""
        exp = self._export(export_id)
        exp.done.wait(timeout=600)
        with self._lock:
            if exp.outcome is None:
                exp.outcome = self._decide(exp)
        return self._body(exp)

    def _v1_export(self, v1_id: str) -> _V1Export:
        with self._lock:
            if v1_id not in self._v1:
                raise KeyError(f"unknown v1 request {v1_id}")
            return self._v1[v1_id]

    def v1_ground_truth(self, v1_id: str) -> dict[str, pa.Table]:
        """The rows of a v1 request's file in v2 shape: ``{"attributes", "events"}``.

        ``events``: the rows with an event (``insider_id``, ``event_name``, ``timestamp``,
        ``source``, the requested parameters; public names, typed; a base column the event did
        not ask for is NULL, as in the file). ``attributes``: one row per iid of the file.
        """
        exp = self._v1_export(v1_id)
        return v1_ground_truth(exp.job, exp.spec)

    def v1_file_bytes(self, v1_id: str) -> bytes:
        """The bytes of a v1 request's file, as served (waits until it is written)."""
        exp = self._v1_export(v1_id)
        exp.done.wait(timeout=600)
        if exp.file is None:
            raise KeyError(f"v1 request {v1_id} has no file: {exp.error}")
        return exp.file.path.read_bytes()

    def wait_for_deliveries(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``deliveries`` has at least ``count`` entries; return a copy of it."""
        deadline = time.monotonic() + timeout
        with self._delivered:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.deliveries)} of {count} deliveries")
                self._delivered.wait(left)
            return list(self.deliveries)

    # -- internals ----------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], arg: Any, name: str) -> None:
        t = threading.Thread(target=target, args=(arg,), name=name, daemon=True)
        with self._lock:
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(t)
        t.start()

    def _deliver(self, kind: str, hook: str, body: dict[str, Any]) -> None:
        """POST ``body`` to ``hook`` (loopback only) and record the attempt."""
        rec: dict[str, Any] = {"kind": kind, "hook": hook, "body": body, "status": None,
                               "error": None}
        try:
            host = urlsplit(hook).hostname
        except ValueError:
            host = None
        if self.faults.take("hook_failures"):
            rec["error"] = "dropped"
        elif host not in LOOPBACK_HOSTS:
            rec["error"] = "not delivered: the hook host is not loopback"
        else:
            req = Request(hook, data=json.dumps(body).encode(), method="POST",
                          headers={"Content-Type": "application/json"})
            try:
                with build_opener(ProxyHandler({})).open(
                        req, timeout=HOOK_TIMEOUT_SECONDS) as resp:
                    rec["status"] = resp.status
            except HTTPError as e:
                rec["status"], rec["error"] = e.code, f"HTTP {e.code}"
            except (URLError, OSError, ValueError) as e:
                reason = e.reason if isinstance(e, URLError) else e
                rec["error"] = f"{type(e).__name__}: {reason}"
        with self._delivered:
            self.deliveries.append(rec)
            self._delivered.notify_all()

    def _decide(self, exp: _Export) -> str:
        outcome = self._outcome(exp)
        if outcome != "completed" and not self.failed_exports_use_quota and exp.quota_key:
            self._quota.discard(exp.quota_key)
        return outcome

    def _outcome(self, exp: _Export) -> str:
        if exp.error is not None or self.faults.take("failures"):
            return "failed"
        limit = self.faults.reject_over_days
        req = exp.job.request
        if limit is not None and req.start_date is not None and req.end_date is not None \
                and (req.end_date - req.start_date) > limit * 86400:
            return "rejected"
        outcome = self.faults.outcome
        return outcome if outcome in ("failed", "rejected") else "completed"

    def file_bytes(self, export_id: str, name: str) -> bytes:
        """The bytes of one served file, as generated (before any ``faults.damage``)."""
        exp = self._export(export_id)
        exp.done.wait(timeout=600)
        for f in exp.files:
            if f.name == name:
                return f.path.read_bytes()
        raise KeyError(f"export {export_id} has no file {name}")

    def _body(self, exp: _Export) -> dict[str, Any]:
        eid = exp.job.export_id
        if exp.outcome != "completed":
            reason = exp.error or FAIL_REASONS.get(str(exp.outcome), "failed")
            return {"export_id": eid, "status": exp.outcome, "error": reason}
        files: dict[str, list[dict[str, Any]]] = {"attributes": [], "events": []}
        for f in exp.files:
            files[f.kind].append({"name": f.name, "url": self._sign(eid, f.name), "rows": f.rows})
        n_attr, n_ev = len(files["attributes"]), len(files["events"])
        return {
            "export_id": eid, "status": "completed", "format": exp.job.request.format,
            "files": files,
            "totals": {"attribute_files": n_attr, "event_files": n_ev,
                       "total_files": n_attr + n_ev},
        }

    def _signature(self, path: str, date: str, expires: str) -> str:
        msg = f"{path}\n{date}\n{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def _sign(self, export_id: str, name: str) -> str:
        path = f"{STORAGE_PREFIX}{export_id}/{quote(name)}"
        date = str(int(self.now().timestamp()))
        expires = str(int(self.url_ttl_seconds))
        sig = self._signature(path, date, expires)
        return (f"{self.base_url}{path}?X-Amz-Date={date}&X-Amz-Expires={expires}"
                f"&X-Amz-Signature={sig}")

    def _submit(self, body: bytes) -> tuple[int, dict[str, Any]]:
        if self.faults.take("submit_errors"):
            return 500, {"error": "internal server error"}
        try:
            request = parse_request(body)
        except BadRequest as e:
            return 400, {"error": e.message}
        now = self.now()
        with self._lock:
            key = (self.partner_name, now.date())
            if key in self._quota:
                return 429, {"error": "rejected: too many requests"}
            self._quota.add(key)
            self._counter += 1
            export_id = hashlib.sha256(
                f"{self.seed}:{self.partner_name}:{self._counter}".encode()).hexdigest()[:16]
            assert self._dir is not None
            job = ExportJob(
                export_id=export_id, request=request,
                world=World(self.seed, self.users, self.events_per_user_day, dict(self._late)),
                timestamp_format=self.timestamp_format,
                attribute_chunk_rows=self.attribute_chunk_rows,
                event_chunk_days=self.event_chunk_days,
            )
            exp = _Export(job, self._dir / export_id, quota_key=key)
            self._exports[export_id] = exp
            self.submissions.append({"export_id": export_id, "body": json.loads(body),
                                     "at": now})
        self._spawn(self._generate, exp, f"export-{export_id}")
        return 200, {"export_id": export_id}

    def _submit_v1(self, body: bytes) -> tuple[int, dict[str, Any]]:
        if self.faults.take("submit_errors"):
            return 500, {"error": "internal server error"}
        try:
            spec = parse_v1_request(body)
        except BadRequest as e:
            return 400, {"error": e.message}
        now = self.now()
        with self._lock:
            key = (self.partner_name, now.date())
            if key in self._v1_quota:
                return 429, {"error": "rejected: too many requests"}
            self._v1_quota.add(key)
            self._v1_counter += 1
            v1_id = hashlib.sha256(
                f"{self.seed}:{self.partner_name}:v1:{self._v1_counter}".encode()
            ).hexdigest()[:16]
            assert self._dir is not None
            job = ExportJob(
                export_id=v1_id, request=spec.request,
                world=World(self.seed, self.users, self.events_per_user_day, dict(self._late)),
                timestamp_format=self.timestamp_format,
                attribute_chunk_rows=self.attribute_chunk_rows,
                event_chunk_days=self.event_chunk_days,
            )
            name = v1_file_name(self.partner_name, now.date(), self._v1_counter, spec.format)
            exp = _V1Export(v1_id, job, spec, self._dir / v1_id, name, key)
            self._v1[v1_id] = exp
            self.v1_requests.append({"id": v1_id, "body": json.loads(body),
                                     "hook": spec.request.hook, "at": now, "file": name})
        self._spawn(self._generate_v1, exp, f"v1-export-{v1_id}")
        return 200, {"message": "export request accepted"}

    def _generate_v1(self, exp: _V1Export) -> None:
        try:
            exp.file = write_v1_file(exp.job, exp.spec, exp.directory / exp.name, self._cancel)
        except Cancelled:
            exp.error = "cancelled: the simulator stopped"
        except Exception as e:  # noqa: BLE001 - no file, no delivery (as a lost export)
            log.exception("v1 export %s could not be generated", exp.export_id)
            exp.error = f"internal error: {type(e).__name__}"
        finally:
            exp.done.set()
        if exp.file is None:
            with self._lock:
                self._v1_quota.discard(exp.quota_key)  # failed requests don't count
            return
        if self._cancel.wait(max(0.0, self.hook_delay_seconds)):
            return
        for _ in range(max(0, self.faults.v1_deliveries)):
            if self._cancel.is_set():
                return
            self._deliver("v1", exp.job.request.hook,
                          {"url": self._sign(exp.export_id, exp.name)})

    def _generate(self, exp: _Export) -> None:
        try:
            exp.files = write_export(exp.job, exp.directory, self._cancel)
        except Cancelled:
            exp.error = "cancelled: the simulator stopped"
        except Exception as e:  # noqa: BLE001 - surfaced as a failed export
            log.exception("export %s could not be generated", exp.job.export_id)
            exp.error = f"internal error: {type(e).__name__}"
        finally:
            exp.done.set()
        if not self.deliver_v2_hooks or self._cancel.wait(max(0.0, self.hook_delay_seconds)):
            return
        with self._lock:
            if exp.outcome is None:
                exp.outcome = self._decide(exp)
            body = self._body(exp)
        self._deliver("v2", exp.job.request.hook, body)

    def _status(self, export_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.faults.take("status_429"):
            return 429, {"error": "rejected: too many requests"}, {"Retry-After": "1"}
        if self.faults.take("status_errors"):
            return 503, {"error": "service unavailable"}, {}
        if self.faults.status_raw is not None:
            return 200, {"_raw": self.faults.status_raw}, {}
        with self._lock:
            exp = self._exports.get(export_id)
            if exp is None or self.faults.forget_exports or export_id in self.faults.forget:
                return 404, {"error": "export not found"}, {}
            exp.polls += 1
            if exp.outcome is None and exp.polls <= self.processing_polls:
                return 200, {"export_id": export_id, "status": "processing"}, {}
        if exp.outcome is None and not exp.done.wait(timeout=READY_WAIT_SECONDS):
            return 200, {"export_id": export_id, "status": "processing"}, {}
        with self._lock:
            if exp.outcome is None:
                exp.outcome = self._decide(exp)
            return 200, self._body(exp), {}

    def _storage_file(self, export_id: str, name: str) -> Path | None:
        with self._lock:
            exp = self._exports.get(export_id)
            v1 = self._v1.get(export_id)
        if v1 is not None:
            f = v1.file
            return f.path if f is not None and f.name == name else None
        if exp is None or exp.outcome != "completed":
            return None
        for f in exp.files:
            if f.name == name:
                return f.path
        return None


def _xml_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()


class _Handler(BaseHTTPRequestHandler):
    """Request handler; ``sim`` is bound per server."""

    sim: Simulator
    protocol_version = "HTTP/1.1"
    server_version = "InsiderSimulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Route the access log to DEBUG (never headers; never the query string)."""
        log.debug("%s %s", self.command, urlsplit(self.path).path)

    # -- plumbing -----------------------------------------------------------------------------

    def _record(self, status: int) -> None:
        with self.sim._lock:
            self.sim.request_log.append({
                "method": self.command, "path": urlsplit(self.path).path,
                "headers": dict(self.headers.items()), "status": status,
            })

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        raw = obj.get("_raw") if len(obj) == 1 else None  # a scripted, possibly broken body
        body = raw if isinstance(raw, bytes) else json.dumps(obj).encode()
        self._send(status, body, "application/json", headers)

    def _xml(self, status: int, code: str, message: str) -> None:
        self._send(status, _xml_error(code, message), "application/xml")

    def _drop_connection(self) -> None:
        """Close the socket mid-exchange, as a failing network or proxy would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _auth_error(self) -> tuple[int, str] | None:
        partner = self.headers.get("X-PARTNER-NAME", "")
        token = self.headers.get("X-REQUEST-TOKEN", "")
        if not partner.strip():
            return 400, "partner name is required"
        if partner != partner.lower():
            return 400, "partner name should be lowercase"
        if not token.strip():
            return 400, "request token is required"
        same_partner = hmac.compare_digest(partner.encode(), self.sim.partner_name.encode())
        same_token = hmac.compare_digest(token.encode(), self.sim.request_token.encode())
        if not (same_partner and same_token):
            return 403, "authentication failed"
        return None

    # -- routing ------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        """Submit a v2 or v1 export (or accept a webhook delivery)."""
        path = urlsplit(self.path).path
        body = self._read_body()
        if path == "/hook":
            self._json(200, {"ok": True})
            return
        route = path.rstrip("/")
        if route not in (EXPORT_PATH, V1_EXPORT_PATH):
            self._json(404, {"error": "not found"})
            return
        err = self._auth_error()
        if err is not None:
            self._json(err[0], {"error": err[1]})
            return
        submit = self.sim._submit if route == EXPORT_PATH else self.sim._submit_v1
        status, obj = submit(body)
        self._json(status, obj)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        """Export status or a storage download."""
        path = urlsplit(self.path).path
        if path.startswith(STORAGE_PREFIX):
            self._storage(path)
            return
        m = _STATUS_RE.match(path)
        if m is None:
            self._json(404, {"error": "not found"})
            return
        err = self._auth_error()
        if err is not None:
            self._json(err[0], {"error": err[1]})
            return
        if self.sim.faults.take("status_drops"):
            self._record(0)
            self._drop_connection()
            return
        status, obj, headers = self.sim._status(unquote(m.group(1)))
        self._json(status, obj, headers)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        """Storage metadata (same checks as GET, no body)."""
        path = urlsplit(self.path).path
        if path.startswith(STORAGE_PREFIX):
            self._storage(path)
        else:
            self._json(404, {"error": "not found"})

    # -- storage ------------------------------------------------------------------------------

    def _storage(self, path: str) -> None:
        sim, faults = self.sim, self.sim.faults
        if faults.download_delay_seconds > 0 and (
                faults.delayed_downloads is None or faults.take("delayed_downloads")):
            time.sleep(faults.download_delay_seconds)
        if faults.take("download_errors"):
            self._xml(500, "InternalError", "We encountered an internal error. Please try again.")
            return
        if faults.expire_urls or faults.take("expired_downloads"):
            self._xml(403, "AccessDenied", "Request has expired")
            return
        query = parse_qs(urlsplit(self.path).query)
        date = (query.get("X-Amz-Date") or [""])[0]
        expires = (query.get("X-Amz-Expires") or [""])[0]
        sig = (query.get("X-Amz-Signature") or [""])[0]
        good = sim._signature(path, date, expires)
        if not (date.isdigit() and expires.isdigit() and hmac.compare_digest(sig, good)):
            self._xml(403, "SignatureDoesNotMatch", "The request signature we calculated does "
                      "not match the signature you provided.")
            return
        if sim.now().timestamp() > int(date) + int(expires):
            self._xml(403, "AccessDenied", "Request has expired")
            return
        parts = path[len(STORAGE_PREFIX):].split("/", 1)
        file = sim._storage_file(*parts) if len(parts) == 2 else None
        if file is None or not file.exists():
            self._xml(404, "NoSuchKey", "The specified key does not exist.")
            return
        damage = faults.damage.get(file.name)
        replacement = damage(file.read_bytes()) if damage is not None else None
        self._stream(file, truncate=faults.truncate_file == file.name, data=replacement,
                     ranges=not faults.no_ranges)

    def _stream(self, file: Path, truncate: bool, data: bytes | None = None,
                ranges: bool = True) -> None:
        size = len(data) if data is not None else file.stat().st_size
        if truncate:
            size //= 2
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range") if ranges else None
        if rng:
            m = _RANGE_RE.match(rng.strip())
            if m is None or int(m.group(1)) >= size:
                self._record(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(m.group(1))
            if m.group(2):
                end = min(end, int(m.group(2)))
            status = 206
        length = max(0, end - start + 1)
        drop = None if self.command == "HEAD" else self.sim.faults.take_drop()
        self._record(status)
        self.send_response(status)
        ctype = {".csv": "text/csv; charset=utf-8", ".json": "application/x-ndjson"}.get(
            file.suffix, "application/octet-stream")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        budget = length if drop is None else min(length, drop)
        with (io.BytesIO(data) if data is not None else open(file, "rb")) as f:
            f.seek(start)
            while budget > 0:
                chunk = f.read(min(STREAM_CHUNK_BYTES, budget))
                if not chunk:
                    break
                self.wfile.write(chunk)
                budget -= len(chunk)
        if drop is not None and drop < length:
            self.wfile.flush()
            self._drop_connection()
