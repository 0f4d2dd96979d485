"""CSV and Parquet files of one export become identical typed Parquet; bad files are refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from insider_source.exceptions import IntegrityError
from insider_source.files import Converter, SourceFile, normalize_name, to_utc_timestamp

SNAP = dt.datetime(2026, 1, 3, tzinfo=dt.UTC)
CSV_EVENTS = (
    "insider_id,event_name,timestamp,source,unit_price,quantity,custom.gift_wrap,currency\n"
    "u1,purchase,2026-01-01T10:00:00Z,web,19.99,2,true,USD\n"
    'u2,purchase,2026-01-02T23:59:59Z,ios,20.0,,false,"E,UR"\n'
    "u3,purchase,2026-01-02T00:00:01Z,\\N,,1,,\n"
)


def parquet_events(path: Path, ts: pa.Array) -> None:
    pq.write_table(pa.table({
        "insider_id": ["u1", "u2", "u3"],
        "event_name": ["purchase"] * 3,
        "timestamp": ts,
        "source": ["web", "ios", None],
        "unit_price": pa.array([19.99, 20.0, None]),
        "quantity": pa.array([2, None, 1], pa.int64()),
        "custom.gift_wrap": pa.array([True, False, None]),
        "currency": ["USD", "E,UR", None],
    }), path)


def convert(tmp: Path, files: list[SourceFile], fmt: str) -> pa.Table:
    out = Converter("exp1", SNAP, tmp / f"out-{fmt}").convert(files, fmt)
    return pa.concat_tables(pq.read_table(c.path) for c in out)


def test_csv_and_parquet_give_same_rows_values_and_types(tmp_path: Path) -> None:
    csv_path = tmp_path / "e.csv"
    csv_path.write_text(CSV_EVENTS)
    pq_path = tmp_path / "e.parquet"
    parquet_events(pq_path, pa.array([1767261600000, 1767398399000, 1767312001000]))  # epoch ms
    a = convert(tmp_path, [SourceFile("events", "e.csv", csv_path, 3)], "csv")
    b = convert(tmp_path, [SourceFile("events", "e.parquet", pq_path, 3)], "parquet")
    assert a.schema == b.schema
    assert a.equals(b)
    assert a.column_names == ["insider_id", "event_name", "timestamp", "source", "unit_price",
                              "quantity", "custom_gift_wrap", "currency", "event_date",
                              "export_id"]
    row = a.slice(1, 1).to_pylist()[0]
    assert row["unit_price"] == 20.0 and row["quantity"] is None
    assert row["custom_gift_wrap"] is False and row["currency"] == "E,UR"
    assert row["timestamp"] == dt.datetime(2026, 1, 2, 23, 59, 59, tzinfo=dt.UTC)
    assert row["event_date"] == dt.date(2026, 1, 2) and row["export_id"] == "exp1"
    assert a.column("source").to_pylist() == ["web", "ios", None]  # \N is NULL


def test_csv_types_are_decided_across_all_files_of_a_kind(tmp_path: Path) -> None:
    # price looks integral in the first file only: it must still be float everywhere
    f1, f2 = tmp_path / "a.csv", tmp_path / "b.csv"
    f1.write_text("insider_id,event_name,timestamp,price,code\nu1,x,1767261600,10,007\n")
    f2.write_text("insider_id,event_name,timestamp,price,code\nu2,x,1767261601,10.5,A7\n")
    files = [SourceFile("events", "a.csv", f1, 1), SourceFile("events", "b.csv", f2, 1)]
    out = Converter("e", SNAP, tmp_path / "o").convert(files, "csv")
    for c in out:
        assert c.schema.field("price").type == pa.float64()
        assert c.schema.field("code").type == pa.string()
    assert pq.read_table(out[0].path).column("code").to_pylist() == ["007"]


@pytest.mark.parametrize("values,expected_second", [
    (["2026-01-01T10:00:00Z", "2026-01-01T12:00:00+02:00"], 36000),
    (["2026-01-01 10:00:00", "2026-01-01T10:00:00.250"], 36000.25),
    ([1767261600, 1767261600], 36000),
    ([1767261600000, 1767261600000], 36000),
    (["1767261600", "1767261600000"], 36000),
])
def test_timestamps_from_iso_epoch_seconds_or_millis(values: list, expected_second: float) -> None:
    out = to_utc_timestamp(pa.array(values))
    assert out.type == pa.timestamp("us", tz="UTC")
    midnight = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert [(v - midnight).total_seconds() for v in out.to_pylist()][1] == expected_second


def test_unparseable_timestamp_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_text("insider_id,event_name,timestamp\nu1,x,yesterday\n")
    with pytest.raises(IntegrityError, match="e.csv.*timestamp"):
        Converter("e", SNAP, tmp_path / "o").convert([SourceFile("events", "e.csv", p, 1)], "csv")


def test_row_count_mismatch_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_text(CSV_EVENTS)
    with pytest.raises(IntegrityError, match="e.csv: has 3 rows but the manifest says 4"):
        Converter("e", SNAP, tmp_path / "o").convert([SourceFile("events", "e.csv", p, 4)], "csv")


def test_missing_required_column_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("email,age\nx@y.z,3\n")
    with pytest.raises(IntegrityError, match="lacks required column.*insider_id"):
        Converter("e", SNAP, tmp_path / "o").convert(
            [SourceFile("attributes", "a.csv", p, 1)], "csv")


def test_damaged_parquet_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "e.parquet"
    parquet_events(p, pa.array([1767261600] * 3))
    p.write_bytes(p.read_bytes()[:-20])  # cut the footer
    with pytest.raises(IntegrityError, match="e.parquet: unreadable Parquet"):
        Converter("e", SNAP, tmp_path / "o").convert(
            [SourceFile("events", "e.parquet", p, 3)], "parquet")


def test_attributes_get_snapshot_and_export_columns(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("insider_id,email,custom.loyalty_tier,last_purchase_date\n"
                 "u1,a@b.c,gold,2025-12-31T08:00:00Z\nu2,,,\n")
    out = Converter("exp9", SNAP, tmp_path / "o").convert(
        [SourceFile("attributes", "a.csv", p, 2)], "csv")
    t = pq.read_table(out[0].path)
    assert t.column_names == ["insider_id", "email", "custom_loyalty_tier", "last_purchase_date",
                              "export_id", "snapshot_at"]
    assert t.schema.field("last_purchase_date").type == pa.timestamp("us", tz="UTC")
    assert t.column("snapshot_at").to_pylist() == [SNAP, SNAP]
    assert t.column("email").to_pylist() == ["a@b.c", None]


def test_header_only_file_with_zero_rows_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_text("insider_id,event_name,timestamp,currency\n")
    out = Converter("e", SNAP, tmp_path / "o").convert([SourceFile("events", "e.csv", p, 0)],
                                                        "csv")
    assert out[0].rows == 0
    assert "event_date" in out[0].schema.names


def test_names_are_normalized_like_dlt() -> None:
    assert normalize_name("custom.loyalty_tier") == "custom_loyalty_tier"
    assert normalize_name("insider_id") == "insider_id"
