"""End to end: the real job over real HTTP against the simulator into real DuckDB.

Every loaded row and value is compared with the simulator's ground truth.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from insider_source.files import normalize_name
from tests.conftest import TOKEN, cli_env, query, run_cli, run_inprocess

pytestmark = pytest.mark.e2e

DAY1 = dt.datetime(2026, 3, 5, 6, 0, tzinfo=dt.UTC)  # window [03-01, 03-05)


def rows_of(table: pa.Table, drop: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    cols = [c for c in table.column_names if c not in drop]
    return sorted(zip(*(table.column(c).to_pylist() for c in cols), strict=True),
                  key=lambda r: tuple((v is None, str(v)) for v in r))


def loaded(db: Path, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    cols = ", ".join(f'"{c}"' for c in columns)
    got = query(db, f"SELECT {cols} FROM insider.{table}")
    return sorted(got, key=lambda r: tuple((v is None, str(v)) for v in r))


def assert_matches_truth(db: Path, truth: dict[str, pa.Table]) -> None:
    events = truth["events"]
    assert events.num_rows > 100, "the scenario must produce real data"
    names = [normalize_name(c) for c in events.column_names]
    assert loaded(db, "events", names) == rows_of(events)
    attrs = truth["attributes"]
    assert attrs.num_rows > 100
    anames = [normalize_name(c) for c in attrs.column_names]
    assert loaded(db, "attributes", anames) == rows_of(attrs)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_loads_every_row_and_value(sim: Any, tmp_path: Path, fmt: str) -> None:
    db = tmp_path / "w.duckdb"
    result = run_inprocess(sim, db, DAY1, format=fmt)
    assert result.status == "loaded"
    assert str(result.window) == "[2026-03-01, 2026-03-05)"
    assert len(sim.submissions) == 1
    body = sim.submissions[0]["body"]
    assert body["format"] == fmt
    assert body["events"]["start_date"] == 1772323200  # 2026-03-01
    assert body["events"]["end_date"] == 1772668800  # 2026-03-05
    truth = sim.ground_truth(result.export_id)
    assert_matches_truth(db, truth)

    n_events, n_attrs = truth["events"].num_rows, truth["attributes"].num_rows
    assert result.rows_loaded == {"events": n_events, "attributes_history": n_attrs}
    [(status, expected, got, a_files, e_files)] = query(
        db, "SELECT status, rows_expected, rows_loaded, attribute_files, event_files "
            "FROM insider.exports")
    assert (status, expected, got) == ("loaded", n_events + n_attrs, n_events + n_attrs)
    manifest = sim.manifest(result.export_id)
    assert (a_files, e_files) == (len(manifest["files"]["attributes"]),
                                  len(manifest["files"]["events"]))
    per_file = query(db, "SELECT name, rows_manifest, rows_loaded FROM insider.exports__files")
    assert sorted(per_file) == sorted(
        (f["name"], f["rows"], f["rows"])
        for k in ("attributes", "events") for f in manifest["files"][k])
    assert query(db, "SELECT count(*) FROM insider.attributes_history")[0][0] == n_attrs
    # the signed storage host never saw the API credentials
    storage = [r for r in sim.request_log if r["path"].startswith("/storage/")]
    assert storage, "files were downloaded"
    for r in storage:
        assert not {h.lower() for h in r["headers"]} & {"x-request-token", "x-partner-name"}


def test_csv_and_parquet_of_one_export_give_identical_tables(sim: Any, tmp_path: Path) -> None:
    db_pq, db_csv = tmp_path / "pq.duckdb", tmp_path / "csv.duckdb"
    run_inprocess(sim, db_pq, DAY1, format="parquet")
    sim.set_now(DAY1 + dt.timedelta(days=1))  # quota: one export per UTC day
    run_inprocess(sim, db_csv, DAY1 + dt.timedelta(days=1), format="csv",
                  initial_start_date="2026-03-01", pipeline_name="insider_csv")
    # the second run's window is one day longer; compare the shared days
    for table, key in (("events", "event_date < DATE '2026-03-05'"), ("attributes", "true")):
        types = ("SELECT column_name, data_type FROM information_schema.columns "
                 f"WHERE table_schema = 'insider' AND table_name = '{table}' ORDER BY 1")
        assert query(db_pq, types) == query(db_csv, types)
        cols = [c for (c, _) in query(db_pq, types)
                if not c.startswith("_dlt") and c not in ("export_id", "snapshot_at")]
        sel = ", ".join(f'"{c}"' for c in cols)
        a = query(db_pq, f"SELECT {sel} FROM insider.{table} WHERE {key} ORDER BY ALL")
        b = query(db_csv, f"SELECT {sel} FROM insider.{table} WHERE {key} ORDER BY ALL")
        assert len(a) > 100 and a == b
    types = dict(query(db_csv, "SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_schema = 'insider' AND table_name = 'events'"))
    assert types["timestamp"] == "TIMESTAMP WITH TIME ZONE"
    assert types["unit_price"] == "DOUBLE" and types["quantity"] == "BIGINT"
    assert types["custom_gift_wrap"] == "BOOLEAN" and types["event_date"] == "DATE"


@pytest.mark.parametrize("timestamp_format", ["epoch_s", "epoch_ms"])
def test_epoch_timestamps_load_as_utc(sim: Any, tmp_path: Path, timestamp_format: str) -> None:
    sim.timestamp_format = timestamp_format
    db = tmp_path / "w.duckdb"
    result = run_inprocess(sim, db, DAY1, format="csv")
    assert_matches_truth(db, sim.ground_truth(result.export_id))
    lo, hi = query(db, "SELECT min(timestamp), max(timestamp) FROM insider.events")[0]
    assert lo >= dt.datetime(2026, 3, 1, tzinfo=dt.UTC) and hi < dt.datetime(2026, 3, 5,
                                                                                tzinfo=dt.UTC)


def test_second_run_same_day_submits_nothing_and_adds_nothing(sim: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    first = run_inprocess(sim, db, DAY1)
    counts = first.table_counts
    assert counts["events"] > 0
    again = run_inprocess(sim, db, DAY1 + dt.timedelta(hours=5))
    assert again.status == "up_to_date"
    assert len(sim.submissions) == 1
    assert again.table_counts == counts


def test_next_day_overlap_and_late_events_load_once(sim: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    first = run_inprocess(sim, db, DAY1)
    sim.add_late_events(dt.date(2026, 3, 4), 25)  # arrive after the first export
    day2 = DAY1 + dt.timedelta(days=1)
    second = run_inprocess(sim, db, day2)
    assert str(second.window) == "[2026-03-03, 2026-03-06)"  # lookback 2 days
    assert len(sim.submissions) == 2
    t1 = sim.ground_truth(first.export_id)["events"]
    t2 = sim.ground_truth(second.export_id)["events"]
    # expected: days before 03-03 from the first export, the rest from the second
    day = pa.compute.cast(t1.column("timestamp"), pa.date32())
    keep = t1.filter(pa.compute.less(day, pa.scalar(dt.date(2026, 3, 3))))
    expected = pa.concat_tables([keep, t2.select(keep.column_names)])
    names = [normalize_name(c) for c in expected.column_names]
    got = loaded(db, "events", names)
    assert got == rows_of(expected)
    assert len(got) == len(set(got)) or len(got) == expected.num_rows
    late = query(db, "SELECT count(*) FROM insider.events WHERE event_date = DATE '2026-03-04' "
                     f"AND export_id = '{second.export_id}'")[0][0]
    assert late == pa.compute.sum(pa.compute.equal(
        pa.compute.cast(t2.column("timestamp"), pa.date32()),
        pa.scalar(dt.date(2026, 3, 4)))).as_py()
    # attributes: one row per user, latest snapshot; history keeps both snapshots
    assert query(db, "SELECT count(*), count(DISTINCT insider_id) FROM insider.attributes")[0] \
        == (sim.ground_truth(second.export_id)["attributes"].num_rows,) * 2
    assert query(db, "SELECT count(DISTINCT snapshot_at) FROM insider.attributes_history")[0][0] \
        == 2


def test_reloading_the_same_export_adds_no_duplicates(sim: Any, tmp_path: Path) -> None:
    import dlt

    from insider_source.job import snapshot_time, table_counts

    db = tmp_path / "w.duckdb"
    result = run_inprocess(sim, db, DAY1)
    before = result.table_counts
    # Load the very same converted export again through the source, as a re-run would.
    pipeline = dlt.pipeline("insider_daily", destination=dlt.destinations.duckdb(str(db)),
                            dataset_name="insider")
    from insider_source.files import Converter
    from insider_source.lifecycle import ExportLifecycle, ExportRecord
    from insider_source.source import insider_export

    record = ExportRecord.from_dict(query_record(db, result.export_id))
    from insider_source.client import InsiderClient
    from insider_source.config import Secret

    client = InsiderClient(sim.base_url, "acme", Secret(TOKEN))
    lc = ExportLifecycle(client, recorder=None)  # type: ignore[arg-type]
    manifest = client.status(result.export_id)
    files = lc.download(record, manifest, tmp_path / "raw")
    converted = Converter(record.export_id, snapshot_time(record), tmp_path / "pq").convert(
        files, manifest["format"])
    pipeline.run(insider_export(record.to_dict(), converted))
    assert table_counts(pipeline) == before
    assert_matches_truth(db, sim.ground_truth(result.export_id))


def query_record(db: Path, export_id: str) -> dict[str, Any]:
    cols = ["export_id", "window_start", "window_end", "format", "status", "submitted_at"]
    row = query(db, f"SELECT {', '.join(cols)} FROM insider.exports "
                    f"WHERE export_id = '{export_id}'")[0]
    return {c: v.isoformat() if hasattr(v, "isoformat") else v
            for c, v in zip(cols, row, strict=True)}


def test_still_processing_exits_75_and_next_run_resumes(sim: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sim.processing_polls = 1000
    env = cli_env(sim, db, initial_start_date=None, max_wait_seconds=0.3,
                  poll_interval_seconds=0.1)
    first = run_cli(env)
    assert first.returncode == 75, first.stderr
    assert "still processing" in first.stderr and "resumes" in first.stderr
    assert query(db, "SELECT status FROM insider.exports") == [("processing",)]
    sim.processing_polls = 0
    second = run_cli(env)
    assert second.returncode == 0, second.stderr
    assert len(sim.submissions) == 1
    assert query(db, "SELECT status FROM insider.exports") == [("loaded",)]


def test_quota_used_today_exits_75_and_records_nothing(sim: Any, tmp_path: Path) -> None:
    import requests

    requests.post(f"{sim.base_url}/api/raw/v2/export",
                  headers={"X-PARTNER-NAME": "acme", "X-REQUEST-TOKEN": TOKEN},
                  json={"format": "csv", "segment": {"segment_id": 1}, "attributes": ["email"],
                        "hook": "https://example.com/h"}, timeout=10).raise_for_status()
    db = tmp_path / "w.duckdb"
    out = run_cli(cli_env(sim, db, initial_start_date=None))
    assert out.returncode == 75, out.stderr
    assert "00:00 UTC" in out.stderr and "429" in out.stderr
    assert not db.exists() or not query(
        db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'exports'")[0][0]


def test_server_400_is_shown_with_its_message(sim: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    out = run_cli(cli_env(sim, db, attributes=["email", "custom.no_such_thing"]))
    assert out.returncode == 2, out.stderr
    assert "unknown attribute custom.no_such_thing" in out.stderr
    assert len(sim.submissions) == 0


def test_bad_config_exits_2_before_any_request(sim: Any, tmp_path: Path) -> None:
    out = run_cli(cli_env(sim, tmp_path / "w.duckdb", partner_name="ACME"))
    assert out.returncode == 2
    assert "partner_name" in out.stderr and "'acme'" in out.stderr
    assert sim.request_log == []


def test_without_credentials_exits_2_naming_the_settings(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
    out = run_cli(env)
    assert out.returncode == 2
    assert "partner_name" in out.stderr and "request_token" in out.stderr
    assert ".dlt/secrets.toml" in out.stderr


def test_demo_command_runs_end_to_end(tmp_path: Path) -> None:
    out = run_cli(dict(__import__("os").environ), "--demo", "--demo-dir", str(tmp_path / "demo"),
                  timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Loaded export" in out.stdout and "DuckDB file:" in out.stdout
    db = tmp_path / "demo" / "insider_demo.duckdb"
    assert query(db, "SELECT count(*) FROM insider.events")[0][0] > 1000
    assert query(db, "SELECT count(DISTINCT event_name) FROM insider.events")[0][0] == 4


def test_models_are_built_after_a_load_unless_turned_off(sim: Any, tmp_path: Path) -> None:
    env = cli_env(sim, tmp_path / "a.duckdb", initial_start_date=None)
    built = run_cli(env)
    assert built.returncode == 0, built.stderr
    assert "Models built" in built.stdout and "user_summary" in built.stdout
    sim.set_now(sim.now() + dt.timedelta(days=1))
    off = cli_env(sim, tmp_path / "b.duckdb", initial_start_date=None)
    off["INSIDER_DAILY__MODELS"] = "false"
    off["DLT_DATA_DIR"] = str(tmp_path / "other")
    loaded_only = run_cli(off)
    assert loaded_only.returncode == 0, loaded_only.stderr
    assert "Loaded export" in loaded_only.stdout and "Models built" not in loaded_only.stdout
    assert not query(tmp_path / "b.duckdb", "SELECT count(*) FROM information_schema.tables "
                                            "WHERE table_name = 'user_summary'")[0][0]
