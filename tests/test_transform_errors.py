"""The model runner refuses what it cannot build faithfully, before building anything, with
``file:line:col`` and the fix: SQL that does not parse, unknown or qualified tables, cycles, bad
headers and tests, and every portability rule. These need no warehouse (``compile_models``);
errors that need the loaded schema (unknown columns, failing tests) are in test_models.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from insider_source.exceptions import ConfigError
from insider_source.transform import ModelError, compile_models

HEADER = "-- grain: one row per test\n-- purpose: a test model\n"  # lines 1-2


def project(tmp_path: Path, files: dict[str, str], header: bool = True) -> Path:
    d = tmp_path / "models"
    d.mkdir(exist_ok=True)
    for name, sql in files.items():
        (d / f"{name}.sql").write_text((HEADER if header else "") + sql)
    return d


def refused(tmp_path: Path, files: dict[str, str], dialect: str = "duckdb",
            header: bool = True) -> ModelError:
    with pytest.raises(ModelError) as e:
        compile_models(dialect, models_dir=project(tmp_path, files, header))
    assert e.value.exit_code == 2
    assert str(e.value).startswith(f"{e.value.path}:{e.value.line}:{e.value.col}: ")
    return e.value


def test_sql_that_does_not_parse_is_refused_where_it_breaks(tmp_path: Path) -> None:
    e = refused(tmp_path, {"bad": "SELECT insider_id\nFROM events WHERE (event_name = 'x'"})
    assert (e.path.name, e.line) == ("bad.sql", 4)
    assert "does not parse" in e.message


def test_an_unknown_table_is_refused_at_its_name(tmp_path: Path) -> None:
    e = refused(tmp_path, {"lost": "SELECT *\nFROM events AS e\n  JOIN nowhere AS n USING "
                                   "(insider_id)"})
    assert (e.path.name, e.line, e.col) == ("lost.sql", 5, 8)
    assert "unknown table 'nowhere'" in e.message and "attributes_history" in e.message


def test_a_cycle_is_refused_with_its_path(tmp_path: Path) -> None:
    e = refused(tmp_path, {"a": "SELECT * FROM b", "b": "SELECT *\nFROM c", "c": "SELECT * FROM a"})
    assert re.search(r"cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)", e.message)
    assert "b reads c at b.sql:4:6" in e.message and "a reads b at a.sql:3:15" in e.message
    assert (e.line, e.col) in ((3, 15), (4, 6))


@pytest.mark.parametrize("sql,line,col,pattern", [
    ("SELECT * FROM b_is_me", 3, 15, r"reads itself"),
    ("SELECT *\nFROM insider.events", 4, 6, r"write the bare table name \(events\)"),
    ("SELECT * FROM read_parquet('x.parquet')", 3, 15, r"by name only"),
    ("WITH events AS (SELECT 1 AS x) SELECT x FROM events\nJOIN nope ON TRUE", 4, 6,
     r"unknown table 'nope'"),  # a CTE named events is not the table; nope is unknown
])
def test_tables_a_model_cannot_read(tmp_path: Path, sql: str, line: int, col: int,
                                    pattern: str) -> None:
    e = refused(tmp_path, {"b_is_me": sql})
    assert re.search(pattern, e.message), e.message
    assert (e.line, e.col) == (line, col), str(e)


# -- portability --------------------------------------------------------------------------------

@pytest.mark.parametrize("select,pattern,col", [
    ("epoch_ms(timestamp)", r"DATE_DIFF\('millisecond'", 8),
    ("epoch(timestamp)", r"TIME_TO_UNIX", 8),
    ("EXTRACT(EPOCH FROM timestamp)", r"EXTRACT\(EPOCH", None),
    ("date_trunc('week', timestamp)", r"weeks and weekdays differ", 8),
    ("dayofweek(timestamp)", r"weeks and weekdays differ", None),
    ("EXTRACT(isodow FROM timestamp)", r"weeks and weekdays differ", None),
    ("TRY_CAST(quantity AS BIGINT)", r"TRY_CAST accepts only text on Snowflake", 8),
    ("CAST(unit_price AS DECIMAL(18, 2))", r"DECIMAL\(18, 2\).*ROUND", 27),
    ("CAST(unit_price AS DECIMAL)", r"DECIMAL\(18, 3\)", None),
    ('"custom.gift_wrap"', r"custom_gift_wrap", 8),
    ('"Insider_Id"', r"lower snake_case", 8),
    ("sketchy_fn(insider_id)", r"unknown function sketchy_fn", 8),
    ("now()", r"depends on when the model runs", 8),
    ("current_date", r"depends on when the model runs", 8),
    ("quantity / unit_price", r"NULLIF", 8),
    ("quantity // 2", r"TRUNC\(a / b\)", None),
    ("CAST('2026-01-01' AS TIMESTAMP)", r"TIMESTAMPTZ", 29),
    ("TIMESTAMP '2026-01-01 00:00:00'", r"TIMESTAMPTZ", None),
    ("COUNT(*) FILTER (WHERE quantity > 1)", r"FILTER", None),
    ("median(unit_price)", r"MEDIAN", 8),
    ("split_part(tags, ',', 1)", r"SPLIT_PART", 8),
    ("strftime(timestamp, '%Y-%m')", r"DATE_TRUNC\('month'", 8),
])
def test_non_portable_constructs_are_refused_with_the_portable_form(
    tmp_path: Path, select: str, pattern: str, col: int | None
) -> None:
    e = refused(tmp_path, {"m": f"SELECT {select} AS x\nFROM events"})
    assert re.search(pattern, e.message), e.message
    assert e.line == 3
    if col is not None:
        assert e.col == col, str(e)


@pytest.mark.parametrize("sql,pattern,line,col", [
    ("SELECT * FROM events ASOF JOIN attributes_history AS h\n"
     "  ON events.insider_id = h.insider_id AND events.timestamp >= h.snapshot_at",
     r"ASOF JOIN", 3, 22),
    ("SELECT insider_id FROM events\nUNION ALL BY NAME SELECT insider_id FROM attributes",
     r"BY NAME is DuckDB only", 4, 1),
    ("SELECT insider_id FROM events\nQUALIFY ROW_NUMBER() OVER (PARTITION BY insider_id "
     "ORDER BY timestamp) = 1", r"WHERE TRUE", 4, 1),
])
def test_non_portable_query_shapes(tmp_path: Path, sql: str, pattern: str, line: int,
                                   col: int) -> None:
    e = refused(tmp_path, {"m": sql})
    assert re.search(pattern, e.message), e.message
    assert (e.line, e.col) == (line, col), str(e)


def test_portable_forms_that_the_messages_propose_compile_everywhere(tmp_path: Path) -> None:
    d = project(tmp_path, {"ok": (
        "SELECT\n"
        "  DATE_DIFF('millisecond', TIMESTAMPTZ '1970-01-01 00:00:00+00', timestamp) AS ms,\n"
        "  epoch_ms(CAST(1700000000000 AS BIGINT)) AS ts,\n"
        "  MOD(DATE_DIFF('day', DATE '2001-01-01', CAST(timestamp AS DATE)), 7) AS weekday,\n"
        "  TRUNC(quantity / 2) AS pairs,\n"
        "  quantity / NULLIF(unit_price, 0) AS per_price,\n"
        "  ROUND(unit_price, 2) AS price,\n"
        "  CAST(unit_price AS DECIMAL(38, 9)) AS exact,\n"
        "  COUNT(CASE WHEN quantity > 1 THEN 1 END) OVER () AS multi\n"
        "FROM events\nWHERE TRUE\n"
        "QUALIFY ROW_NUMBER() OVER (PARTITION BY insider_id ORDER BY timestamp) = 1")})
    for dialect in ("duckdb", "snowflake", "bigquery"):
        assert "ok" in compile_models(dialect, models_dir=d)


def test_what_sqlglot_cannot_write_for_a_warehouse_is_refused(tmp_path: Path) -> None:
    # DuckDB sorts NULLs last, BigQuery's STRING_AGG cannot be told to: sqlglot raises
    e = refused(tmp_path, {"m": "SELECT STRING_AGG(event_name, ',' ORDER BY event_name) AS s "
                                "FROM events"}, dialect="bigquery")
    assert "cannot be written for bigquery" in e.message and "NULLS LAST" in e.message


# -- headers and tests --------------------------------------------------------------------------

@pytest.mark.parametrize("header,line,pattern", [
    ("-- purpose: p\n", 1, r"needs '-- grain: \.\.\.'"),
    ("-- grain: g\n-- purpose: p\n-- materialised: table\n", 3, r"unknown header key"),
    ("-- grain: g\n-- purpose: p\n-- materialized: snapshot\n", 3, r"'snapshot' is not one of"),
    ("-- grain: g\n-- purpose: p\n-- materialized: incremental\n", 3, r"needs '-- time_column"),
    ("-- grain: g\n-- purpose: p\n-- time_column: timestamp\n", 3,
     r"incremental models only"),
    ("-- grain: g\n-- purpose: p\n-- materialized: incremental\n-- time_column: timestamp\n"
     "-- lookback: three days\n", 5, r"'N days' or 'N hours'"),
    ("-- grain: g\n-- purpose: p\n-- tests: unique(a), not_null\n", 3, r"cannot read 'not_null'"),
    ("-- grain: g\n-- purpose: p\n-- tests: distinct(a)\n", 3, r"unknown test 'distinct'"),
    ("-- grain: g\n-- purpose: p\n-- tests: relationships(a -> b)\n", 3,
     r"relationships\(column -> table.column\)"),
    ("-- grain: g\n-- purpose: p\n-- tests: relationships(insider_id -> nowhere.id)\n", 3,
     r"'nowhere' is neither a model nor a loaded table"),
])
def test_bad_headers_are_refused_at_their_line(tmp_path: Path, header: str, line: int,
                                               pattern: str) -> None:
    e = refused(tmp_path, {"m": header + "SELECT insider_id FROM events"}, header=False)
    assert re.search(pattern, e.message), e.message
    assert e.line == line


def test_a_header_value_may_continue_and_carry_a_note(tmp_path: Path) -> None:
    d = project(tmp_path, {"m": (
        "-- grain: one row\n-- purpose: a long purpose that goes on\n--   on the next line\n"
        "-- materialized: table            (view | table | incremental)\n"
        "-- tests: not_null(insider_id),\n--   unique(insider_id)\n"
        "SELECT insider_id FROM attributes")}, header=False)
    assert "m" in compile_models("duckdb", models_dir=d)


@pytest.mark.parametrize("files,pattern", [
    ({"events": "SELECT 1 AS x"}, r"name of a loaded table"),
    ({"Bad-Name": "SELECT 1 AS x"}, r"lower snake_case \(e.g. bad_name.sql\)"),
    ({"m": "SELECT 1 AS x; SELECT 2 AS y"}, r"exactly one SELECT"),
    ({"m": "DELETE FROM events"}, r"exactly one SELECT"),
])
def test_files_that_are_not_models(tmp_path: Path, files: dict[str, str], pattern: str) -> None:
    assert re.search(pattern, refused(tmp_path, files).message)


def test_an_empty_models_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelError, match="no models"):
        compile_models("duckdb", models_dir=tmp_path / "models")


# -- selection and dialects ---------------------------------------------------------------------

def test_selectors_pick_models_with_what_they_need_or_what_needs_them(tmp_path: Path) -> None:
    d = project(tmp_path, {"base": "SELECT insider_id FROM events",
                           "mid": "SELECT insider_id FROM base",
                           "top": "SELECT insider_id FROM mid",
                           "side": "SELECT insider_id FROM attributes"})

    def picked(*selectors: str) -> list[str]:
        return list(compile_models("duckdb", models_dir=d, select=list(selectors)))

    assert picked() == ["base", "mid", "side", "top"] or set(picked()) == {
        "base", "mid", "side", "top"}
    assert picked("mid") == ["mid"]
    assert picked("mid+") == ["mid", "top"]
    assert picked("+mid") == ["base", "mid"]
    assert picked("+mid+") == ["base", "mid", "top"]
    assert picked("top", "side") in (["side", "top"], ["top", "side"])
    order = picked()
    assert order.index("base") < order.index("mid") < order.index("top")
    with pytest.raises(ConfigError, match="no model 'nope'") as e:
        picked("nope+")
    assert e.value.exit_code == 2


def test_an_unknown_dialect_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="use one of duckdb, snowflake, bigquery"):
        compile_models("postgres")
