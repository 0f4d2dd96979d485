"""One daily run: plan the window, resume or submit the export, wait, download, convert, load.

``run_export`` is what ``pipelines/daily.py`` calls. Durability, step by step (see lifecycle.py):

- Before anything, packages a killed run left extracted but not loaded are loaded, and on a new
  machine (no local state) the state is restored from the destination.
- A submitted export id is recorded at once by a small run of its own (state ``inflight`` + an
  ``exports`` row), so a kill after submission resumes it and never submits again.
- Downloads and converted files live under the pipeline's working dir, per export id; a re-run
  keeps complete downloads. They are deleted once the export is loaded.
- The data run commits ``last_window_end`` and clears ``inflight`` in the same load package as the
  rows, so the window advances only if the rows are in.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
from dlt.common.pipeline import LoadInfo

from insider_source import settings as s
from insider_source.checkpoints import checkpoint
from insider_source.client import InsiderClient
from insider_source.config import InsiderSettings, build_request_body
from insider_source.exceptions import IntegrityError
from insider_source.files import ConvertedFile, Converter
from insider_source.lifecycle import ExportLifecycle, ExportRecord, utcnow
from insider_source.lock import run_lock
from insider_source.progress import Progress
from insider_source.source import insider_export
from insider_source.window import Window, next_window, parse_utc

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
        self.pipeline.run(insider_export(record.to_dict(), state_patch={
            "inflight": record.to_dict()}))
        checkpoint("after_record")

    def finished(self, record: ExportRecord) -> None:
        # A failed or rejected export is over: clear it so the next run plans the window again.
        self.pipeline.run(insider_export(record.to_dict(), state_patch={"inflight": None}))
        self.clear()

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
        last_end = state.get("last_window_end")
        if last_end and parse_utc(last_end) >= parse_utc(journal["window_end"]):
            self.clear()  # that export was loaded after all
            return None
        return journal

    def clear(self) -> None:
        self.journal.unlink(missing_ok=True)


def source_state(pipeline: dlt.Pipeline) -> dict[str, Any]:
    state: dict[str, Any] = pipeline.state.get("sources", {}).get(s.SOURCE_NAME, {})
    return state


def export_dir(pipeline: dlt.Pipeline, export_id: str) -> Path:
    return Path(pipeline.working_dir) / "insider_exports" / export_id


def run_export(
    pipeline: dlt.Pipeline,
    cfg: InsiderSettings,
    *,
    client: InsiderClient | None = None,
    progress: Progress | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> RunResult:
    """Run the daily export once. Raises InsiderError subclasses (with exit codes) on failure."""
    progress = progress or Progress()
    client = client or InsiderClient(cfg.base_url, cfg.partner_name, cfg.request_token)
    try:
        with run_lock(Path(pipeline.working_dir) / "insider_run.lock"):
            return _run(pipeline, cfg, client, progress, clock)
    finally:
        client.close()


def _run(
    pipeline: dlt.Pipeline,
    cfg: InsiderSettings,
    client: InsiderClient,
    progress: Progress,
    clock: Callable[[], dt.datetime],
) -> RunResult:
    if pipeline.has_pending_data:
        progress.say("loading what an interrupted run left behind")
        pipeline.normalize()
        pipeline.load()
    recorder = PipelineRecorder(pipeline)
    journal = recorder.read_journal()  # before a state restore may wipe the working dir
    if not source_state(pipeline):
        pipeline.sync_destination()  # a new machine: state lives in the destination
    state = source_state(pipeline)
    _remove_stale_dirs(pipeline, state)

    lifecycle = ExportLifecycle(client, recorder, progress=progress, clock=clock)
    inflight = recorder.pending(state, journal)
    if inflight:
        record = ExportRecord.from_dict(inflight)
        resumed = True
        if not state.get("inflight"):  # known only from the local journal: record it now
            recorder.submitted(record)
        progress.say(f"resuming export {record.export_id} for window {record.window} "
                     f"(submitted {record.submitted_at}); nothing new is submitted")
    else:
        last_end = state.get("last_window_end")
        window = next_window(parse_utc(last_end) if last_end else None, cfg.initial_start_date,
                             cfg.lookback_days, clock())
        if window is None:
            progress.say(f"up to date: data is loaded through {last_end}; nothing submitted")
            return RunResult("up_to_date", table_counts=table_counts(pipeline))
        body = build_request_body(cfg, window)
        progress.say(f"submitting export for window {window} ({cfg.format})")
        record = lifecycle.submit(body, window, cfg.format)
        resumed = False

    manifest = lifecycle.wait(record, cfg.poll_interval_seconds, cfg.max_wait_seconds)
    workdir = export_dir(pipeline, record.export_id)
    downloaded = lifecycle.download(record, manifest, workdir / "raw")
    progress.say("converting files to typed Parquet")
    checkpoint("after_download")
    converted = Converter(record.export_id, record.window.end, workdir / "parquet").convert(
        downloaded, manifest.get("format", record.format))
    checkpoint("after_convert")

    _fill_record(record, manifest, converted, clock)
    patch = {"inflight": None, "last_window_end": record.window_end}
    progress.say(f"loading {sum(c.rows for c in converted)} rows into "
                 f"{pipeline.destination.destination_name} dataset {pipeline.dataset_name}")
    info = pipeline.run(insider_export(record.to_dict(), converted, state_patch=patch))
    recorder.clear()
    rows = _verify_loaded(pipeline, record, converted)
    shutil.rmtree(workdir, ignore_errors=True)
    return RunResult("loaded", record.window, record.export_id, resumed, rows,
                     table_counts(pipeline), info)


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
