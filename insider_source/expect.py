"""What columns an export's files must have, derived from the request that produced them.

Checked on the downloaded files before anything is converted or loaded, so a file with missing or
unexpected columns fails the run naming the file, and the warehouse stays as it was. The
expectation is stored with the export record at submission (``ExportRecord.expect``): a run that
resumes the export checks against what was asked then, not against a configuration edited since.

- attribute files: ``insider_id`` plus exactly the requested attributes (with ``["*"]``: any).
- event files: ``insider_id``, ``event_name``, ``timestamp``, ``source``, ``tags`` exactly when
  ``get_tags``, and otherwise only parameters some requested event asked for (each file holds one
  event type, so a file may lack another event's parameters).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from insider_source.exceptions import IntegrityError
from insider_source.files import SourceFile

EVENT_BASE = ("insider_id", "event_name", "timestamp", "source")


def expectation(body: dict[str, Any]) -> dict[str, Any]:
    """The column expectation of a v2 request body (small and JSON-safe, kept in state)."""
    events = (body.get("events") or {}).get("wanted") or []
    return {
        "attributes": list(body.get("attributes") or []),
        "event_params": sorted({p for e in events for p in e.get("params") or []}),
        "get_tags": bool(body.get("get_tags")),
    }


def header(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        return list(pq.read_schema(path).names)
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def check_columns(files: list[SourceFile], fmt: str, expect: dict[str, Any] | None) -> None:
    """Raise IntegrityError for the first file whose columns break the expectation."""
    if not expect:
        return  # an export recorded before expectations were kept: files.py still checks keys
    for f in files:
        try:
            names = header(f.path, fmt)
        except Exception as e:  # noqa: BLE001 - any unreadable header is an integrity failure
            raise IntegrityError(f.name, f"unreadable {fmt} file ({type(e).__name__}: "
                                 f"{str(e)[:160]})") from None
        if f.kind == "attributes":
            wanted = ["insider_id", *expect["attributes"]]
            if "*" in wanted:
                _missing(f, names, ["insider_id"])
                continue
            _missing(f, names, wanted)
            _unexpected(f, names, set(wanted))
        else:
            base = [*EVENT_BASE, *(["tags"] if expect["get_tags"] else [])]
            _missing(f, names, base)
            _unexpected(f, names, {*base, *expect["event_params"]})


def _missing(f: SourceFile, names: list[str], wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in names]
    if missing:
        raise IntegrityError(f.name, f"lacks requested column(s) {', '.join(missing)} "
                             f"(it has {', '.join(names[:20])})")


def _unexpected(f: SourceFile, names: list[str], allowed: set[str]) -> None:
    extra = [c for c in names if c not in allowed]
    if extra:
        raise IntegrityError(f.name, f"has column(s) {', '.join(extra)} that the export did not "
                             "request")
