"""Turn downloaded export files (CSV or Parquet) into typed, warehouse-ready Parquet files.

Each downloaded file is streamed in Arrow batches and written to one Parquet file whose column
names are already dlt-normalized (``custom.loyalty_tier`` → ``custom_loyalty_tier``), so dlt can
import it as is (``dlt.mark.with_file_import``, the fastest load path: no row ever becomes a
Python object). Memory is bounded by one batch.

Typing, so that one export gives the same warehouse types whether fetched as CSV or Parquet:
- ``insider_id``, ``event_name``, ``source``, ``tags`` are strings.
- The event ``timestamp`` becomes ``timestamp[us, UTC]`` from ISO-8601 text (with or without an
  offset; none means UTC), epoch seconds or epoch milliseconds (told apart per value by size),
  whatever the file's own type.
- Parquet columns keep their types (timestamps normalized to UTC microseconds); files of one kind
  are cast to one unified schema (int64 + float64 → float64).
- CSV columns are read as text, with empty fields and ``\\N`` as NULL, and typed by a first pass
  over every file of the kind: a column becomes bool (``true``/``false``), int64, float64 or a UTC
  timestamp (ISO-8601 with time) when all its non-null values in all files fit, else string.
- Events gain ``event_date`` (UTC day of ``timestamp``) and ``export_id``; attributes gain
  ``export_id`` and ``snapshot_at`` (the export window's end).

Integrity: each file's row count must equal the manifest's ``rows``; required columns must be
present; unreadable files fail. Errors name the file.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from dlt.common.normalizers.naming.snake_case import NamingConvention

from insider_source import settings as s
from insider_source.checkpoints import checkpoint
from insider_source.exceptions import IntegrityError

TS_TYPE = pa.timestamp("us", tz="UTC")
REQUIRED = {"attributes": ("insider_id",), "events": ("insider_id", "event_name", "timestamp")}
ADDED = {"attributes": ("export_id", "snapshot_at"), "events": ("event_date", "export_id")}

_NAMING = NamingConvention()
_NUMERIC_RE = r"^[+-]?\d+(\.\d*)?$"
_OFFSET_RE = r"(Z|z|[+-]\d{2}(:?\d{2})?)$"
# CSV type inference: each candidate type with the pattern all its values must match.
_CSV_CANDIDATES: tuple[tuple[str, pa.DataType, str], ...] = (
    ("bool", pa.bool_(), r"^(true|false|TRUE|FALSE|True|False)$"),
    ("int64", pa.int64(), r"^[+-]?\d{1,18}$"),
    ("float64", pa.float64(), r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"),
    ("timestamp", TS_TYPE,
     r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}(:?\d{2})?)?$"),
)


def normalize_name(name: str) -> str:
    """The column name dlt stores for a public name (same rule dlt's snake_case naming applies)."""
    return _NAMING.normalize_identifier(name)


@dataclass
class SourceFile:
    """A downloaded file of an export, with what the manifest says about it."""

    kind: str  # "attributes" | "events"
    name: str
    path: Path
    manifest_rows: int


@dataclass
class ConvertedFile:
    kind: str
    name: str
    path: Path
    rows: int
    schema: pa.Schema


# -- timestamps -------------------------------------------------------------------------------


def to_utc_timestamp(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Parse ISO-8601 text, epoch seconds or epoch milliseconds into ``timestamp[us, UTC]``.

    Raises ValueError on a value that is none of these.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            arr = arr.cast(pa.timestamp(t.unit, tz="UTC"))  # naive values are UTC wall time
        return arr.cast(TS_TYPE)
    if pa.types.is_date(t):
        return arr.cast(pa.timestamp("s")).cast(TS_TYPE)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _epoch_to_ts(arr.cast(pa.float64()) if pa.types.is_floating(t) else arr)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        arr = arr.cast(pa.string())
        numeric = pc.match_substring_regex(arr, _NUMERIC_RE)
        if pc.all(pc.or_kleene(numeric, pc.is_null(arr))).as_py():
            as_num = arr.cast(pa.float64()) if pc.any(
                pc.match_substring(arr, ".")).as_py() else arr.cast(pa.int64())
            return _epoch_to_ts(as_num)
        iso = pc.if_else(numeric, pa.scalar(None, pa.string()), arr)
        iso = pc.utf8_trim_whitespace(iso)
        iso = pc.if_else(pc.match_substring_regex(iso, _OFFSET_RE), iso,
                         pc.binary_join_element_wise(iso, "Z", ""))
        try:
            parsed = iso.cast(TS_TYPE)
        except pa.ArrowInvalid as e:
            raise ValueError(str(e).split(":", 1)[-1].strip()[:160]) from None
        if not pc.any(numeric).as_py():
            return parsed
        nums = _epoch_to_ts(pc.if_else(numeric, arr, pa.scalar(None, pa.string()))
                            .cast(pa.float64()))
        return pc.if_else(numeric, nums, parsed)
    raise ValueError(f"cannot read a timestamp from a {t} column")


def _epoch_to_ts(arr: pa.Array) -> pa.Array:
    # Seconds and milliseconds are told apart by size: 1e11 s is the year 5138, 1e11 ms is 1973.
    big = pc.greater(pc.abs(arr), 1e11)
    if pa.types.is_floating(arr.type):
        micros = pc.round(pc.if_else(big, pc.multiply(arr, 1e3), pc.multiply(arr, 1e6)))
        micros = micros.cast(pa.int64())
    else:
        arr = arr.cast(pa.int64())
        micros = pc.if_else(big, pc.multiply(arr, 1000), pc.multiply(arr, 1_000_000))
    return micros.cast(pa.timestamp("us")).cast(TS_TYPE)


# -- CSV typing -------------------------------------------------------------------------------


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        row = next(csv.reader(f), None)
    return row or []


def _csv_batches(path: Path, header: list[str]) -> Iterator[pa.RecordBatch]:
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=s.CSV_BLOCK_BYTES, use_threads=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in header},
            null_values=["", "\\N"],
            strings_can_be_null=True,
        ),
    )
    yield from reader


class CsvTyper:
    """Decides one Arrow type per CSV column from all values of all files of a kind."""

    def __init__(self) -> None:
        self.candidates: dict[str, set[str]] = {}
        self.order: list[str] = []

    def scan(self, f: SourceFile) -> None:
        header = _csv_header(f.path)
        for name in header:
            if name not in self.candidates:
                self.order.append(name)
                self.candidates[name] = {c[0] for c in _CSV_CANDIDATES}
        for batch in _csv_batches(f.path, header):
            for name, col in zip(batch.schema.names, batch.columns, strict=True):
                cands = self.candidates[name]
                if not cands or name in s.STRING_COLUMNS or name == "timestamp":
                    continue
                values = pc.drop_null(col)
                if len(values) == 0:
                    continue
                for label, _, pattern in _CSV_CANDIDATES:
                    if label in cands and not pc.all(
                        pc.match_substring_regex(values, pattern)
                    ).as_py():
                        cands.discard(label)

    def types(self) -> dict[str, pa.DataType]:
        out: dict[str, pa.DataType] = {}
        for name in self.order:
            cands = self.candidates[name]
            typ: pa.DataType = pa.string()
            if name == "timestamp":
                typ = TS_TYPE
            elif name not in s.STRING_COLUMNS:
                for label, t, _ in _CSV_CANDIDATES:
                    if label in cands:
                        typ = t
                        break
            out[name] = typ
        return out


def _cast_text(col: pa.Array, typ: pa.DataType) -> pa.Array:
    if pa.types.is_boolean(typ):
        return pc.equal(pc.utf8_lower(col), "true")
    if typ == TS_TYPE:
        return to_utc_timestamp(col)
    return col.cast(typ)


# -- conversion -------------------------------------------------------------------------------


class Converter:
    """Converts the downloaded files of one export into normalized Parquet files.

    Args:
        export_id: stamped into every row as ``export_id``.
        snapshot_at: when the attribute snapshot holds (the export's submission), stamped into
            attribute rows.
        out_dir: where the Parquet files go (same filesystem as dlt's working dir so the import
            is a hard link, not a copy).
    """

    def __init__(self, export_id: str, snapshot_at: dt.datetime, out_dir: Path,
                 known_columns: dict[str, list[tuple[str, pa.DataType]]] | None = None) -> None:
        self.export_id = export_id
        self.snapshot_at = snapshot_at
        self.out_dir = out_dir
        # Columns the destination table already has, in its order (see ``_layout``).
        self.known_columns = known_columns or {}

    def convert(self, files: list[SourceFile], fmt: str) -> list[ConvertedFile]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out: list[ConvertedFile] = []
        for kind in ("attributes", "events"):
            kind_files = [f for f in files if f.kind == kind]
            if not kind_files:
                continue
            if fmt == "csv":
                target = self._csv_types(kind_files)
                readers = {f.name: self._read_csv(f, target) for f in kind_files}
            else:
                target = self._parquet_types(kind_files)
                readers = {f.name: self._read_parquet(f) for f in kind_files}
            layout = self._layout(kind, kind_files, target)
            for f in kind_files:
                out.append(self._write(f, readers[f.name], target, layout))
                checkpoint("mid_convert")
        return out

    def _layout(self, kind: str, files: list[SourceFile],
                target: dict[str, pa.DataType]) -> pa.Schema:
        """The one schema every converted file of ``kind`` gets: the table's known columns in
        its order, then new ones in order of appearance, then the added ones. Files that match
        dlt's table schema exactly are imported as they are; any difference (a missing column,
        another order, a nullability flag) makes dlt rewrite every file, a full extra copy."""
        types = dict(self.known_columns.get(kind, []))
        names = list(types)
        for f in files:
            try:
                header = self._header(f)
            except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
                raise IntegrityError(f.name, f"unreadable ({_short(e)})") from None
            for src in header:
                name = normalize_name(src)
                typ = TS_TYPE if src == "timestamp" else target.get(src, pa.string())
                if name not in types:
                    names.append(name)
                types[name] = typ  # the data's type wins over a known one
        added = {"event_date": pa.date32(), "export_id": pa.string(), "snapshot_at": TS_TYPE}
        for name in ADDED[kind]:
            if name not in types:
                names.append(name)
            types[name] = added[name]
        return pa.schema([pa.field(n, types[n], nullable=n not in NOT_NULL[kind])
                          for n in names])

    def _csv_types(self, files: list[SourceFile]) -> dict[str, pa.DataType]:
        typer = CsvTyper()
        for f in files:
            try:
                typer.scan(f)
            except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as e:
                raise IntegrityError(f.name, f"unreadable CSV ({_short(e)})") from None
        return typer.types()

    def _parquet_types(self, files: list[SourceFile]) -> dict[str, pa.DataType]:
        target: dict[str, pa.DataType] = {}
        for f in files:
            try:
                schema = pq.read_schema(f.path)
            except (pa.ArrowInvalid, OSError) as e:
                raise IntegrityError(f.name, f"unreadable Parquet ({_short(e)})") from None
            for field in schema:
                t = field.type
                if pa.types.is_dictionary(t):
                    t = t.value_type
                if pa.types.is_large_string(t):
                    t = pa.string()
                if pa.types.is_timestamp(t) or field.name == "timestamp":
                    t = TS_TYPE
                prev = target.get(field.name)
                if prev is None or prev == t or pa.types.is_null(t):
                    target.setdefault(field.name, t)
                elif pa.types.is_null(prev):
                    target[field.name] = t
                elif _numeric(prev) and _numeric(t):
                    target[field.name] = pa.float64()
                else:
                    target[field.name] = pa.string()
        return target

    def _read_csv(
        self, f: SourceFile, target: dict[str, pa.DataType]
    ) -> Iterator[pa.RecordBatch]:
        header = _csv_header(f.path)
        for batch in _csv_batches(f.path, header):
            cols = [_cast_text(c, target[n]) for n, c in zip(header, batch.columns, strict=True)]
            yield pa.RecordBatch.from_arrays(cols, names=header)

    def _read_parquet(self, f: SourceFile) -> Iterator[pa.RecordBatch]:
        # no pre-buffering: memory stays one batch, not one row group (its size is the sender's)
        source = pq.ParquetFile(f.path, pre_buffer=False, buffer_size=s.PARQUET_READ_BUFFER_BYTES)
        yield from source.iter_batches(batch_size=s.PARQUET_BATCH_ROWS)

    def _write(
        self,
        f: SourceFile,
        batches: Iterator[pa.RecordBatch],
        target: dict[str, pa.DataType],
        layout: pa.Schema,
    ) -> ConvertedFile:
        dest = self.out_dir / f"{f.kind}--{f.name}.parquet"
        writer: pq.ParquetWriter | None = None
        rows = 0
        schema: pa.Schema | None = None
        try:
            for batch in batches:
                if schema is None:
                    self._check_columns(f, batch.schema.names)
                table = self._finish(f, batch, target, layout)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(dest, schema, compression=s.PARQUET_COMPRESSION)
                writer.write_table(table, row_group_size=s.PARQUET_BATCH_ROWS)
                rows += table.num_rows
        except (pa.ArrowInvalid, ValueError, OSError, UnicodeDecodeError) as e:
            raise IntegrityError(f.name, f"cannot be read ({_short(e)})") from None
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no batch at all: an empty file
            if f.manifest_rows:
                raise IntegrityError(f.name, f"is empty but the manifest says "
                                     f"{f.manifest_rows} rows")
            header = self._header(f)
            if header:  # a file without even a header holds nothing to check
                self._check_columns(f, header)
            schema = layout
            pq.write_table(schema.empty_table(), dest)
        if rows != f.manifest_rows:
            raise IntegrityError(f.name, f"has {rows} rows but the manifest says "
                                 f"{f.manifest_rows}")
        assert schema is not None
        return ConvertedFile(f.kind, f.name, dest, rows, schema)

    def _check_columns(self, f: SourceFile, names: list[str]) -> None:
        missing = [c for c in REQUIRED[f.kind] if c not in names]
        if missing:
            raise IntegrityError(f.name, f"lacks required column(s) {', '.join(missing)}")
        normalized = [normalize_name(n) for n in names]
        clash = sorted({n for n in normalized if normalized.count(n) > 1}
                       | (set(normalized) & set(ADDED[f.kind])))
        if clash:
            raise IntegrityError(f.name, f"has colliding column name(s) {', '.join(clash)}")

    def _finish(
        self, f: SourceFile, batch: pa.RecordBatch, target: dict[str, pa.DataType],
        layout: pa.Schema,
    ) -> pa.Table:
        names, cols = [], []
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            typ = target[name]
            if name == "timestamp" or typ == TS_TYPE:
                try:
                    col = to_utc_timestamp(col)
                except ValueError as e:
                    raise IntegrityError(f.name, f"column {name!r}: {e}") from None
            elif col.type != typ:
                if pa.types.is_dictionary(col.type):
                    col = col.dictionary_decode()
                col = col.cast(typ)
            names.append(normalize_name(name))
            cols.append(col)
        n = batch.num_rows
        export_id = pa.array([self.export_id] * n, pa.string()) if n else pa.array([], pa.string())
        if f.kind == "events":
            ts = cols[batch.schema.names.index("timestamp")]
            names += ["event_date", "export_id"]
            cols += [pc.cast(ts, pa.date32()), export_id]
        else:
            names += ["export_id", "snapshot_at"]
            cols += [export_id, pa.array([self.snapshot_at] * n, TS_TYPE)]
        present = dict(zip(names, cols, strict=True))
        arrays = []
        for field in layout:  # the layout's order; columns this file lacks are NULL
            col = present.get(field.name)
            if col is None:
                col = pa.nulls(n, field.type)
            elif col.type != field.type:
                col = col.cast(field.type)
            if not field.nullable and col.null_count:
                raise IntegrityError(f.name, f"{col.null_count} rows without {field.name}")
            arrays.append(col)
        return pa.Table.from_arrays(arrays, schema=layout)

    def _header(self, f: SourceFile) -> list[str]:
        if f.path.suffix == ".csv":
            return _csv_header(f.path) if f.path.stat().st_size else []
        return list(pq.read_schema(f.path).names)


# Columns that identify a row or a replaced slice (primary and merge keys of the tables).
NOT_NULL = {"events": frozenset({"event_date"}),
            "attributes": frozenset({"insider_id", "snapshot_at"})}


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _short(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:200]}"
