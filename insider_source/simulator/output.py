"""Turn a validated export request into the rows it serves, and write them as chunked files.

The same row stream feeds the file writer and ``ground_truth``, so the truth is exactly what the
files hold (in manifest file order, then row order), before any wire formatting.

- Event files: one per wanted event and per ``event_chunk_days``-day range (counted from the
  window's first UTC day), empty ones skipped, numbered ``event-<name>-0.<ext>``, ``-1`` ...
- Attribute files: the selected users in user-id order, ``attribute_chunk_rows`` rows per file,
  ``attrs-0.<ext>``, ``attrs-1.<ext>`` ...
- CSV: header of public names, RFC 4180 quoting (only when needed; ``""`` for an empty string),
  NULL as an empty field, ``true``/``false``, floats always with a decimal point, attribute
  timestamps as ISO-8601 ``...Z`` and the event ``timestamp`` per ``timestamp_format``.
- Parquet: typed columns; attribute timestamps ``timestamp[us, UTC]``; the event ``timestamp``
  per ``timestamp_format`` (ISO string, epoch seconds or milliseconds as int64).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from insider_source.simulator.catalog import CATALOG, EVENT_BASE_COLUMNS
from insider_source.simulator.data import DAY_SECONDS, USER_BLOCK_ROWS, World, postfilter_keep
from insider_source.simulator.validation import EventFilter, ExportRequest, WantedEvent

TIMESTAMP_FORMATS = ("iso", "epoch_s", "epoch_ms")
CSV_BATCH_ROWS = 65_536
_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()


class Cancelled(Exception):
    """The simulator stopped while an export was being written."""


@dataclass(frozen=True)
class ExportJob:
    """Everything that determines an export's content, fixed at submission."""

    export_id: str
    request: ExportRequest
    world: World
    timestamp_format: str
    attribute_chunk_rows: int
    event_chunk_days: int


@dataclass(frozen=True)
class FileEntry:
    """One written file of an export."""

    kind: str  # "attributes" | "events"
    name: str
    path: Path
    rows: int
    size: int


# -- the row stream ---------------------------------------------------------------------------


def event_schema(w: WantedEvent, get_tags: bool) -> pa.Schema:
    """Typed columns of one wanted event's files (public names)."""
    fields = [pa.field(n, t) for n, t in EVENT_BASE_COLUMNS]
    fields += [pa.field(p, CATALOG.param_type(w.name, p)) for p in w.params]
    if get_tags:
        fields.append(pa.field("tags", pa.string()))
    return pa.schema(fields)


def attribute_schema(req: ExportRequest) -> pa.Schema:
    """Typed columns of the attribute files: ``insider_id`` first."""
    return pa.schema([pa.field("insider_id", pa.string())]
                     + [pa.field(a, CATALOG.attributes[a]) for a in req.attributes])


def _filter_mask(col: pa.Array, f: EventFilter) -> pa.Array:
    assert f.values is not None
    typ = col.type
    if f.operator in ("eq", "ne"):
        hit = pc.is_in(col, value_set=pa.array(list(f.values), type=typ))
        if f.operator == "ne":
            hit = pc.and_kleene(pc.invert(hit), pc.is_valid(col))
        return hit
    # Ordered operators match when the row matches any of the values.
    bound = max(f.values) if f.operator in ("lt", "lteq") else min(f.values)
    op = {"lt": pc.less, "lteq": pc.less_equal, "gt": pc.greater, "gteq": pc.greater_equal}
    return pc.fill_null(op[f.operator](col, pa.scalar(bound, type=typ)), False)


def window_days(req: ExportRequest) -> tuple[int, int]:
    """First and one-past-last day ordinal the events window touches."""
    assert req.start_date is not None and req.end_date is not None
    first = math.floor(req.start_date / DAY_SECONDS) + _EPOCH_ORDINAL
    last = math.ceil(req.end_date / DAY_SECONDS) + _EPOCH_ORDINAL
    return first, last


def event_parts(job: ExportJob, seen_users: np.ndarray | None,
                cancel: threading.Event | None = None
                ) -> Iterator[tuple[WantedEvent, int, pa.Table]]:
    """Yield ``(wanted event, chunk number, typed table)`` pieces, in file order.

    Marks ``seen_users[user index]`` for every served row when given.
    """
    req, world = job.request, job.world
    if not req.events or world.users <= 0:
        return
    first, last = window_days(req)
    chunk_days = max(1, job.event_chunk_days)
    for w in req.events:
        schema = event_schema(w, req.get_tags)
        for day_no in range(first, last):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            chunk = (day_no - first) // chunk_days
            for block in world.events(dt.date.fromordinal(day_no), w.name):
                mask = (block.seconds >= req.start_date) & (block.seconds < req.end_date)
                if req.postfilter_id is not None:
                    mask &= postfilter_keep(world.seed, block.uidx, req.postfilter_id)
                if w.filter is not None and w.filter.values is not None:
                    fm = _filter_mask(block.columns[w.filter.key], w.filter)
                    mask &= fm.to_numpy(zero_copy_only=False)
                if not mask.any():
                    continue
                kept = block.filter(mask) if not mask.all() else block
                if seen_users is not None:
                    seen_users[kept.uidx] = True
                table = pa.table([kept.columns[n] for n in schema.names], schema=schema)
                yield w, chunk, table


def attribute_parts(job: ExportJob, seen_users: np.ndarray | None,
                    cancel: threading.Event | None = None) -> Iterator[pa.Table]:
    """Yield typed attribute tables of the selected users, in user-id order."""
    req, world = job.request, job.world
    if not req.attributes:
        return
    schema = attribute_schema(req)
    for lo in range(0, world.users, USER_BLOCK_ROWS):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        idx = np.arange(lo, min(lo + USER_BLOCK_ROWS, world.users), dtype=np.int64)
        if seen_users is not None:
            idx = idx[seen_users[lo:lo + len(idx)]]
        if req.postfilter_id is not None:
            idx = idx[postfilter_keep(world.seed, idx, req.postfilter_id)]
        if len(idx) == 0:
            continue
        cols = world.attributes(idx)
        yield pa.table([cols[n] for n in schema.names], schema=schema)


def _user_bitmap(job: ExportJob) -> np.ndarray | None:
    if job.request.user_source == "events":
        return np.zeros(max(job.world.users, 0), dtype=bool)
    return None


# -- wire formatting --------------------------------------------------------------------------


def _iso(col: pa.Array) -> pa.Array:
    # Naive timestamp[s] to text gives "YYYY-MM-DD HH:MM:SS" (10x faster than strftime or a
    # tz-aware cast); the values are UTC wall time already.
    secs = pc.cast(pc.cast(col, pa.int64()), pa.timestamp("us")).cast(pa.timestamp("s"),
                                                                      safe=False)
    text = pc.replace_substring(pc.cast(secs, pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, pa.scalar("Z"), "")


def _event_timestamp(col: pa.Array, timestamp_format: str) -> pa.Array:
    if timestamp_format == "iso":
        return _iso(col)
    micros = pc.cast(col, pa.int64())
    return pc.divide(micros, 1_000_000 if timestamp_format == "epoch_s" else 1_000)


def wire_type(name: str, typ: pa.DataType, timestamp_format: str) -> pa.DataType:
    """The Parquet column type of a served column."""
    if name == "timestamp":
        return pa.string() if timestamp_format == "iso" else pa.int64()
    return typ


def _csv_field(name: str, col: pa.Array, timestamp_format: str) -> pa.Array:
    typ = col.type
    if name == "timestamp" and pa.types.is_timestamp(typ):
        text = _event_timestamp(col, timestamp_format)
        text = pc.cast(text, pa.string())
    elif pa.types.is_timestamp(typ):
        text = _iso(col)
    elif pa.types.is_floating(typ):
        text = pc.cast(col, pa.string())
        whole = pc.match_substring_regex(text, r"^-?\d+$")
        text = pc.if_else(whole, pc.binary_join_element_wise(text, pa.scalar(".0"), ""), text)
    elif pa.types.is_string(typ):
        needs = pc.match_substring_regex(col, r'^$|[",\r\n]')
        text = col
        if pc.any(needs).as_py():
            quoted = pc.binary_join_element_wise(
                pa.scalar('"'), pc.replace_substring(col, '"', '""'), pa.scalar('"'), "")
            text = pc.if_else(needs, quoted, col)
    else:  # int64, bool
        text = pc.cast(col, pa.string())
    return pc.fill_null(text, "")


def _csv_quote(value: str) -> str:
    if any(ch in value for ch in '",\r\n') or value == "":
        return '"' + value.replace('"', '""') + '"'
    return value


def write_csv_rows(out: BinaryIO, table: pa.Table, timestamp_format: str) -> None:
    """Append ``table`` as CSV lines (no header), batch by batch, without Python row loops."""
    for batch in table.to_batches(max_chunksize=CSV_BATCH_ROWS):
        if batch.num_rows == 0:
            continue
        texts = [_csv_field(n, batch.column(i), timestamp_format)
                 for i, n in enumerate(batch.schema.names)]
        rows = pc.binary_join_element_wise(*texts, ",") if len(texts) > 1 else texts[0]
        lines = pc.binary_join_element_wise(rows, pa.scalar(""), "\n")
        if isinstance(lines, pa.ChunkedArray):
            lines = lines.combine_chunks()
        lines = lines.cast(pa.large_string())  # 64-bit offsets: never overflows
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64,
                                count=len(lines) + 1, offset=lines.offset * 8)
        data = lines.buffers()[2]
        assert data is not None
        out.write(memoryview(data)[int(offsets[0]):int(offsets[-1])])


class FileWriter:
    """Streams tables of one schema into one CSV or Parquet file."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str, timestamp_format: str) -> None:
        self.path, self.fmt, self.timestamp_format = path, fmt, timestamp_format
        self.rows = 0
        self._csv: BinaryIO | None = None
        self._pq: pq.ParquetWriter | None = None
        if fmt == "csv":
            self._csv = open(path, "wb")  # noqa: SIM115 - closed in close()
            header = ",".join(_csv_quote(n) for n in schema.names) + "\n"
            self._csv.write(header.encode("utf-8"))
        else:
            self._wire = pa.schema([pa.field(f.name, wire_type(f.name, f.type, timestamp_format))
                                    for f in schema])
            self._pq = pq.ParquetWriter(path, self._wire, compression="snappy")

    def write(self, table: pa.Table) -> None:
        """Append rows."""
        if table.num_rows == 0:
            return
        self.rows += table.num_rows
        if self._csv is not None:
            write_csv_rows(self._csv, table, self.timestamp_format)
            return
        assert self._pq is not None
        cols = []
        for name, col in zip(table.column_names, table.columns, strict=True):
            if name == "timestamp":
                col = _event_timestamp(col.combine_chunks(), self.timestamp_format)
            cols.append(col)
        self._pq.write_table(pa.table(cols, schema=self._wire))

    def close(self) -> None:
        """Finish the file."""
        if self._csv is not None:
            self._csv.close()
        if self._pq is not None:
            self._pq.close()


# -- export generation ------------------------------------------------------------------------


def write_export(job: ExportJob, directory: Path,
                 cancel: threading.Event | None = None) -> list[FileEntry]:
    """Write every file of an export into ``directory``; return them in manifest order."""
    directory.mkdir(parents=True, exist_ok=True)
    ext, req = job.request.format, job.request
    files: list[FileEntry] = []

    def finish(kind: str, writer: FileWriter) -> None:
        writer.close()
        files.append(FileEntry(kind, writer.path.name, writer.path, writer.rows,
                               writer.path.stat().st_size))

    seen = _user_bitmap(job)
    current: tuple[str, int] | None = None
    writer: FileWriter | None = None
    numbers: dict[str, int] = {}
    for w, chunk, table in event_parts(job, seen, cancel):
        if current != (w.name, chunk):
            if writer is not None:
                finish("events", writer)
            current = (w.name, chunk)
            n = numbers.get(w.name, 0)
            numbers[w.name] = n + 1
            writer = FileWriter(directory / f"event-{w.name}-{n}.{ext}", table.schema, ext,
                                job.timestamp_format)
        assert writer is not None
        writer.write(table)
    if writer is not None:
        finish("events", writer)

    event_files, files = files, []
    per_file = max(1, job.attribute_chunk_rows)
    writer = None
    schema = attribute_schema(req)
    for table in attribute_parts(job, seen, cancel):
        pos = 0
        while pos < table.num_rows:
            if writer is None:
                writer = FileWriter(directory / f"attrs-{len(files)}.{ext}", schema, ext,
                                    job.timestamp_format)
            take = min(per_file - writer.rows, table.num_rows - pos)
            writer.write(table.slice(pos, take))
            pos += take
            if writer.rows >= per_file:
                finish("attributes", writer)
                writer = None
    if writer is not None:
        finish("attributes", writer)
    return files + event_files


def ground_truth(job: ExportJob) -> dict[str, pa.Table]:
    """The typed rows an export serves: ``{"attributes": table, "events": table}``."""
    req = job.request
    seen = _user_bitmap(job)
    fields: dict[str, pa.DataType] = dict(EVENT_BASE_COLUMNS)
    for w in req.events:
        for p in w.params:
            fields.setdefault(p, CATALOG.param_type(w.name, p))
    if req.get_tags:
        fields["tags"] = pa.string()
    schema = pa.schema(list(fields.items()))
    parts = []
    for _, _, table in event_parts(job, seen):
        cols = [table.column(n) if n in table.column_names else pa.nulls(table.num_rows, t)
                for n, t in fields.items()]
        parts.append(pa.table(cols, schema=schema))
    events = pa.concat_tables(parts) if parts else schema.empty_table()
    aschema = attribute_schema(req)
    aparts = list(attribute_parts(job, seen))
    attributes = pa.concat_tables(aparts) if aparts else aschema.empty_table()
    return {"attributes": attributes.combine_chunks(), "events": events.combine_chunks()}


__all__ = ["TIMESTAMP_FORMATS", "ExportJob", "FileEntry", "ground_truth", "write_export"]
