"""SQL models: built on simulator data in real DuckDB and checked against values computed here in
Python from the raw tables (never by the same SQL); compiled for Snowflake and BigQuery and
re-parsed; and the runner's errors (bad SQL, unknown table, cycle, non-portable constructs,
failing tests) each named with file:line:col.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import dlt
import pytest
import sqlglot

from insider_source.transform import ModelError, ModelRunError, compile_models, run_models
from tests.conftest import cli_env, query, run_cli, run_inprocess
from tests.test_e2e import DAY1

pytestmark = pytest.mark.e2e

DAY2 = DAY1 + dt.timedelta(days=1)
MODELS = {"events_enriched", "events_enriched_asof", "user_summary", "daily_event_counts"}


def pipeline_for(db: Path) -> dlt.Pipeline:
    return dlt.pipeline("insider_daily", destination=dlt.destinations.duckdb(str(db)),
                        dataset_name="insider")


def rows(db: Path, sql: str) -> list[dict[str, Any]]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


@pytest.fixture
def two_days(sim: Any, tmp_path: Path) -> tuple[Path, dlt.Pipeline]:
    """Two daily loads (two attribute snapshots, overlapping event windows), models built after
    each, the second time incrementally."""
    db = tmp_path / "w.duckdb"
    run_inprocess(sim, db, DAY1)
    first = {r.name: r for r in run_models(pipeline_for(db))}
    assert first["events_enriched_asof"].materialization == "incremental (full refresh)"
    run_inprocess(sim, db, DAY2)
    second = {r.name: r for r in run_models(pipeline_for(db))}
    assert second["events_enriched_asof"].materialization.startswith("incremental (since")
    assert set(second) == MODELS and all(r.tests_passed >= 3 for r in second.values())
    return db, pipeline_for(db)


def test_events_enriched_has_each_event_once_with_its_users_current_attributes(
    two_days: tuple[Path, dlt.Pipeline]
) -> None:
    db, _ = two_days
    events = rows(db, "SELECT * FROM insider.events")
    attrs = {a["insider_id"]: a for a in rows(db, "SELECT * FROM insider.attributes")}
    assert len(events) > 300 and attrs
    expected = sorted(
        (e["insider_id"], e["event_name"], e["timestamp"], e["product_id"],
         (attrs.get(e["insider_id"]) or {}).get("email"),
         (attrs.get(e["insider_id"]) or {}).get("custom_loyalty_tier"))
        for e in events)
    got = sorted(tuple(r.values()) for r in rows(
        db, "SELECT insider_id, event_name, timestamp, product_id, email, custom_loyalty_tier "
            "FROM insider.events_enriched"))
    assert got == expected
    assert any(x[4] is not None for x in expected), "attributes were joined"


def test_events_enriched_asof_picks_the_snapshot_valid_at_the_event(
    two_days: tuple[Path, dlt.Pipeline]
) -> None:
    db, _ = two_days
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for h in rows(db, "SELECT * FROM insider.attributes_history"):
        history[h["insider_id"]].append(h)
    expected = []
    for e in rows(db, "SELECT * FROM insider.events"):
        mine = history[e["insider_id"]]
        valid = [h for h in mine if h["snapshot_at"] <= e["timestamp"]]
        if valid:  # the latest snapshot at or before the event
            snap, first = max(valid, key=lambda h: h["snapshot_at"]), False
        else:  # before the first snapshot: that first one
            snap, first = min(mine, key=lambda h: h["snapshot_at"]) if mine else None, True
        expected.append((e["insider_id"], e["event_name"], e["timestamp"],
                         snap["snapshot_at"] if snap else None, first,
                         snap["email"] if snap else None))
    got = [tuple(r.values()) for r in rows(
        db, "SELECT insider_id, event_name, timestamp, attributes_snapshot_at, "
            "attributes_from_first_snapshot, email FROM insider.events_enriched_asof")]
    assert sorted(got, key=str) == sorted(expected, key=str)
    flags = Counter(x[4] for x in expected)
    assert flags[True] > 0 and flags[False] > 0, "both rules are exercised"


def test_incremental_run_equals_a_full_refresh(two_days: tuple[Path, dlt.Pipeline]) -> None:
    db, pipeline = two_days
    sql = "SELECT * FROM insider.events_enriched_asof ORDER BY ALL"
    incremental = query(db, sql)
    [result] = run_models(pipeline, select=["events_enriched_asof"], full_refresh=True)
    assert result.materialization == "incremental (full refresh)"
    assert query(db, sql) == incremental
    assert len(incremental) == query(db, "SELECT count(*) FROM insider.events")[0][0]


def test_user_summary_matches_python(two_days: tuple[Path, dlt.Pipeline]) -> None:
    db, _ = two_days
    events = rows(db, "SELECT * FROM insider.events")
    attrs = {a["insider_id"]: a for a in rows(db, "SELECT * FROM insider.attributes")}
    per_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        per_user[e["insider_id"]].append(e)
    got = {r["insider_id"]: r for r in rows(db, "SELECT * FROM insider.user_summary")}
    assert set(got) == set(per_user)
    for uid, evs in per_user.items():
        r = got[uid]
        assert r["first_event_at"] == min(e["timestamp"] for e in evs)
        assert r["last_event_at"] == max(e["timestamp"] for e in evs)
        assert r["events"] == len(evs)
        assert r["active_days"] == len({e["event_date"] for e in evs})
        types = Counter(e["event_name"] for e in evs)
        assert r["events_by_type"] == ", ".join(f"{k}:{v}" for k, v in sorted(types.items()))
        buys = [e for e in evs if e["event_name"] == "purchase"]
        assert r["purchases"] == len(buys)
        revenue: dict[str, float] = defaultdict(float)
        for b in buys:
            revenue[b["currency"] or "?"] += b["unit_price"] * (b["quantity"] or 1)
        if buys:
            shown = dict(p.split(":") for p in r["revenue_by_currency"].split(", "))
            assert set(shown) == set(revenue)
            for cur, amount in revenue.items():
                want = Decimal(repr(amount)).quantize(Decimal("0.01"), ROUND_HALF_UP)
                assert abs(Decimal(shown[cur]) - want) <= Decimal("0.01")
        else:
            assert r["revenue_by_currency"] is None
        assert r["email"] == (attrs.get(uid) or {}).get("email")


def test_daily_event_counts_match_python(two_days: tuple[Path, dlt.Pipeline]) -> None:
    db, _ = two_days
    events = rows(db, "SELECT insider_id, event_name, event_date FROM insider.events")
    first_day: dict[str, dt.date] = {}
    for e in events:
        first_day[e["insider_id"]] = min(first_day.get(e["insider_id"], e["event_date"]),
                                         e["event_date"])
    groups: dict[tuple[dt.date, str], list[str]] = defaultdict(list)
    for e in events:
        groups[(e["event_date"], e["event_name"])].append(e["insider_id"])
    expected = sorted(
        (day, name, len(users), len(set(users)),
         len({u for u in users if first_day[u] == day}))
        for (day, name), users in groups.items())
    got = query(db, "SELECT event_date, event_name, events, users, new_users "
                    "FROM insider.daily_event_counts ORDER BY ALL")
    assert got == expected
    assert any(x[4] for x in expected) and any(x[3] > x[4] for x in expected)


def test_every_model_compiles_for_each_warehouse_and_parses_back(
    two_days: tuple[Path, dlt.Pipeline]
) -> None:
    db, _ = two_days
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        for name, sql in compile_models("duckdb").items():
            con.execute(f"EXPLAIN {sql}")  # a parse is not enough: DuckDB plans it
            assert '"insider"."events"' in sql or '"insider"."attributes"' in sql, name
    finally:
        con.close()
    for dialect in ("snowflake", "bigquery"):
        compiled = compile_models(dialect)
        assert set(compiled) == MODELS
        for name, sql in compiled.items():
            sqlglot.parse_one(sql, read=dialect)
            if dialect == "snowflake":
                assert '"INSIDER"."EVENTS"' in sql or '"INSIDER"."ATTRIBUTES"' in sql
                lower = re.findall(r'"([A-Za-z0-9_]*[a-z][A-Za-z0-9_]*)"', sql)
                assert not lower, f"{name}: lower-case quoted identifiers {lower}"
            else:
                assert "`insider`.`events`" in sql or "`insider`.`attributes`" in sql
                assert " EXCLUDE " not in sql, "BigQuery spells it EXCEPT"


def test_compile_command_prints_sql_for_each_dialect(tmp_path: Path) -> None:
    import os

    for dialect in ("snowflake", "bigquery"):
        out = run_cli(dict(os.environ), "--compile", dialect)
        assert out.returncode == 0, out.stderr
        for name in MODELS:
            assert f"-- {name} ({dialect})" in out.stdout
        statements = [s for s in out.stdout.split(";\n") if s.strip()]
        assert len(statements) == len(MODELS)
        for stmt in statements:
            sqlglot.parse_one(stmt, read=dialect)


def test_models_only_with_select_builds_the_model_and_what_it_needs(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    env = cli_env(sim, db, initial_start_date=None)
    assert run_cli(env).returncode == 0
    out = run_cli(env, "--models-only", "--select", "+user_summary")
    assert out.returncode == 0, out.stderr
    assert "user_summary" in out.stdout and "daily_event_counts" not in out.stdout
    assert query(db, "SELECT count(*) FROM insider.user_summary")[0][0] > 0


# -- errors -------------------------------------------------------------------------------------

def model_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    for name, sql in files.items():
        (d / f"{name}.sql").write_text(sql)
    return d


@pytest.mark.parametrize("files,pattern", [
    ({"bad": "-- materialized: table\nSELECT insider_id\nFROM events WHERE (event_name = 'x'"},
     r"bad\.sql:3:\d+: SQL does not parse"),
    ({"lost": "-- materialized: view\n\nSELECT * FROM nowhere"},
     r"lost\.sql:3:15: unknown table 'nowhere'"),
    ({"a": "SELECT * FROM b", "b": "SELECT * FROM c", "c": "SELECT * FROM a"},
     r"cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"),
    ({"q": "SELECT *\nFROM insider.events"}, r"q\.sql:2:\d+: write bare table names"),
    ({"m": "SELECT epoch_ms(timestamp) AS ms FROM events"},
     r"m\.sql:1:\d+: epoch_ms.*TO_TIMESTAMP"),
    ({"m": "SELECT date_trunc('week', timestamp) FROM events"}, r"week truncation"),
    ({"m": "SELECT TRY_CAST(quantity AS INT) FROM events"}, r"TRY_CAST.*Snowflake"),
    ({"m": "SELECT CAST(unit_price AS DECIMAL(38, 12)) FROM events"}, r"DECIMAL\(38, 12\)"),
    ({"m": 'SELECT "custom.gift_wrap" FROM events'}, r"custom_gift_wrap"),
    ({"m": "SELECT sketchy_fn(insider_id) FROM events"}, r"unknown function sketchy_fn"),
    ({"m": "SELECT insider_id FROM events UNION ALL BY NAME SELECT insider_id FROM attributes"},
     r"BY NAME is DuckDB only"),
    ({"m": "-- materialized: snapshot\nSELECT 1"}, r"materialized: 'snapshot'"),
    ({"m": "-- materialized: incremental\nSELECT * FROM events"}, r"time_column"),
])
def test_bad_models_are_refused_with_file_line_col(
    sim: Any, tmp_path: Path, files: dict[str, str], pattern: str
) -> None:
    db = tmp_path / "w.duckdb"
    run_inprocess(sim, db, DAY1)
    tables_before = query(db, "SELECT table_name FROM information_schema.tables ORDER BY 1")
    with pytest.raises(ModelError) as e:
        run_models(pipeline_for(db), models_dir=model_dir(tmp_path, files))
    assert re.search(pattern, str(e.value)), str(e.value)
    assert e.value.exit_code == 2
    assert query(db, "SELECT table_name FROM information_schema.tables ORDER BY 1") == \
        tables_before, "nothing was built"


def test_a_failing_model_test_fails_the_run_with_sample_rows(sim: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    run_inprocess(sim, db, DAY1)
    d = model_dir(tmp_path, {"names": (
        "-- materialized: table\n"
        "-- tests: unique(event_name), accepted_values(event_name: purchase, email_open)\n"
        "SELECT event_name FROM events")})
    with pytest.raises(ModelRunError) as e:
        run_models(pipeline_for(db), models_dir=d)
    text = str(e.value)
    assert "2 of 2 tests failed" in text and "unique(event_name)" in text
    assert "session_start" in text, "a failing row is shown"
    assert e.value.exit_code == 1


# -- the Snowflake output, run under fakesnow ---------------------------------------------------

FAKESNOW = ["fakesnow==0.12.1", "snowflake-connector-python<5"]


def fakesnow_python() -> Path:
    """A cached virtualenv with fakesnow (its duckdb/sqlglot pins conflict with ours)."""
    import os
    import subprocess
    import sys

    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = home / "insider-dlt" / "fakesnow-0.12.1"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *FAKESNOW], check=True,
                       timeout=600)
        (venv / ".ready").touch()
    return python


def test_snowflake_sql_returns_the_same_rows_under_fakesnow(
    two_days: tuple[Path, dlt.Pipeline], tmp_path: Path
) -> None:
    import json
    import subprocess

    import duckdb

    db, _ = two_days
    con = duckdb.connect(str(db), read_only=True)
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
        for name in sorted(MODELS):
            cur = con.execute(f"SELECT * FROM insider.{name}")
            columns = [d[0].upper() for d in cur.description]
            mine = sorted([[None if v is None else str(v) for v in r] for r in cur.fetchall()],
                          key=str)
            assert out[name]["columns"] == columns, name
            assert sorted(out[name]["rows"], key=str) == mine, name
            assert len(mine) > 10
    finally:
        con.close()
