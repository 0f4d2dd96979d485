"""Raw Export v1 in the simulator: request validation, and the single export file it writes.

v1 (``POST /api/raw/v1/export``) takes a segment, attributes and/or events, a ``format``
(csv, parquet or json) and a ``hook``; the result is ONE file whose link is POSTed to the hook.

Validation (first failure → 400 ``{"error": message}``), in this order: JSON object,
``segment`` (object with a positive integer ``segment_id``), attributes/events presence,
``attributes`` (list of strings, ``"*"`` alone), ``events`` (``start_date``/``end_date`` epoch
seconds with end > start, non-empty ``wanted`` list, each entry with a string ``event_name`` and
a ``params`` list of strings, ``filters`` at most one per event with ``key``, ``operator`` and
exactly one of ``values`` / ``values_url``), ``format`` and ``hook`` (``http://`` or
``https://``).

v1 is looser than v2 on names and accepts some bad input silently:

- attribute and parameter selectors may be public names (``email``, ``custom.loyalty_tier``) or
  ``c_<name>`` for customs (→ ``custom.<name>``); unknown names, unknown event names, duplicates
  and filters on unknown keys are dropped without an error;
- ``timestamp`` and ``source`` are parameters of every event (the event base columns);
- filter values are coerced to the parameter's type (``[369]`` on a string parameter is
  ``["369"]``); values that cannot be coerced are dropped.

The validated request is mapped onto the v2 ``ExportRequest`` (catalog names, ``user_source``
segment, no tags), so the same deterministic ``World`` serves v1 and v2 with the same values.

File layout: ``a_<name>`` per requested attribute (customs ``a_c_<name>``), then ``event_name``
and ``e_<param>`` per requested parameter across all wanted events (customs ``e_c_<name>``,
``e_timestamp``, ``e_source``) when events were requested, and ``iid`` last. One row per event,
with the user's current attributes repeated; segment users without an event in the window get
one row with ``event_name`` and every ``e_*`` NULL (after the event rows, in user order); with
attributes only, one row per user. An event row holds only the parameters its event asked for.

- CSV: header, RFC 4180 quoting, NULL as ``\\N``, ``true``/``false``, timestamps ISO-8601 ``Z``.
- JSON: one object per line, NULL as ``null``, timestamps ISO-8601 strings ending in ``Z``.
- Parquet: typed columns; attribute timestamps ``timestamp[us, UTC]``; ``e_timestamp`` per the
  simulator's ``timestamp_format`` (ISO string, epoch seconds or milliseconds), as in v2.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from insider_source.simulator.catalog import CATALOG, EVENT_BASE_COLUMNS, Catalog
from insider_source.simulator.data import USER_BLOCK_ROWS, insider_ids
from insider_source.simulator.output import (
    CSV_BATCH_ROWS,
    Cancelled,
    ExportJob,
    FileEntry,
    _csv_field,
    _event_timestamp,
    _iso,
    attribute_schema,
    event_parts,
    wire_type,
)
from insider_source.simulator.validation import (
    BadRequest,
    EventFilter,
    ExportRequest,
    WantedEvent,
    epoch_seconds,
    filter_shape,
    positive_int,
)

V1_FORMATS = ("csv", "parquet", "json")
BASE_PARAMS = ("timestamp", "source")  # accepted as params of any event
CSV_NULL = "\\N"
_BASE_TYPES = dict(EVENT_BASE_COLUMNS)


@dataclass(frozen=True)
class V1Request:
    """A validated v1 request and how its file's columns map to public (v2) names."""

    request: ExportRequest  # the mapped v2 request (catalog names, segment, no tags)
    attribute_columns: tuple[tuple[str, str], ...]  # (v1 column, public attribute name)
    has_events: bool  # an ``events`` object was given (the file has event columns)
    param_columns: tuple[tuple[str, str], ...]  # (v1 column, public parameter name)
    event_params: Mapping[str, tuple[str, ...]]  # event → the public params it asked for

    @property
    def format(self) -> str:
        """``csv``, ``parquet`` or ``json``."""
        return self.request.format


# -- names --------------------------------------------------------------------------------------


def v1_column(prefix: str, public: str) -> str:
    """The v1 column of a public name: ``a_email``, ``a_c_loyalty_tier``, ``e_c_gift_wrap``."""
    if public.startswith("custom."):
        return f"{prefix}_c_{public.removeprefix('custom.')}"
    return f"{prefix}_{public}"


def _public(selector: str, known: Mapping[str, Any]) -> str | None:
    """The registered public name a v1 selector means, or None when unknown."""
    if selector in known:
        return selector
    if selector.startswith("c_"):
        custom = "custom." + selector.removeprefix("c_")
        if custom in known:
            return custom
    return None


def v1_file_name(partner: str, day: dt.date, n: int, fmt: str) -> str:
    """``<partner>-<YYYYMMDD>-<n>.<ext>``."""
    return f"{partner}-{day:%Y%m%d}-{n}.{fmt}"


# -- validation ---------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _http_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://")) and len(
        value.split("://", 1)[1]) > 0


def parse_v1_request(raw: bytes, catalog: Catalog = CATALOG) -> V1Request:
    """Validate a v1 body; raise BadRequest with the first failure's message."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("invalid JSON body") from None
    if not isinstance(body, dict):
        raise BadRequest("invalid JSON body")

    segment = body.get("segment")
    if segment is None:
        raise BadRequest("segment is required")
    if not isinstance(segment, dict) or not positive_int(segment.get("segment_id")):
        raise BadRequest("segment_id must be a positive integer")

    attributes, events = body.get("attributes"), body.get("events")
    if (attributes is None or attributes == []) and events is None:
        raise BadRequest("at least one of attributes or events is required")
    attrs = _attributes(attributes, catalog)

    start = end = None
    wanted: list[WantedEvent] = []
    event_params: dict[str, tuple[str, ...]] = {}
    param_order: dict[str, None] = {}
    if events is not None:
        start, end, entries = _events(events)
        for name, params, filt in entries:
            if name not in catalog.events or name in event_params:
                continue  # unknown or repeated event: dropped silently
            known = {**_BASE_TYPES, **catalog.events[name]}
            asked: dict[str, None] = {}
            for p in params:
                public = _public(p, known)
                if public is not None and public not in ("insider_id", "event_name"):
                    asked[public] = None
            event_params[name] = tuple(asked)
            param_order.update(asked)
            wanted.append(WantedEvent(
                name, tuple(p for p in asked if p not in BASE_PARAMS),
                _map_filter(filt, name, catalog)))

    fmt = body.get("format")
    if fmt is None or fmt == "":
        raise BadRequest("format is required")
    if fmt not in V1_FORMATS:
        raise BadRequest("format must be csv, parquet or json")
    hook = body.get("hook")
    if hook is None or hook == "":
        raise BadRequest("hook is required")
    if not _http_url(hook):
        raise BadRequest("invalid hook")

    request = ExportRequest(
        format=fmt, user_source="segment", attributes=attrs, events=tuple(wanted),
        start_date=start, end_date=end, get_tags=False, segment_id=segment["segment_id"],
        postfilter_id=None, vertical=None, hook=hook,
    )
    return V1Request(
        request=request,
        attribute_columns=tuple((v1_column("a", a), a) for a in attrs),
        has_events=events is not None,
        param_columns=tuple((v1_column("e", p), p) for p in param_order),
        event_params=event_params,
    )


def _attributes(attributes: Any, catalog: Catalog) -> tuple[str, ...]:
    if attributes is None:
        return ()
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise BadRequest("attributes must be a list of strings")
    if "*" in attributes:
        if len(attributes) > 1:
            raise BadRequest("invalid attribute *")
        return tuple(catalog.attribute_names)
    out: dict[str, None] = {}
    for a in attributes:
        public = _public(a, catalog.attributes)
        if public is not None:
            out[public] = None
    return tuple(out)


_Entry = tuple[str, list[str], dict[str, Any] | None]


def _events(events: Any) -> tuple[float, float, list[_Entry]]:
    if not isinstance(events, dict):
        raise BadRequest("events must be an object")
    start, end = epoch_seconds(events, "start_date"), epoch_seconds(events, "end_date")
    if end <= start:
        raise BadRequest("end_date must be greater than start_date")
    wanted = events.get("wanted")
    if wanted is None:
        raise BadRequest("wanted is required")
    if not isinstance(wanted, list) or not wanted:
        raise BadRequest("wanted must be a non-empty list")
    out: list[_Entry] = []
    for entry in wanted:
        if not isinstance(entry, dict):
            raise BadRequest("each wanted entry must be an object")
        name = entry.get("event_name")
        if name is None or name == "":
            raise BadRequest("event_name is required")
        if not isinstance(name, str):
            raise BadRequest("event_name must be a string")
        params = entry.get("params")
        if params is None:
            raise BadRequest("params is required")
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise BadRequest("params must be a list of strings")
        out.append((name, params, _filter(entry.get("filters"))))
    return start, end, out


def _filter(filters: Any) -> dict[str, Any] | None:
    return filter_shape(filters, _filter_key, _http_url)


def _filter_key(key: Any) -> None:
    if key == "":
        raise BadRequest("filter key is required")
    if not isinstance(key, str):
        raise BadRequest("filter key must be a string")


def _coerce(value: Any, typ: pa.DataType) -> Any:
    """``value`` as a ``typ`` filter value, or None when it cannot be one."""
    if isinstance(value, bool):
        if pa.types.is_boolean(typ):
            return value
        return str(value).lower() if pa.types.is_string(typ) else None
    if pa.types.is_boolean(typ):
        return {"true": True, "false": False}.get(str(value).lower())
    if pa.types.is_string(typ):
        return value if isinstance(value, str) else (
            json.dumps(value) if _is_number(value) else None)
    try:
        number = float(value) if isinstance(value, str | int | float) else None
    except ValueError:
        return None
    if number is None or number != number:
        return None
    if pa.types.is_integer(typ):
        return int(number) if number.is_integer() else None
    return number


def _map_filter(f: dict[str, Any] | None, event: str, catalog: Catalog) -> EventFilter | None:
    if f is None:
        return None
    key = _public(f["key"], catalog.events[event])
    if key is None:
        return None  # a filter on an unknown (or base) key is ignored
    if f.get("values_url") is not None:
        return EventFilter(key, f["operator"], None, f["values_url"])
    typ = catalog.param_type(event, key)
    values = tuple(v for v in (_coerce(x, typ) for x in f["values"]) if v is not None)
    operator = f["operator"]
    if not values and operator != "ne":
        operator = "eq"  # nothing comparable: matches no row (``ne`` keeps every non-null row)
    return EventFilter(key, operator, values, None)


# -- rows ---------------------------------------------------------------------------------------


def v1_schema(spec: V1Request) -> pa.Schema:
    """Typed columns of the v1 file, in file order (before wire formatting)."""
    fields = [pa.field(v1, CATALOG.attributes[a]) for v1, a in spec.attribute_columns]
    if spec.has_events:
        fields.append(pa.field("event_name", pa.string()))
        fields += [pa.field(v1, _param_type(spec, p)) for v1, p in spec.param_columns]
    fields.append(pa.field("iid", pa.string()))
    return pa.schema(fields)


def _param_type(spec: V1Request, public: str) -> pa.DataType:
    if public in _BASE_TYPES:
        return _BASE_TYPES[public]
    for event, params in spec.event_params.items():
        if public in params:
            return CATALOG.param_type(event, public)
    raise KeyError(public)


def attribute_table(job: ExportJob) -> pa.Table:
    """``insider_id`` and the requested attributes of every segment user, in user order."""
    world, schema = job.world, attribute_schema(job.request)
    parts = []
    for lo in range(0, max(world.users, 0), USER_BLOCK_ROWS):
        idx = np.arange(lo, min(lo + USER_BLOCK_ROWS, world.users), dtype=np.int64)
        if job.request.attributes:
            cols = world.attributes(idx)
            parts.append(pa.table([cols[n] for n in schema.names], schema=schema))
        else:
            parts.append(pa.table([insider_ids(world.seed, idx)], schema=schema))
    return pa.concat_tables(parts).combine_chunks() if parts else schema.empty_table()


def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def v1_parts(job: ExportJob, spec: V1Request,
             cancel: threading.Event | None = None) -> Iterator[pa.Table]:
    """Yield the file's rows as typed tables with v1 column names, in file order."""
    schema = v1_schema(spec)
    attrs = attribute_table(job)
    ids = _array(attrs.column("insider_id"))

    def rows(users: pa.Table, events: pa.Table | None, asked: tuple[str, ...]) -> pa.Table:
        n = users.num_rows
        cols = [_array(users.column(a)) for _, a in spec.attribute_columns]
        if spec.has_events:
            cols.append(_array(events.column("event_name")) if events is not None
                        else pa.nulls(n, pa.string()))
            for v1, p in spec.param_columns:
                typ = schema.field(v1).type
                cols.append(_array(events.column(p)) if events is not None and p in asked
                            else pa.nulls(n, typ))
        cols.append(_array(users.column("insider_id")))
        return pa.table(cols, schema=schema)

    if not spec.has_events:
        if attrs.num_rows:
            yield rows(attrs, None, ())
        return
    seen = np.zeros(max(job.world.users, 0), dtype=bool)
    for w, _, part in event_parts(job, seen, cancel):
        users = attrs.take(pc.index_in(part.column("insider_id"), value_set=ids))
        yield rows(users, part, spec.event_params[w.name])
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    rest = attrs.take(pa.array(np.flatnonzero(~seen), type=pa.int64()))
    if rest.num_rows:
        yield rows(rest, None, ())


def v1_ground_truth(job: ExportJob, spec: V1Request) -> dict[str, pa.Table]:
    """The file's rows in v2 shape: ``{"attributes": table, "events": table}``.

    ``events`` holds the rows with an event (``insider_id``, ``event_name``, ``timestamp``,
    ``source``, then every requested parameter, public names, typed; a base column an event did
    not ask for is NULL, as in the file); ``attributes`` one row per iid of the file
    (``insider_id`` and the requested attributes).
    """
    fields: dict[str, pa.DataType] = dict(EVENT_BASE_COLUMNS)
    for w in job.request.events:
        for p in w.params:
            fields.setdefault(p, CATALOG.param_type(w.name, p))
    schema = pa.schema(list(fields.items()))
    by_public = {p: v1 for v1, p in spec.param_columns}
    parts = []
    if spec.has_events:
        for t in v1_parts(job, spec):
            t = t.filter(pc.is_valid(t.column("event_name")))
            if not t.num_rows:
                continue
            cols = []
            for name, typ in fields.items():
                src = {"insider_id": "iid", "event_name": "event_name"}.get(
                    name, by_public.get(name))
                cols.append(_array(t.column(src)) if src is not None
                            else pa.nulls(t.num_rows, typ))
            parts.append(pa.table(cols, schema=schema))
    events = pa.concat_tables(parts).combine_chunks() if parts else schema.empty_table()
    return {"attributes": attribute_table(job), "events": events}


# -- writing ------------------------------------------------------------------------------------


def _write_lines(out: BinaryIO, lines: pa.Array | pa.ChunkedArray) -> None:
    """Write string rows, each followed by a newline, straight from the Arrow buffers."""
    lines = _array(pc.binary_join_element_wise(lines, pa.scalar(""), "\n"))
    lines = lines.cast(pa.large_string())
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64, count=len(lines) + 1,
                            offset=lines.offset * 8)
    data = lines.buffers()[2]
    if data is not None:
        out.write(memoryview(data)[int(offsets[0]):int(offsets[-1])])


def _csv_rows(out: BinaryIO, table: pa.Table) -> None:
    for batch in table.to_batches(max_chunksize=CSV_BATCH_ROWS):
        if batch.num_rows == 0:
            continue
        texts = []
        for i, name in enumerate(batch.schema.names):
            col = batch.column(i)
            text = _csv_field(name, col, "iso")  # v1 names never hit the event-timestamp rule
            texts.append(pc.if_else(pc.is_valid(col), text, pa.scalar(CSV_NULL)))
        rows = pc.binary_join_element_wise(*texts, ",") if len(texts) > 1 else texts[0]
        _write_lines(out, rows)


def _json_rows(out: BinaryIO, table: pa.Table) -> None:
    for batch in table.to_batches(max_chunksize=CSV_BATCH_ROWS):
        cols = [_iso(c) if pa.types.is_timestamp(c.type) else c for c in batch.columns]
        plain = pa.RecordBatch.from_arrays(cols, names=batch.schema.names)
        out.write("".join(json.dumps(row, ensure_ascii=False) + "\n"
                          for row in plain.to_pylist()).encode("utf-8"))


def write_v1_file(job: ExportJob, spec: V1Request, path: Path,
                  cancel: threading.Event | None = None) -> FileEntry:
    """Write the request's single file at ``path``; ``FileEntry.kind`` is ``"v1"``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    schema, fmt = v1_schema(spec), spec.format
    rows = 0
    if fmt == "parquet":
        wire = pa.schema([pa.field(f.name, wire_type("timestamp", f.type, job.timestamp_format)
                                   if f.name == "e_timestamp" else f.type) for f in schema])
        with pq.ParquetWriter(path, wire, compression="snappy") as writer:
            for t in v1_parts(job, spec, cancel):
                if "e_timestamp" in t.column_names:
                    i = t.column_names.index("e_timestamp")
                    t = t.set_column(i, "e_timestamp", _event_timestamp(
                        _array(t.column(i)), job.timestamp_format))
                writer.write_table(t.cast(wire))
                rows += t.num_rows
    else:
        with open(path, "wb") as out:
            if fmt == "csv":
                out.write((",".join(schema.names) + "\n").encode("utf-8"))
            for t in v1_parts(job, spec, cancel):
                (_csv_rows if fmt == "csv" else _json_rows)(out, t)
                rows += t.num_rows
    return FileEntry("v1", path.name, path, rows, path.stat().st_size)


__all__ = ["V1Request", "parse_v1_request", "v1_file_name", "v1_ground_truth", "v1_parts",
           "v1_schema", "write_v1_file"]
