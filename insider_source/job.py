"""One daily run: plan the window, resume or submit the export, wait, download, convert, load.

``run_export`` is what ``pipelines/daily.py`` calls. Durability, step by step (see lifecycle.py):

- Before anything, packages a killed run left extracted but not loaded are loaded, and on a new
  machine (no local state) the state is restored from the destination.
- A submitted export id is recorded at once by a small run of its own (state ``inflight`` + an
  ``exports`` row), so a kill after submission resumes it and never submits again.
- Downloads and converted files live under the pipeline's working dir, per export id; a re-run
  keeps complete downloads. They are deleted once the export is loaded.
- The data run commits ``last_window_end`` and clears ``inflight`` in the same load package as the
  rows, so the window advances only if the rows are in. Extract, normalize and load run as
  separate steps; a package left by a kill between them is loaded first by the next run.

Planning. State (``sources.insider``) holds ``last_window_end``, ``inflight``, and a ``queue`` of
planned windows that go before the daily window, one export per UTC day: the halves of a rejected
export, and the pieces of a ``--backfill``. Each planned window is also an ``exports`` row
(``planned-YYYYMMDD-YYYYMMDD``, status ``planned`` then ``submitted``), so the plan is visible in
the warehouse. A window leaves the queue in the load package that loads it.

Raw Export v1 (``api_version = "v1"``) has no export id and no status: the request is recorded
under a ref of ours (``v1-YYYYMMDD-<hex>``) that travels in the hook URL; the run waits for the
delivery carrying that ref in the webhook inbox (exit 75 while it has not come), downloads the
one file, splits it into v2-shaped files (v1files.py) and loads them like a v2 export. A link that
expired, or none within 48 hours, is recorded (``expired``/``undelivered``) and the window planned
again. v2 manifests delivered to the inbox answer without polling.

Terminal outcomes: ``failed`` is recorded and the window submitted again; ``rejected`` is split in
halves (down to one day); an export the server no longer knows (``gone``) is recorded and its
window planned again. Each is committed by a small load before anything else is submitted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import dlt
from dlt.common.pipeline import LoadInfo

from insider_source import settings as s
from insider_source.checkpoints import checkpoint
from insider_source.client import DownloadUrlExpired, ExportNotFound, InsiderClient, redact_url
from insider_source.config import InsiderSettings, build_request_body, build_v1_body
from insider_source.exceptions import (
    ApiError,
    ConfigError,
    ExportOutcomeError,
    IntegrityError,
    QuotaExceeded,
    StillWaitingForDelivery,
)
from insider_source.expect import check_columns, expectation
from insider_source.files import ConvertedFile, Converter, SourceFile
from insider_source.lifecycle import ExportLifecycle, ExportRecord, poll_intervals, utcnow
from insider_source.lock import run_lock
from insider_source.progress import Progress, human_bytes
from insider_source.runtime import use_system_allocator
from insider_source.source import insider_export
from insider_source.v1files import split_v1
from insider_source.window import (
    Window,
    latest_midnight,
    next_window,
    parse_utc,
    plan_windows,
    split_window,
)

if TYPE_CHECKING:
    from insider_source.inbox import Delivery, Inbox, UrlPolicy

log = logging.getLogger(__name__)

DATA_TABLES = ("events", "attributes", "attributes_history", "exports")


@dataclass
class RunResult:
    """What a run did, for the summary and the exit code."""

    status: str  # "loaded" | "up_to_date"
    window: Window | None = None
    export_id: str | None = None
    resumed: bool = False
    rows_loaded: dict[str, int] = field(default_factory=dict)
    table_counts: dict[str, int] = field(default_factory=dict)
    load_info: LoadInfo | None = None
    notes: list[str] = field(default_factory=list)


class V1Lost(Exception):
    """A v1 export that will not load: its link expired, or no link came."""

    def __init__(self, status: str, message: str, delivery: Delivery | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.delivery = delivery


def plan_id(window: Window) -> str:
    """The ``exports`` key of a planned window (a backfill piece or half of a rejected export)."""
    return f"planned-{window.start:%Y%m%d}-{window.end:%Y%m%d}"


def planned_row(window: Window, fmt: str, status: str, note: str) -> dict[str, Any]:
    return ExportRecord(export_id=plan_id(window), window_start=window.start.isoformat(),
                        window_end=window.end.isoformat(), format=fmt, status=status,
                        note=note).to_dict()


def queue_entry(window: Window, note: str) -> dict[str, str]:
    return {"start": window.start.isoformat(), "end": window.end.isoformat(), "note": note}


def queue_windows(state: dict[str, Any]) -> list[tuple[Window, str]]:
    return [(Window.from_iso(q["start"], q["end"]), q.get("note") or "")
            for q in state.get("queue") or []]


def without(queue: list[tuple[Window, str]], window: Window) -> list[dict[str, str]]:
    return [queue_entry(w, n) for w, n in queue if w != window]


class PipelineRecorder:
    """Makes lifecycle steps durable: a local journal file at once, then a small pipeline run
    (state ``inflight`` + an ``exports`` row) that survives a new machine."""

    def __init__(self, pipeline: dlt.Pipeline) -> None:
        self.pipeline = pipeline
        self.journal = Path(pipeline.working_dir) / "insider_inflight.json"

    def submitted(self, record: ExportRecord) -> None:
        # Milliseconds after the POST answered: the id survives kill -9 before the run below.
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.journal.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(record.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.journal)
        checkpoint("after_submit")
        rows = [record.to_dict()]
        for window, note in queue_windows(source_state(self.pipeline)):
            if window == record.window:  # a planned window is now under way
                rows.append(planned_row(window, record.format, "submitted",
                                        f"{note}; submitted as export {record.export_id}"))
        self.commit(rows, {"inflight": record.to_dict()})
        checkpoint("after_record")

    def commit(self, rows: list[dict[str, Any]], patch: dict[str, Any]) -> None:
        """Upsert ``exports`` rows and set source state keys, in one small load."""
        self.pipeline.run(insider_export(rows, state_patch=patch))

    def read_journal(self) -> dict[str, Any] | None:
        if not self.journal.exists():
            return None
        record: dict[str, Any] = json.loads(self.journal.read_text())
        return record

    def pending(
        self, state: dict[str, Any], journal: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The export in flight: from state, or from the journal of a run killed before it
        could record the export id in the destination."""
        if state.get("inflight"):
            return dict(state["inflight"])
        if journal is None:
            return None
        recorded = {e.get("export_id") for e in state.get("ended") or []}
        last_end = state.get("last_window_end")
        if journal["export_id"] in recorded or (
                last_end and parse_utc(last_end) >= parse_utc(journal["window_end"])):
            self.clear()  # that export was loaded (or ended) after all
            return None
        return journal

    def clear(self) -> None:
        self.journal.unlink(missing_ok=True)


def source_state(pipeline: dlt.Pipeline) -> dict[str, Any]:
    state: dict[str, Any] = pipeline.state.get("sources", {}).get(s.SOURCE_NAME, {})
    return state


def export_dir(pipeline: dlt.Pipeline, export_id: str) -> Path:
    return Path(pipeline.working_dir) / "insider_exports" / export_id


def snapshot_time(record: ExportRecord) -> dt.datetime:
    """When an export's attribute snapshot holds: attributes have no date window, they are the
    users' values when the export was requested."""
    return parse_utc(record.submitted_at) if record.submitted_at else record.window.end


def run_export(
    pipeline: dlt.Pipeline,
    cfg: InsiderSettings,
    *,
    client: InsiderClient | None = None,
    progress: Progress | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
    backfill: tuple[dt.date, dt.date] | None = None,
    inbox: Inbox | None = None,
    url_policy: UrlPolicy | None = None,
) -> RunResult:
    """Run the daily export once. Raises InsiderError subclasses (with exit codes) on failure.

    Args:
        backfill: ``(start, end)`` dates: plan ``[start, end)`` as windows of
            ``backfill_window_days`` (once; asking again for the same range is a no-op), then
            carry on like any run. Planned windows go before the daily window, one a day.
        inbox: the webhook inbox (required with ``api_version = "v1"``): v1 file links and v2
            manifests delivered there are used instead of polling.
        url_policy: how delivered download URLs are checked again before anything is fetched
            (the inbox service checked them on arrival).
    """
    if cfg.api_version == "v1" and inbox is None:
        raise ConfigError("insider_inbox.dir", None, "api_version \"v1\" delivers the export's "
                          "file link only by webhook: run the webhook inbox (python "
                          "pipelines/webhook.py) and give the job its directory, "
                          "[insider_inbox] dir = \"/var/lib/insider-inbox\".")
    use_system_allocator()  # flat memory: Arrow gives freed batches back (runtime.py)
    progress = progress or Progress()
    client = client or InsiderClient(cfg.base_url, cfg.partner_name, cfg.request_token)
    try:
        with run_lock(Path(pipeline.working_dir) / "insider_run.lock"):
            return _Run(pipeline, cfg, client, progress, clock, inbox, url_policy).run(backfill)
    finally:
        client.close()


class _Run:
    """One run: resume or plan+submit, wait, download, convert, load; handle terminal outcomes.

    A ``failed`` export is recorded and its window submitted again (at most
    ``MAX_FAILED_PER_RUN`` failures a run); a ``rejected`` one is split in halves that are queued
    (the first is submitted at once); one the server no longer knows (``gone``) is recorded and its
    window planned again. A 429 on such a resubmission ends the run with 75: the next run carries
    on from the plan, which lives in state.
    """

    def __init__(self, pipeline: dlt.Pipeline, cfg: InsiderSettings, client: InsiderClient,
                 progress: Progress, clock: Callable[[], dt.datetime],
                 inbox: Inbox | None = None, url_policy: UrlPolicy | None = None) -> None:
        self.pipeline = pipeline
        self.cfg = cfg
        self.progress = progress
        self.clock = clock
        self.client = client
        self.inbox = inbox
        self.url_policy = url_policy
        if url_policy is not None:  # delivered URLs: their redirects are checked as well
            client.url_check = url_policy.check
        self.recorder = PipelineRecorder(pipeline)
        self.lifecycle = ExportLifecycle(client, self.recorder, progress=progress, clock=clock,
                                         delivered=self.delivered_manifest if inbox else None)
        self.notes: list[str] = []
        self.failed = 0
        self.gone = 0

    @property
    def state(self) -> dict[str, Any]:
        return source_state(self.pipeline)

    def run(self, backfill: tuple[dt.date, dt.date] | None) -> RunResult:
        pipeline = self.pipeline
        if pipeline.has_pending_data:
            self.progress.say("loading what an interrupted run left behind")
            pipeline.normalize()
            pipeline.load()
        journal = self.recorder.read_journal()  # before a state restore may wipe the working dir
        if not self.state:
            pipeline.sync_destination()  # a new machine: state lives in the destination
        _remove_stale_dirs(pipeline, self.state)
        self.sweep_inbox()
        if backfill:
            self.plan_backfill(*backfill)
        for _ in range(s.MAX_SUBMISSIONS_PER_RUN):
            inflight = self.recorder.pending(self.state, journal)
            journal = None
            if inflight:
                record = ExportRecord.from_dict(inflight)
                resumed = True
                if not self.state.get("inflight"):  # known only from the local journal
                    self.recorder.submitted(record)
                self.progress.say(f"resuming export {record.export_id} for window "
                                  f"{record.window} (submitted {record.submitted_at}); nothing "
                                  "new is submitted")
            else:
                planned = self.next_window()
                if planned is None:
                    last = self.state.get("last_window_end")
                    self.progress.say(f"up to date: data is loaded through {last}; nothing "
                                      "submitted")
                    return RunResult("up_to_date", table_counts=table_counts(pipeline),
                                     notes=self.notes)
                record = self.submit(*planned)
                resumed = False
            try:
                return self.collect(record, resumed)
            except ExportOutcomeError as e:
                self.ended(record, e)
            except ExportNotFound as e:
                self.vanished(record, e)
            except V1Lost as e:
                self.lost(record, e)
        raise ExportOutcomeError("-", "failed", f"{s.MAX_SUBMISSIONS_PER_RUN} exports ended "
                                 "without data in one run; see the exports table")

    # -- planning --------------------------------------------------------------------------------

    def next_window(self) -> tuple[Window, str] | None:
        queue = queue_windows(self.state)
        if queue:
            return queue[0]
        last_end = self.state.get("last_window_end")
        window = next_window(parse_utc(last_end) if last_end else None,
                             self.cfg.initial_start_date, self.cfg.lookback_days, self.clock())
        return (window, "") if window else None

    def submit(self, window: Window, note: str) -> ExportRecord:
        body = build_request_body(self.cfg, window)
        v1 = self.cfg.api_version == "v1"
        self.progress.say(f"submitting {'v1 ' if v1 else ''}export for window {window} "
                          f"({self.cfg.format})" + (f": {note}" if note else ""))
        try:
            if v1:
                ref = f"v1-{window.start:%Y%m%d}-{secrets.token_hex(4)}"
                record = self.lifecycle.submit_v1(build_v1_body(self.cfg, window, ref), window,
                                                  self.cfg.format, ref, expectation(body))
            else:
                record = self.lifecycle.submit(body, window, self.cfg.format)
        except QuotaExceeded as e:
            if self.notes:  # an earlier export of this run ended; say so with the 429
                raise QuotaExceeded(" ".join(self.notes) + " " + str(e)) from None
            raise
        return record

    def plan_backfill(self, start: dt.date, end: dt.date) -> None:
        today = latest_midnight(self.clock()).date()
        if not start < end:
            raise ConfigError("--backfill", f"{start} {end}",
                              "END must be after START (END is exclusive), e.g. --backfill "
                              "2026-01-01 2026-02-01.")
        if end > today:
            raise ConfigError("--backfill", f"{start} {end}",
                              f"END must be at most {today} (the last complete UTC day ends "
                              "there); the daily run covers later days.")
        key = f"{start}..{end}"
        state = self.state
        queue = queue_windows(state)
        if key in (state.get("backfills") or []):
            left = [w for w, n in queue if n.startswith(f"backfill {key}")]
            self.progress.say(f"backfill {key} was planned before; {len(left)} windows of it "
                              "left")
            return
        pieces = plan_windows(start, end, self.cfg.backfill_window_days)
        queued = {w for w, _ in queue}
        new = [(w, f"backfill {key} {i}/{len(pieces)}") for i, w in enumerate(pieces, 1)
               if w not in queued]
        rows = [planned_row(w, self.cfg.format, "planned", n) for w, n in new]
        patch = {"queue": [queue_entry(w, n) for w, n in queue + new],
                 "backfills": [*(state.get("backfills") or []), key]}
        self.recorder.commit(rows, patch)
        self.progress.say(f"backfill {key}: planned {len(new)} windows of at most "
                          f"{self.cfg.backfill_window_days} days, one export per UTC day "
                          "(see the exports table, status 'planned')")

    # -- terminal outcomes ---------------------------------------------------------------------

    def ended(self, record: ExportRecord, error: ExportOutcomeError) -> None:
        """Record a failed or rejected export and plan what replaces it (or give up)."""
        queue = queue_windows(self.state)
        rows = [record.to_dict()]
        patch: dict[str, Any] = {"inflight": None, "ended": self.ended_ids(record)}
        shutil.rmtree(export_dir(self.pipeline, record.export_id), ignore_errors=True)
        if record.status == "failed":
            self.failed += 1
            record.note = "failed; the same window is submitted again"
            rows = [record.to_dict()]
            self.finish(rows, patch)
            self.tell(f"Export {record.export_id} for {record.window} ended failed"
                      f" ({record.error or 'no reason given'}); it is recorded in the exports "
                      "table and its window is submitted again.")
            if self.failed >= s.MAX_FAILED_PER_RUN:
                raise ExportOutcomeError(
                    record.export_id, "failed",
                    f"{record.error or 'no reason given'}; {self.failed} exports failed in this "
                    "run. The next run submits the window again") from None
            return
        pieces = split_window(record.window)
        if len(pieces) == 1:  # one day is as small as a window gets
            record.note = "rejected; a one-day window cannot be split further"
            self.finish([record.to_dict()], patch)
            raise error
        halves = " and ".join(str(p) for p in pieces)
        record.note = f"rejected; split into {halves}"
        note = f"half of rejected export {record.export_id} {record.window}"
        rows = [record.to_dict()] + [planned_row(p, record.format, "planned", note)
                                     for p in pieces]
        patch["queue"] = [queue_entry(p, note) for p in pieces] + without(queue, record.window)
        self.finish(rows, patch)
        self.tell(f"Export {record.export_id} for {record.window} was rejected (estimated volume "
                  f"over Insider's limits); the window is split into {halves}, exported one "
                  "after the other.")

    def vanished(self, record: ExportRecord, error: ExportNotFound) -> None:
        """The server no longer knows the export (ids and URLs expire): plan its window again."""
        self.gone += 1
        record.status = "gone"
        record.error = f"the export is no longer known to Insider ({error.server_message})"
        record.note = "gone before it was loaded; its window is planned again"
        shutil.rmtree(export_dir(self.pipeline, record.export_id), ignore_errors=True)
        self.finish([record.to_dict()], {"inflight": None, "ended": self.ended_ids(record)})
        self.tell(f"Export {record.export_id} for {record.window} is gone on Insider's side "
                  "before it was loaded; its window is submitted again.")
        if self.gone > 1:
            raise error

    def lost(self, record: ExportRecord, error: V1Lost) -> None:
        """A v1 link expired before it was loaded, or never came: plan its window again."""
        record.status = error.status
        record.error = str(error)
        record.note = "its window is planned again"
        shutil.rmtree(export_dir(self.pipeline, record.export_id), ignore_errors=True)
        self.finish([record.to_dict()], {"inflight": None, "ended": self.ended_ids(record)})
        if error.delivery is not None and self.inbox is not None:
            self.inbox.archive(error.delivery.key)
        self.tell(f"v1 export {record.export_id} for {record.window}: {error} It is recorded "
                  f"in the exports table (status '{error.status}') and its window is submitted "
                  "again.")

    # -- the webhook inbox -----------------------------------------------------------------------

    def delivered_manifest(self, export_id: str) -> dict[str, Any] | None:
        assert self.inbox is not None
        d = self.inbox.find_v2(export_id)
        if d is None or d.manifest is None:
            return None
        self.checked_urls(d, [f["url"] for k in ("attributes", "events")
                              for f in (d.manifest.get("files") or {}).get(k) or []])
        return dict(d.manifest)

    def checked_urls(self, delivery: Delivery, urls: list[str]) -> None:
        """Check a delivery's download URLs again before anything is fetched: the inbox
        directory may hold files the service did not write."""
        if self.url_policy is None:
            return
        for url in urls:
            reason = self.url_policy.check(url)
            if reason:
                raise IntegrityError(f"inbox delivery {delivery.key}",
                                     f"has a download URL that is refused ({reason}); remove "
                                     f"{delivery.path} if it is not Insider's")

    def sweep_inbox(self) -> None:
        """Archive deliveries of exports already loaded or ended (late or duplicate ones) and
        tell the user about deliveries no export of this pipeline is waiting for."""
        if self.inbox is None:
            return
        state = self.state
        done = {*(state.get("loaded") or []), *(state.get("ended") or [])}
        waiting = (state.get("inflight") or {}).get("export_id")
        for d in self.inbox.pending():
            ident = d.ref if d.kind == "v1" else d.export_id
            if ident in done:
                self.inbox.archive(d.key)
            elif ident != waiting:
                self.tell(f"the webhook inbox holds a {d.kind} delivery ({ident or 'no ref'}, "
                          f"received {d.received_at}) that no export of this pipeline is "
                          f"waiting for; it is left in {d.path}")

    def wait_delivery(self, record: ExportRecord) -> Delivery:
        """Wait for a v1 export's file link in the inbox, up to ``max_wait_seconds``."""
        if self.inbox is None:
            raise ConfigError("api_version", self.cfg.api_version,
                              f"v1 export {record.export_id} is in flight and its file link "
                              "arrives at the webhook inbox only: keep api_version = \"v1\" "
                              "and the [insider_inbox] dir until it is loaded.")
        cfg = self.cfg
        started = time.monotonic()
        intervals = poll_intervals(cfg.poll_interval_seconds)
        while True:
            interval = next(intervals)
            d = self.inbox.find_v1(record.export_id)
            if d is not None:
                return d
            age = (self.clock() - parse_utc(record.submitted_at or record.window_end))
            if age.total_seconds() > s.V1_DELIVERY_GIVE_UP_SECONDS:
                raise V1Lost("undelivered", f"no file link reached the webhook inbox in "
                             f"{age.total_seconds() / 3600:.0f} hours (submitted "
                             f"{record.submitted_at}).")
            waited = time.monotonic() - started
            if waited + interval > cfg.max_wait_seconds:
                raise StillWaitingForDelivery(
                    f"v1 export {record.export_id} for {record.window}, submitted "
                    f"{record.submitted_at} ({age.total_seconds() / 3600:.1f} h ago), is still "
                    f"waiting for its file link in the webhook inbox ({self.inbox.directory}). It "
                    "stays in flight: the next run looks again and submits nothing new. Insider "
                    "can take hours; if nothing comes, check that the inbox service "
                    "(python pipelines/webhook.py) is reachable at your hook URL. After "
                    f"{s.V1_DELIVERY_GIVE_UP_SECONDS // 3600} hours the window is submitted "
                    "again.")
            self.progress.say(f"v1 export {record.export_id}: no delivery yet, waited "
                              f"{waited:.0f}s, next look in {interval:.0f}s")
            checkpoint("while_polling")
            self.lifecycle.sleep(interval)

    def fetch_v1(self, record: ExportRecord, workdir: Path
                 ) -> tuple[list[SourceFile], dict[str, Any], str, Delivery]:
        """Wait for the v1 file link, download the file, split it into v2-shaped files."""
        delivery = self.wait_delivery(record)
        url = delivery.url or ""
        self.checked_urls(delivery, [url])
        record.delivered_at = delivery.received_at
        name = Path(urlsplit(url).path).name or "export"
        if Path(name).suffix.lstrip(".") != record.format:
            name = f"{name}.{record.format}"
        raw = workdir / "raw" / name
        raw.parent.mkdir(parents=True, exist_ok=True)
        if not raw.exists():
            self.progress.say(f"downloading the v1 file {redact_url(url)}")
            try:
                size = self.client.download(url, raw)
            except DownloadUrlExpired as e:
                # v1 links cannot be refreshed (there is no status endpoint): the window goes again
                raise V1Lost("expired", f"its file link, delivered {delivery.received_at}, was "
                             f"refused by the storage host ({e}); v1 links live 24 hours.",
                             delivery) from None
            except ApiError as e:
                if e.status not in (404, 410):
                    raise
                raise V1Lost("gone", f"its file, delivered {delivery.received_at}, is no longer "
                             f"on the storage host ({e.status} {e.server_message}).",
                             delivery) from None
            self.progress.say(f"downloaded {name} ({human_bytes(size)})")
        checkpoint("after_download")
        split_dir = workdir / "split"
        shutil.rmtree(split_dir, ignore_errors=True)
        self.progress.say("splitting the v1 file into events and attributes")
        files, fmt = split_v1(raw, record.format, split_dir, name)
        manifest = {"format": fmt, "files": {
            kind: [{"name": f.name, "url": "", "rows": f.manifest_rows}
                   for f in files if f.kind == kind] for kind in ("attributes", "events")}}
        return files, manifest, fmt, delivery

    def tell(self, note: str) -> None:
        """Say it now, and again in the run's summary."""
        self.notes.append(note)
        self.progress.say(note)

    def ended_ids(self, record: ExportRecord) -> list[str]:
        """Ids of exports that ended without data: a local journal naming one is stale."""
        return [*(self.state.get("ended") or [])[-20:], record.export_id]

    def finish(self, rows: list[dict[str, Any]], patch: dict[str, Any]) -> None:
        self.recorder.commit(rows, patch)
        self.recorder.clear()

    # -- the data path -------------------------------------------------------------------------

    def collect(self, record: ExportRecord, resumed: bool) -> RunResult:
        pipeline, cfg, progress = self.pipeline, self.cfg, self.progress
        workdir = export_dir(pipeline, record.export_id)
        delivery: Delivery | None = None
        if record.api == "v1":
            downloaded, manifest, fmt, delivery = self.fetch_v1(record, workdir)
        else:
            manifest = self.lifecycle.wait(record, cfg.poll_interval_seconds,
                                           cfg.max_wait_seconds)
            if self.inbox is not None:
                delivery = self.inbox.find_v2(record.export_id)
                if delivery is not None:
                    record.delivered_at = delivery.received_at
            downloaded = self.lifecycle.download(record, manifest, workdir / "raw")
            checkpoint("after_download")
            fmt = manifest.get("format", record.format)
        progress.say("converting files to typed Parquet")
        try:
            check_columns(downloaded, fmt, record.expect)
            converted = Converter(record.export_id, snapshot_time(record), workdir / "parquet",
                                  known_columns(pipeline)).convert(downloaded, fmt)
        except IntegrityError:
            # A damaged download must not be reused: the next run fetches the files again.
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        checkpoint("after_convert")

        _fill_record(record, manifest, converted, self.clock)
        state = self.state
        last_end = state.get("last_window_end")
        patch = {
            "inflight": None,
            "last_window_end": max(record.window.end, parse_utc(last_end)).isoformat()
            if last_end else record.window_end,
            "queue": without(queue_windows(state), record.window),
            "loaded": [*(state.get("loaded") or [])[-49:], record.export_id],
        }
        progress.say(f"loading {sum(c.rows for c in converted)} rows into "
                     f"{pipeline.destination.destination_name} dataset {pipeline.dataset_name}")
        # extract → normalize → load as separate steps: a kill between them leaves a package
        # that the next run loads first (it carries the state patch, so nothing is exported twice)
        pipeline.extract(insider_export(record.to_dict(), converted, state_patch=patch,
                                        first_load=_first_load(pipeline)))
        checkpoint("after_extract")
        pipeline.normalize()
        checkpoint("after_normalize")
        info = pipeline.load()
        checkpoint("after_load")
        self.recorder.clear()
        if delivery is not None and self.inbox is not None:
            self.inbox.archive(delivery.key)
        rows = _verify_loaded(pipeline, record, converted)
        shutil.rmtree(workdir, ignore_errors=True)
        return RunResult("loaded", record.window, record.export_id, resumed, rows,
                         table_counts(pipeline), info, self.notes)


def _fill_record(
    record: ExportRecord, manifest: Any, converted: list[ConvertedFile],
    clock: Callable[[], dt.datetime],
) -> None:
    by_name = {(c.kind, c.name): c.rows for c in converted}
    files = manifest["files"]
    record.status = "loaded"
    record.loaded_at = clock().isoformat()
    record.attribute_files = len(files.get("attributes", []))
    record.event_files = len(files.get("events", []))
    record.files = [
        {"kind": kind, "name": f["name"], "rows_manifest": f["rows"],
         "rows_loaded": by_name[(kind, f["name"])]}
        for kind in ("attributes", "events") for f in files.get(kind, [])
    ]
    record.rows_expected = sum(f["rows_manifest"] for f in record.files)
    record.rows_loaded = sum(f["rows_loaded"] for f in record.files)


def _verify_loaded(
    pipeline: dlt.Pipeline, record: ExportRecord, converted: list[ConvertedFile]
) -> dict[str, int]:
    """Count this export's rows in the warehouse and compare with the manifest."""
    expected = {
        "events": sum(c.rows for c in converted if c.kind == "events"),
        "attributes_history": sum(c.rows for c in converted if c.kind == "attributes"),
    }
    found: dict[str, int] = {}
    with pipeline.sql_client() as client:
        for table, want in expected.items():
            if not any(c.kind == ("events" if table == "events" else "attributes")
                       for c in converted):
                continue
            name = client.make_qualified_table_name(table)
            col = client.escape_column_name("export_id")
            rows = client.execute_sql(f"SELECT COUNT(*) FROM {name} WHERE {col} = %s",
                                      record.export_id)
            found[table] = int(rows[0][0])
            if found[table] != want:
                raise IntegrityError(
                    table, f"holds {found[table]} rows of export {record.export_id} after the "
                    f"load but the manifest lists {want}")
    return found


def known_columns(pipeline: dlt.Pipeline) -> dict[str, list[tuple[str, Any]]]:
    """The columns the events and attribute tables already have, in dlt's order, as Arrow types:
    converted files laid out the same way are imported by dlt without a rewrite."""
    from dlt.common.libs.pyarrow import get_py_arrow_datatype

    if not pipeline.default_schema_name:
        return {}
    caps = pipeline.destination.capabilities()
    out: dict[str, list[tuple[str, Any]]] = {}
    for kind, table in (("events", "events"), ("attributes", "attributes")):
        if table not in pipeline.default_schema.tables:
            continue
        columns = pipeline.default_schema.get_table_columns(table)
        out[kind] = [(name, get_py_arrow_datatype(col, caps, "UTC"))
                     for name, col in columns.items()
                     if not name.startswith("_dlt") and col.get("data_type")]
    return out


def _first_load(pipeline: dlt.Pipeline) -> bool:
    """True before the events table exists: nothing can be replaced, so append (faster)."""
    if not pipeline.default_schema_name:
        return True
    table = pipeline.default_schema.tables.get("events")
    return not (table and table.get("columns"))


def table_counts(pipeline: dlt.Pipeline) -> dict[str, int]:
    counts: dict[str, int] = {}
    schema = pipeline.default_schema if pipeline.default_schema_name else None
    if schema is None:
        return counts
    with pipeline.sql_client() as client:
        for table in DATA_TABLES:
            if table in schema.tables and schema.tables[table].get("columns"):
                try:
                    rows = client.execute_sql(
                        f"SELECT COUNT(*) FROM {client.make_qualified_table_name(table)}")
                    counts[table] = int(rows[0][0])
                except Exception:  # noqa: BLE001 - a table not created yet
                    log.debug("no table %s yet", table)
    return counts


def _remove_stale_dirs(pipeline: dlt.Pipeline, state: dict[str, Any]) -> None:
    """Drop download dirs of exports that are no longer in flight (loaded by a killed run)."""
    root = Path(pipeline.working_dir) / "insider_exports"
    keep = (state.get("inflight") or {}).get("export_id")
    if root.is_dir():
        for d in root.iterdir():
            if d.name != keep:
                shutil.rmtree(d, ignore_errors=True)
