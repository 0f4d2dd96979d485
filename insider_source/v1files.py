"""Split one Raw Export v1 file into v2-shaped events and attributes files.

A v1 export is a single file (CSV, Parquet or JSON) with one row per event, and the user's
attributes repeated on every row of that user (users without an event in the window get one row
without event values). Its columns use v1 names. This module turns it into what a v2 export
delivers, so that everything after it (column checks, typing, loading, models) is shared:

=================  ================================  ==========================
v1 column          v2 name                           goes to
=================  ================================  ==========================
``iid``            ``insider_id``                    both
``a_<name>``       ``<name>``                        attributes
``a_c_<name>``     ``custom.<name>``                 attributes
``event_name``     ``event_name``                    events
``e_<param>``      ``<param>`` (``e_timestamp`` →    events
                   ``timestamp``)
``e_c_<name>``     ``custom.<name>``                 events
anything else      unchanged                         events (attributes if none)
=================  ================================  ==========================

- events: the rows that have an ``event_name``, with ``insider_id`` and the event columns.
- attributes: one row per ``insider_id`` (the attributes are the same on all of a user's rows;
  v1 says they are the user's latest values).

The split runs in DuckDB (already the default destination's engine) as two streaming
``COPY (SELECT ...) TO`` statements: the file is never read into Python, JSON (newline-delimited
or one array) is parsed by DuckDB's streaming reader, and the de-duplication of users spills to
disk beyond ``settings.V1_SPLIT_MEMORY_LIMIT``. CSV and JSON become CSV (every value as text, so
``files.Converter`` types them exactly as it types a v2 CSV export); Parquet stays Parquet
(typed). NULL is ``\\N`` or an empty field in v1 CSV.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from insider_source import settings as s
from insider_source.exceptions import IntegrityError
from insider_source.files import SourceFile

KEY = "iid"


def v2_name(column: str, has_events: bool) -> tuple[str, str]:
    """``(kind, v2 name)`` of a v1 column; kind is "key", "attributes" or "events"."""
    if column == KEY:
        return "key", "insider_id"
    if column == "event_name":
        return "events", "event_name"
    for prefix, kind in (("a_", "attributes"), ("e_", "events")):
        if column.startswith(prefix) and len(column) > len(prefix):
            rest = column[len(prefix):]
            if rest.startswith("c_") and len(rest) > 2:
                return kind, "custom." + rest[2:]
            return kind, rest
    return ("events" if has_events else "attributes"), column


def split_v1(path: Path, fmt: str, out_dir: Path, name: str) -> tuple[list[SourceFile], str]:
    """Split the v1 file at ``path`` into files in ``out_dir``.

    Returns the v2-shaped files (``manifest_rows`` = rows written) and their format ("csv" or
    "parquet"). Raises IntegrityError naming the file when it cannot be read or lacks ``iid``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    out_fmt = "parquet" if fmt == "parquet" else "csv"
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{s.V1_SPLIT_MEMORY_LIMIT}'")
        con.execute(f"SET temp_directory = {_lit(str(out_dir / '.spill'))}")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = false")
        source = _reader(path, fmt)
        try:
            columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
        except duckdb.Error as e:
            raise IntegrityError(name, f"unreadable v1 {fmt} file ({_short(e)})") from None
        if KEY not in columns:
            raise IntegrityError(name, f"lacks the v1 key column iid (it has "
                                 f"{', '.join(columns[:20])})")
        has_events = "event_name" in columns
        parts: dict[str, list[tuple[str, str]]] = {"attributes": [], "events": []}
        seen: dict[str, str] = {}
        for col in columns:
            kind, target = v2_name(col, has_events)
            if kind == "key":
                continue
            if target in seen:
                raise IntegrityError(name, f"columns {seen[target]} and {col} both map to "
                                     f"{target!r}")
            seen[target] = col
            parts[kind].append((col, target))
        # v2's event columns come first, in v2's order, then the parameters as they come
        first = ["event_name", "timestamp", "source"]
        parts["events"].sort(key=lambda c: first.index(c[1]) if c[1] in first else len(first))
        key = f"{_id(KEY)} AS {_id('insider_id')}"
        out: list[SourceFile] = []
        selects = []
        if has_events:
            selects.append(("events", f"SELECT {_select(key, parts['events'])} "
                                      f"FROM {source} WHERE {_id('event_name')} IS NOT NULL"))
        if parts["attributes"]:
            selects.append(("attributes",
                            f"SELECT DISTINCT ON ({_id(KEY)}) "
                            f"{_select(key, parts['attributes'])} "
                            f"FROM {source} WHERE {_id(KEY)} IS NOT NULL"))
        options = ("(FORMAT parquet, COMPRESSION uncompressed)" if out_fmt == "parquet"
                   else "(FORMAT csv, HEADER, NULLSTR '')")
        for kind, select in selects:
            dest = out_dir / f"{kind}--{Path(name).stem}.{out_fmt}"
            try:
                row = con.execute(f"COPY ({select}) TO {_lit(str(dest))} {options}").fetchone()
            except duckdb.Error as e:
                raise IntegrityError(name, f"cannot be read ({_short(e)})") from None
            rows = int(row[0]) if row else 0
            out.append(SourceFile(kind, f"{Path(name).stem}-{kind}", dest, rows))
        return out, out_fmt
    finally:
        con.close()


def _reader(path: Path, fmt: str) -> str:
    p = _lit(str(path))
    if fmt == "parquet":
        return f"read_parquet({p})"
    if fmt == "json":
        # newline-delimited or one array, detected; every record is sampled for the types
        return f"read_json({p}, format = 'auto', sample_size = -1)"
    return (f"read_csv({p}, header = true, all_varchar = true, nullstr = ['\\N', ''], "
            "quote = '\"', escape = '\"')")


def _select(key: str, columns: list[tuple[str, str]]) -> str:
    return ", ".join([key, *(f"{_id(col)} AS {_id(target)}" for col, target in columns)])


def _id(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _short(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
