"""The dlt source: resources that load one collected export, and the export ledger.

The source does no network I/O: ``job.run_export`` drives the lifecycle (submit, wait, download,
convert) and hands it the converted Parquet files. Resources:

- ``events``: every event of every type, one row each. ``merge`` with ``delete-insert`` on merge key
  ``event_date``: the newest export is authoritative for each UTC day it covers, so a re-load, an
  overlapping window or a late event re-exported in the lookback never duplicates a row, and the
  Parquet files are still imported as they are.
- ``attributes``: one row per ``insider_id`` with the latest values (merge on primary key).
- ``attributes_history``: every snapshot, keyed by ``snapshot_at`` (the export window's end), for
  joining attributes as of an event's time (merge key ``snapshot_at``: reloading replaces).
- ``exports``: the ledger, one row per export id, with its files in ``exports__files``.

Incremental state lives in the source state (``sources.insider``), committed with the data:
``last_window_end`` (end of the last loaded window) and ``inflight`` (the export record between
submission and load).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dlt
from dlt.sources import DltResource

from insider_source import settings as s
from insider_source.files import ConvertedFile

# ExportRecord fields kept in state only, never in the exports table
STATE_ONLY = frozenset({"expect"})
MERGE_DELETE_INSERT = {"disposition": "merge", "strategy": "delete-insert"}
EXPORTS_COLUMNS: dict[str, Any] = {
    **{c: {"data_type": "text", "nullable": True}
       for c in ("format", "status", "error", "note", "api")},
    **{c: {"data_type": "timestamp", "nullable": True}
       for c in ("window_start", "window_end", "submitted_at", "completed_at", "loaded_at",
                 "delivered_at")},
    **{c: {"data_type": "bigint", "nullable": True}
       for c in ("attribute_files", "event_files", "rows_expected", "rows_loaded")},
}


@dlt.source(name=s.SOURCE_NAME, max_table_nesting=1)
def insider_export(
    export_record: dict[str, Any] | list[dict[str, Any]],
    files: list[ConvertedFile] | None = None,
    state_patch: dict[str, Any] | None = None,
    first_load: bool = False,
) -> list[DltResource]:
    """Load one export's converted files, upsert its ledger row and commit the state patch.

    Args:
        export_record: the ``exports`` row (an ``ExportRecord.to_dict()``), or several
            (e.g. a rejected export and the planned windows that replace it).
        files: converted Parquet files; None or empty records the ledger row only.
        state_patch: keys to set in the source state, committed with this load.
        first_load: the event tables do not exist yet: ``events`` and ``attributes_history``
            are appended (nothing to replace; one export holds each event and snapshot row once),
            which skips dlt's staging copy of the merge, the largest cost of a big first load.
    """
    files = files or []
    resources = [_exports(export_record, state_patch or {})]
    events = [f for f in files if f.kind == "events"]
    attrs = [f for f in files if f.kind == "attributes"]
    if events:
        resources.append(_file_resource("events", events, merge_key="event_date",
                                        append=first_load))
    if attrs:
        resources.append(_file_resource("attributes", attrs, primary_key="insider_id"))
        resources.append(_file_resource("attributes_history", attrs, merge_key="snapshot_at",
                                        append=first_load))
    return resources


def _exports(
    records: dict[str, Any] | list[dict[str, Any]], state_patch: dict[str, Any]
) -> DltResource:
    @dlt.resource(name="exports", write_disposition="merge", primary_key="export_id",
                  columns=EXPORTS_COLUMNS)
    def exports() -> Iterator[dict[str, Any]]:
        # State written while extracting is committed with this load package, atomically.
        dlt.current.source_state().update(state_patch)
        rows = records if isinstance(records, list) else [records]
        yield [{k: v for k, v in r.items() if k not in STATE_ONLY} for r in rows]

    return exports


def _file_resource(
    name: str,
    files: list[ConvertedFile],
    *,
    primary_key: str | None = None,
    merge_key: str | None = None,
    append: bool = False,
) -> DltResource:
    def items() -> Iterator[Any]:
        for f in files:
            # The files declare their key columns NOT NULL (files.NOT_NULL), as dlt's schema
            # does: the hints agree and dlt imports the files as they are, without a rewrite.
            yield dlt.mark.with_file_import(
                str(f.path), "parquet", items_count=f.rows, hints=f.schema.empty_table()
            )

    return dlt.resource(items, name=name,
                        write_disposition="append" if append else MERGE_DELETE_INSERT,
                        primary_key=primary_key, merge_key=merge_key)
