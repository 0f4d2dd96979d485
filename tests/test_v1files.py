"""Splitting one v1 file into v2-shaped events and attributes files (v1files.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from insider_source.exceptions import IntegrityError
from insider_source.files import Converter
from insider_source.v1files import split_v1, v2_name

ROWS = [
    {"a_email": "a@x.com", "a_age": 31, "a_c_loyalty_tier": "gold", "event_name": "purchase",
     "e_timestamp": "2026-03-01T10:00:00Z", "e_unit_price": 9.5, "e_c_gift_wrap": True,
     "iid": "u1"},
    {"a_email": "a@x.com", "a_age": 31, "a_c_loyalty_tier": "gold",
     "event_name": "session_start", "e_timestamp": "2026-03-01T11:00:00Z", "e_unit_price": None,
     "e_c_gift_wrap": None, "iid": "u1"},
    {"a_email": 'b,"q"@x.com', "a_age": None, "a_c_loyalty_tier": None, "event_name": None,
     "e_timestamp": None, "e_unit_price": None, "e_c_gift_wrap": None, "iid": "u2"},
    {"a_email": "multi\nline", "a_age": 5, "a_c_loyalty_tier": "silver",
     "event_name": "purchase", "e_timestamp": "2026-03-02T10:00:00Z", "e_unit_price": 1.0,
     "e_c_gift_wrap": False, "iid": "u3"},
]
CSV = ('a_email,a_age,a_c_loyalty_tier,event_name,e_timestamp,e_unit_price,e_c_gift_wrap,iid\n'
       'a@x.com,31,gold,purchase,2026-03-01T10:00:00Z,9.5,true,u1\n'
       'a@x.com,31,gold,session_start,2026-03-01T11:00:00Z,\\N,\\N,u1\n'
       '"b,""q""@x.com",\\N,,\\N,\\N,\\N,\\N,u2\n'
       '"multi\nline",5,silver,purchase,2026-03-02T10:00:00Z,1.0,false,u3\n')


def write(tmp_path: Path, fmt: str) -> Path:
    path = tmp_path / f"acme-20260301-1.{fmt}"
    if fmt == "csv":
        path.write_text(CSV)
    elif fmt == "ndjson":
        path = path.with_suffix(".json")
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "json":
        path.write_text(json.dumps(ROWS, indent=1))  # one array, across lines
    else:
        table = pa.Table.from_pylist(ROWS)
        ts = pa.array([dt.datetime.fromisoformat(r["e_timestamp"]) if r["e_timestamp"] else None
                       for r in ROWS], pa.timestamp("us", tz="UTC"))
        table = table.set_column(table.schema.get_field_index("e_timestamp"), "e_timestamp", ts)
        pq.write_table(table, path)
    return path


def test_v1_names_map_to_v2_names() -> None:
    assert v2_name("iid", True) == ("key", "insider_id")
    assert v2_name("a_email", True) == ("attributes", "email")
    assert v2_name("a_c_loyalty_tier", True) == ("attributes", "custom.loyalty_tier")
    assert v2_name("event_name", True) == ("events", "event_name")
    assert v2_name("e_timestamp", True) == ("events", "timestamp")
    assert v2_name("e_c_gift_wrap", True) == ("events", "custom.gift_wrap")
    assert v2_name("e_c", True) == ("events", "c")  # too short to be a custom code
    assert v2_name("odd", True) == ("events", "odd")
    assert v2_name("odd", False) == ("attributes", "odd")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "ndjson", "json"])
def test_a_v1_file_becomes_typed_events_and_one_attribute_row_per_user(
        tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, fmt)
    kind = "json" if fmt == "ndjson" else fmt
    files, out_fmt = split_v1(path, kind, tmp_path / "split", path.name)
    assert out_fmt == ("parquet" if fmt == "parquet" else "csv")
    by_kind = {f.kind: f for f in files}
    assert (by_kind["events"].manifest_rows, by_kind["attributes"].manifest_rows) == (3, 3)

    converted = Converter("v1-x", dt.datetime(2026, 3, 5, tzinfo=dt.UTC),
                          tmp_path / "pq").convert(files, out_fmt)
    tables = {c.kind: pq.read_table(c.path) for c in converted}
    events = tables["events"].sort_by([("insider_id", "ascending"), ("timestamp", "ascending")])
    assert events.column_names[:4] == ["insider_id", "event_name", "timestamp", "unit_price"]
    assert events.column("insider_id").to_pylist() == ["u1", "u1", "u3"]
    assert events.column("event_name").to_pylist() == ["purchase", "session_start", "purchase"]
    assert events.column("timestamp").to_pylist() == [
        dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC)]
    assert events.column("unit_price").to_pylist() == [9.5, None, 1.0]
    assert events.column("custom_gift_wrap").to_pylist() == [True, None, False]
    assert events.schema.field("custom_gift_wrap").type == pa.bool_()

    attrs = tables["attributes"].sort_by("insider_id")
    assert attrs.column("insider_id").to_pylist() == ["u1", "u2", "u3"]
    assert attrs.column("email").to_pylist() == ["a@x.com", 'b,"q"@x.com', "multi\nline"]
    assert attrs.column("age").to_pylist() == [31, None, 5]
    assert attrs.schema.field("age").type == pa.int64()
    assert attrs.column("custom_loyalty_tier").to_pylist() == ["gold", None, "silver"]
    assert "event_name" not in attrs.column_names and "email" not in events.column_names


def test_attributes_only_v1_file_has_no_events(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a_email,a_c_tier,iid\nx@y.z,gold,u1\nw@y.z,\\N,u2\n")
    files, _ = split_v1(path, "csv", tmp_path / "split", "a.csv")
    assert [(f.kind, f.manifest_rows) for f in files] == [("attributes", 2)]


@pytest.mark.parametrize("content,problem", [
    ("a_email,event_name\nx@y.z,purchase\n", "lacks the v1 key column iid"),
    ("a_email,email,iid\nx,y,u1\n", "both map to 'email'"),
])
def test_bad_v1_files_fail_naming_the_file(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(IntegrityError) as e:
        split_v1(path, "csv", tmp_path / "split", "acme-1.csv")
    assert "acme-1.csv" in str(e.value) and problem in str(e.value)


def test_a_damaged_parquet_v1_file_fails_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "parquet")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(IntegrityError) as e:
        split_v1(path, "parquet", tmp_path / "split", "acme-1.parquet")
    assert "acme-1.parquet" in str(e.value)
