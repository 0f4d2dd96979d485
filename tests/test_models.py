"""SQL models on simulator data in real DuckDB, checked against values computed here in Python
from the raw tables (never by the same SQL); incremental builds against a full refresh; every
model compiled for Snowflake and BigQuery, re-parsed, and run under fakesnow; the CLI commands.

One warehouse is loaded for the whole module (four daily runs, the last one a backfill, the models
built after each); tests that change it work on a copy. Errors of the runner are in
test_transform_errors.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
import sqlglot

from insider_source.transform import ModelResult, compile_models, run_models
from tests.conftest import query, run_cli, run_inprocess
from tests.test_e2e import DAY1

pytestmark = pytest.mark.e2e

MODELS = ("daily_event_counts", "events_enriched", "events_enriched_asof", "user_summary")
LATE_DAY = dt.date(2026, 3, 4)  # late events appear for it before the second run
BACKFILL = (dt.date(2026, 2, 25), dt.date(2026, 3, 1))  # loaded by the fourth run


@dataclass
class Warehouse:
    db: Path
    builds: list[dict[str, ModelResult]]  # the models' results after each load


def pipeline_for(db: Path, pipelines_dir: Path | None = None) -> dlt.Pipeline:
    """The loader's pipeline on ``db``; without ``pipelines_dir`` a fresh one, so the runner
    restores the schema from the warehouse (as on a new machine)."""
    return dlt.pipeline("insider_daily", destination=dlt.destinations.duckdb(str(db)),
                        dataset_name="insider",
                        pipelines_dir=str(pipelines_dir or db.parent / "fresh_pipelines"))


def rows(db: Path, sql: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def mark_snapshots(db: Path) -> None:
    """The simulator's attributes are the same in every snapshot; suffix each e-mail with its
    export id so that a wrong snapshot shows as a wrong value, not only a wrong snapshot_at."""
    con = duckdb.connect(str(db))
    try:
        for table in ("attributes", "attributes_history"):
            con.execute(f"UPDATE insider.{table} SET email = email || '#' || export_id "
                        "WHERE email IS NOT NULL AND email NOT LIKE '%#%'")
    finally:
        con.close()


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """Four daily runs into one DuckDB file, the models built after each: a first build, then
    incremental builds (late events for an old day on the second run, a backfill of older days
    on the fourth)."""
    from insider_source.simulator import Simulator
    from tests.conftest import PARTNER, TOKEN

    root = tmp_path_factory.mktemp("warehouse")
    db = root / "w.duckdb"
    with pytest.MonkeyPatch.context() as mp:  # what conftest.isolated_env does for one test
        for key in list(os.environ):
            if key.startswith(("SOURCES__", "DESTINATION__", "INSIDER_", "RUNTIME__", "DLT_")):
                mp.delenv(key, raising=False)
        mp.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
        mp.setenv("DLT_DATA_DIR", str(root / "dlt_data"))
        mp.setenv("INSIDER_PROGRESS", "0")
        mp.chdir(root)
        sim = Simulator(partner_name=PARTNER, request_token=TOKEN, seed=11, users=300,
                        events_per_user_day=0.5, attribute_chunk_rows=120, event_chunk_days=2,
                        processing_polls=2)
        sim.start()
        builds = []
        try:
            for day in range(4):
                now = DAY1 + dt.timedelta(days=day)
                if day == 1:
                    sim.add_late_events(LATE_DAY, 25)
                result = run_inprocess(sim, db, now,
                                       backfill=BACKFILL if day == 3 else None)
                assert result.status == "loaded"
                mark_snapshots(db)
                pipeline = pipeline_for(db, root / "dlt_data" / "pipelines")
                builds.append({r.name: r for r in run_models(pipeline)})
        finally:
            sim.stop()
        yield Warehouse(db, builds)


def copy_of(wh: Warehouse, tmp_path: Path) -> Path:
    db = tmp_path / "copy.duckdb"
    shutil.copy(wh.db, db)
    return db


def by_user(table: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in table:
        out[r["insider_id"]].append(r)
    return out


def sort_key(row: tuple[Any, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((v is None, str(v)) for v in row)


# -- the build itself ---------------------------------------------------------------------------

def test_every_load_builds_every_model_and_incremental_runs_stay_incremental(
    warehouse: Warehouse,
) -> None:
    details = [b["events_enriched_asof"].detail for b in warehouse.builds]
    assert details[0] == "first build"
    # the table's latest event before the build (end of the previous window) minus 3 days
    assert details[1].startswith("incremental since 2026-03-01 2"), details
    assert details[2].startswith("incremental since 2026-03-02 2"), details
    # the backfill loaded February: the window reopens back to it
    assert details[3].startswith("incremental since 2026-02-25"), details
    assert "reopened" in details[3]
    for build in warehouse.builds:
        assert sorted(build) == sorted(MODELS)
        assert all(r.tests_passed >= 3 and r.rows > 0 for r in build.values())
    assert {r.materialization for r in warehouse.builds[-1].values()} == {
        "view", "table", "incremental"}


def test_the_data_has_what_the_models_must_handle(warehouse: Warehouse) -> None:
    [(days, first, snapshots, late)] = query(
        warehouse.db,
        "SELECT count(DISTINCT event_date), min(event_date), "
        "(SELECT count(DISTINCT snapshot_at) FROM insider.attributes_history), "
        f"(SELECT count(*) FROM insider.events WHERE event_date = DATE '{LATE_DAY}') "
        "FROM insider.events")
    assert first == BACKFILL[0] and days >= 9 and snapshots == 4
    assert late > 0


# -- each model against Python ------------------------------------------------------------------

EVENT = ("insider_id", "event_name", "timestamp", "source", "product_id", "unit_price",
         "quantity", "campaign_id", "device_type", "export_id")  # an event has no id of its own


def test_events_enriched_is_each_event_once_with_its_users_current_attributes(
    warehouse: Warehouse,
) -> None:
    db = warehouse.db
    current = {a["insider_id"]: a for a in rows(db, "SELECT * FROM insider.attributes")}
    expected = []
    for e in rows(db, "SELECT * FROM insider.events"):
        user = current.get(e["insider_id"]) or {}
        expected.append((*(e[c] for c in EVENT), user.get("email"), user.get("snapshot_at")))
    got = [tuple(r.values()) for r in rows(
        db, f"SELECT {', '.join(EVENT)}, email, attributes_snapshot_at "
            "FROM insider.events_enriched")]
    assert sorted(got, key=sort_key) == sorted(expected, key=sort_key)
    assert len({x[-2] for x in expected}) > 100, "attributes were joined"
    columns = [r["column_name"] for r in rows(
        db, "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'events_enriched' ORDER BY ordinal_position")]
    assert len(columns) == len(set(columns)) and not any(c.endswith("_1") for c in columns)
    assert {"custom_loyalty_tier", "unit_price", "custom_gift_wrap"} <= set(columns)


def test_events_enriched_asof_takes_the_snapshot_that_held_at_the_event(
    warehouse: Warehouse,
) -> None:
    db = warehouse.db
    history = by_user(rows(db, "SELECT * FROM insider.attributes_history"))
    expected = []
    for e in rows(db, "SELECT * FROM insider.events"):
        mine = sorted(history[e["insider_id"]], key=lambda h: h["snapshot_at"])
        held = [h for h in mine if h["snapshot_at"] <= e["timestamp"]]
        snap, first = (held[-1], False) if held else (mine[0] if mine else None, True)
        expected.append((*(e[c] for c in EVENT), snap and snap["snapshot_at"], first,
                         snap and snap["email"], snap and snap["custom_loyalty_tier"]))
    got = [tuple(r.values()) for r in rows(
        db, f"SELECT {', '.join(EVENT)}, attributes_snapshot_at, "
            "attributes_from_first_snapshot, email, custom_loyalty_tier "
            "FROM insider.events_enriched_asof")]
    assert sorted(got, key=sort_key) == sorted(expected, key=sort_key)
    used = Counter((x[-4], x[-3]) for x in expected)
    assert len({snap for snap, first in used if not first}) >= 2, "several snapshots are used"
    assert any(first for _, first in used), "events before the first snapshot exist"


def test_user_summary_matches_python(warehouse: Warehouse) -> None:
    db = warehouse.db
    events = by_user(rows(db, "SELECT * FROM insider.events"))
    current = {a["insider_id"]: a for a in rows(db, "SELECT * FROM insider.attributes")}
    got = {r["insider_id"]: r for r in rows(db, "SELECT * FROM insider.user_summary")}
    assert set(got) == set(events)
    multi_currency = 0
    for uid, evs in events.items():
        r = got[uid]
        assert r["first_event_at"] == min(e["timestamp"] for e in evs)
        assert r["last_event_at"] == max(e["timestamp"] for e in evs)
        assert r["events"] == len(evs)
        assert r["active_days"] == len({e["event_date"] for e in evs})
        types = Counter(e["event_name"] for e in evs)
        assert r["events_by_type"] == ", ".join(f"{k}:{v}" for k, v in sorted(types.items()))
        buys = [e for e in evs if e["event_name"] == "purchase"]
        assert r["purchases"] == len(buys)
        cents: dict[str, int] = defaultdict(int)
        for b in buys:  # a purchase without a price counts, with no revenue
            price = b["unit_price"]
            cents[b["currency"] or "?"] += 0 if price is None else half_away(
                price * (b["quantity"] or 1) * 100)
        want = ", ".join(f"{c}:{'-' if v < 0 else ''}{abs(v) // 100}.{abs(v) % 100:02d}"
                         for c, v in sorted(cents.items()))
        assert r["revenue_by_currency"] == (want or None)
        multi_currency += len(cents) > 1
        assert r["email"] == current[uid]["email"]
        assert r["custom_lifetime_value"] == current[uid]["custom_lifetime_value"]
    assert multi_currency > 0


def half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def test_daily_event_counts_match_python(warehouse: Warehouse) -> None:
    events = rows(warehouse.db, "SELECT insider_id, event_name, event_date FROM insider.events")
    first_day: dict[str, dt.date] = {}
    for e in events:
        first_day[e["insider_id"]] = min(first_day.get(e["insider_id"], e["event_date"]),
                                         e["event_date"])
    groups: dict[tuple[dt.date, str], list[str]] = defaultdict(list)
    for e in events:
        groups[(e["event_date"], e["event_name"])].append(e["insider_id"])
    expected = sorted((day, name, len(users), len(set(users)),
                       len({u for u in users if first_day[u] == day}))
                      for (day, name), users in groups.items())
    got = query(warehouse.db, "SELECT event_date, event_name, events, users, new_users "
                              "FROM insider.daily_event_counts ORDER BY ALL")
    assert got == expected
    assert any(x[4] for x in expected) and any(x[3] > x[4] for x in expected)


# -- incremental --------------------------------------------------------------------------------

def test_incremental_builds_equal_a_full_refresh(warehouse: Warehouse, tmp_path: Path) -> None:
    db = copy_of(warehouse, tmp_path)
    sql = "SELECT * FROM insider.events_enriched_asof ORDER BY ALL"
    incremental = query(db, sql)
    [result] = run_models(pipeline_for(db), select=["events_enriched_asof"], full_refresh=True)
    assert result.detail == "full refresh"
    assert query(db, sql) == incremental
    assert len(incremental) == query(db, "SELECT count(*) FROM insider.events")[0][0]


def test_an_incremental_build_replaces_only_its_window(warehouse: Warehouse,
                                                       tmp_path: Path) -> None:
    """Rows before the window are kept as they are; rows in it are rebuilt from the sources."""
    db = copy_of(warehouse, tmp_path)
    con = duckdb.connect(str(db))
    try:
        latest = con.execute("SELECT max(timestamp) FROM insider.events_enriched_asof"
                             ).fetchone()[0]  # type: ignore[index]
        con.execute("UPDATE insider.events_enriched_asof SET source = 'stale'")
    finally:
        con.close()
    [result] = run_models(pipeline_for(db), select=["events_enriched_asof"])
    cutoff = latest - dt.timedelta(days=3)
    assert result.detail == f"incremental since {cutoff:%Y-%m-%d %H:%M} UTC"
    [(stale_before, stale_after, total)] = query(
        db, "SELECT count(*) FILTER (WHERE source = 'stale' AND timestamp < $c), "
            "count(*) FILTER (WHERE source = 'stale' AND timestamp >= $c), count(*) "
            "FROM insider.events_enriched_asof".replace("$c", f"TIMESTAMPTZ '{cutoff}'"))
    assert stale_before > 0 and stale_after == 0
    assert total == query(db, "SELECT count(*) FROM insider.events")[0][0]


def test_a_model_that_changes_kind_replaces_the_old_relation(warehouse: Warehouse,
                                                             tmp_path: Path) -> None:
    db = copy_of(warehouse, tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    text = (Path(__file__).parents[1] / "models" / "events_enriched.sql").read_text()
    (models / "events_enriched.sql").write_text(text.replace("materialized: view",
                                                             "materialized: table"))
    [result] = run_models(pipeline_for(db), models_dir=models)
    assert (result.materialization, result.detail) == ("table", "table")
    assert query(db, "SELECT table_type FROM information_schema.tables "
                     "WHERE table_name = 'events_enriched'") == [("BASE TABLE",)]


# -- compiled for each warehouse ----------------------------------------------------------------

def test_every_model_compiles_for_snowflake_and_bigquery_and_parses_back() -> None:
    for dialect in ("snowflake", "bigquery"):
        compiled = compile_models(dialect)
        assert set(compiled) == set(MODELS)
        for name, sql in compiled.items():
            sqlglot.parse_one(sql, read=dialect)
            quoted = re.findall(r'"([^"]*)"' if dialect == "snowflake" else r"`([^`]*)`", sql)
            assert quoted, name
            if dialect == "snowflake":  # dlt stores names upper case there
                assert '"INSIDER"."EVENTS"' in sql or '"INSIDER"."ATTRIBUTES"' in sql, name
                assert all(q == q.upper() for q in quoted), f"{name}: lower-case names {quoted}"
                assert " EXCEPT " not in sql
            else:
                assert "`insider`.`events`" in sql or "`insider`.`attributes`" in sql, name
                assert all(q == q.lower() for q in quoted), name
                assert " EXCLUDE " not in sql, "BigQuery spells it EXCEPT"
    assert '"SNAPSHOT_AT"' in compile_models("snowflake", select=["events_enriched"])[
        "events_enriched"]
    assert "`analytics`.`events`" in compile_models("bigquery", dataset="analytics")[
        "events_enriched"]


def test_every_model_is_planned_by_duckdb(warehouse: Warehouse) -> None:
    """A parse is not a valid query (``JOIN b ON`` with nothing after it parses): DuckDB plans
    every compiled model against the loaded tables."""
    con = duckdb.connect(str(warehouse.db), read_only=True)
    try:
        for name, sql in compile_models("duckdb").items():
            plan = con.execute(f"EXPLAIN {sql}").fetchall()
            assert plan, name
            assert '"insider"."events"' in sql or '"insider"."attributes"' in sql, name
    finally:
        con.close()


def test_compile_command_prints_each_models_sql(tmp_path: Path) -> None:
    for dialect in ("duckdb", "snowflake", "bigquery"):
        out = run_cli(dict(os.environ), "--compile", dialect)
        assert out.returncode == 0, out.stderr
        statements = [s for s in out.stdout.split(";\n") if s.strip()]
        assert len(statements) == len(MODELS)
        for name in MODELS:
            assert f"-- {name} ({dialect})" in out.stdout
        for stmt in statements:
            sqlglot.parse_one(stmt, read=dialect)


def test_models_only_on_a_new_machine_builds_the_selection(warehouse: Warehouse,
                                                           tmp_path: Path) -> None:
    db = copy_of(warehouse, tmp_path)
    con = duckdb.connect(str(db))
    try:
        con.execute("DROP TABLE insider.user_summary; DROP VIEW insider.events_enriched")
    finally:
        con.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DLT_"))}
    env.update(DESTINATION__DUCKDB__CREDENTIALS=str(db), DLT_DATA_DIR=str(tmp_path / "new"),
               PYTHONPATH=str(Path(__file__).parents[1]))
    out = run_cli(env, "--models-only", "--select", "+user_summary")
    assert out.returncode == 0, out.stderr
    assert "user_summary" in out.stdout and "daily_event_counts" not in out.stdout
    assert query(db, "SELECT count(*) FROM insider.user_summary")[0][0] > 0
    assert not query(db, "SELECT 1 FROM information_schema.tables "
                         "WHERE table_name = 'events_enriched'")


# -- the Snowflake SQL, run under fakesnow ------------------------------------------------------

FAKESNOW = ["fakesnow==0.12.1", "snowflake-connector-python<5"]


def fakesnow_python() -> Path:
    """A cached virtualenv with fakesnow: it pins duckdb and sqlglot versions that conflict with
    the project's, so it cannot share our environment (about 15 s to create, once)."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = home / "insider-dlt" / "fakesnow-0.12.1"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *FAKESNOW], check=True,
                       timeout=600)
        (venv / ".ready").touch()
    return python


def test_snowflake_sql_returns_the_same_rows_under_fakesnow(warehouse: Warehouse,
                                                            tmp_path: Path) -> None:
    """fakesnow resolves quoted lower-case names that real Snowflake would not and ignores
    TO_CHAR formats: the case of names is checked on the compiled text above; this checks that
    the Snowflake SQL computes the same rows as DuckDB."""
    con = duckdb.connect(str(warehouse.db), read_only=True)
    try:
        tables = {}
        for t in ("events", "attributes", "attributes_history"):
            path = tmp_path / f"{t}.parquet"
            con.execute(f"COPY (SELECT * FROM insider.{t}) TO '{path}' (FORMAT parquet)")
            tables[t] = str(path)
        job = {"tables": tables, "models": list(compile_models("snowflake").items()),
               "output": str(tmp_path / "out.json")}
        (tmp_path / "job.json").write_text(json.dumps(job))
        run = subprocess.run([str(fakesnow_python()), str(Path(__file__).parent /
                              "fakesnow_runner.py"), str(tmp_path / "job.json")],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        out = json.loads((tmp_path / "out.json").read_text())
        for name in MODELS:
            cur = con.execute(f"SELECT * FROM insider.{name}")
            columns = [d[0].upper() for d in cur.description]
            mine = sorted([[None if v is None else str(v) for v in r] for r in cur.fetchall()],
                          key=str)
            assert out[name]["columns"] == columns, name
            assert sorted(out[name]["rows"], key=str) == mine, name
            assert len(mine) > 10
    finally:
        con.close()


# -- errors that need the loaded schema ---------------------------------------------------------

HEADER = "-- grain: one row per test\n-- purpose: a test model\n"  # lines 1-2


def models_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    for name, sql in files.items():
        (d / f"{name}.sql").write_text(HEADER + sql)
    return d


def relations(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT table_name, table_type FROM information_schema.tables ORDER BY 1")


@pytest.mark.parametrize("files,where,pattern", [
    ({"m": "SELECT insider_id,\n  e.coupon_code\nFROM events AS e"}, "m.sql:4:3",
     r"column 'coupon_code' is not in the loaded table events \(.*campaign_id.*\)\. It is an "
     r"event parameter: add it to the 'params'"),
    ({"m": "SELECT insider_id FROM attributes WHERE loyalty_points > 3"}, "m.sql:3:41",
     r"'loyalty_points' is not in the loaded table attributes.* a user attribute"),
    ({"m": "SELECT e.*, h.* EXCLUDE (insider_id)\nFROM events AS e\n"
           "JOIN attributes_history AS h ON h.insider_id = e.insider_id"}, "m.sql:3:",
     r"columns named twice: export_id .*EXCLUDE them from one side"),
    ({"m": "-- tests: not_null(nope)\nSELECT insider_id FROM events"}, "m.sql:3:4",
     r"tests: not_null\(nope\): the model has no column 'nope' \(it has insider_id\)"),
    ({"m": "-- tests: relationships(insider_id -> attributes.user_id)\n"
           "SELECT insider_id FROM events"}, "m.sql:3:4", r"attributes has no column 'user_id'"),
])
def test_columns_a_model_cannot_have_are_refused_before_building(
    warehouse: Warehouse, tmp_path: Path, files: dict[str, str], where: str, pattern: str
) -> None:
    from insider_source.transform import ModelError

    db = copy_of(warehouse, tmp_path)
    before = relations(db)
    with pytest.raises(ModelError) as e:
        run_models(pipeline_for(db), models_dir=models_dir(tmp_path, files))
    assert where in str(e.value), str(e.value)
    assert re.search(pattern, e.value.message), e.value.message
    assert e.value.exit_code == 2
    assert relations(db) == before, "nothing was built"


def test_failing_tests_fail_the_run_with_sample_rows_and_skip_what_depends_on_it(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    from insider_source.transform import ModelRunError

    db = copy_of(warehouse, tmp_path)
    d = models_dir(tmp_path, {
        "names": "-- materialized: table\n"
                 "-- tests: unique(event_name), accepted_values(event_name: purchase, "
                 "email_open), not_null(event_name)\nSELECT event_name FROM events",
        "after_names": "SELECT * FROM names",
        "elsewhere": "-- materialized: table\n-- unique_key: insider_id\n"
                     "SELECT insider_id, COUNT(*) AS events FROM events GROUP BY insider_id",
        "broken": "-- materialized: table\nSELECT CAST(event_name AS INTEGER) AS n FROM events"})
    lines: list[str] = []
    with pytest.raises(ModelRunError) as e:
        run_models(pipeline_for(db), models_dir=d, log=lines.append)
    assert e.value.exit_code == 1
    failed = {f.model: f for f in e.value.failures}
    assert set(failed) == {"names", "broken"}
    text = str(e.value)
    assert "2 of 3 tests failed" in text
    assert re.search(r"unique\(event_name\): 3 failing row\(s\), e.g. \('\w+', \d+\)", text)
    assert re.search(r"accepted_values\(event_name: purchase, email_open\): 1 failing row\(s\), "
                     r"e.g. \('session_start', \d+\)", text)
    assert failed["names"].skipped == ("after_names",)
    assert "the warehouse refused it" in text and "Conversion Error" in text
    assert [r.name for r in e.value.results] == ["elsewhere"]
    assert e.value.results[0].tests_passed == 2  # unique_key: unique + not_null
    assert any(line.startswith("model elsewhere: table") for line in lines), lines
    assert query(db, "SELECT count(*) FROM insider.elsewhere")[0][0] > 100
    assert not query(db, "SELECT 1 FROM information_schema.tables "
                         "WHERE table_name = 'after_names'")


def test_models_need_a_loaded_pipeline(tmp_path: Path) -> None:
    from insider_source.transform import ModelError

    with pytest.raises(ModelError, match="has loaded no tables yet: run the daily job first"):
        run_models(pipeline_for(tmp_path / "empty.duckdb"))
