"""Build models in the warehouse after a load, and run their tests.

For each selected model, in dependency order: lint, compile for the pipeline's destination, then

- ``view``: ``CREATE OR REPLACE VIEW``;
- ``table``: ``CREATE OR REPLACE TABLE ... AS``;
- ``incremental``: the first time (or with ``full_refresh``, or when the model's columns changed)
  like ``table``; afterwards delete + insert, in one transaction, of the rows whose
  ``time_column`` is at or after the table's latest value minus ``lookback``. Rows older than
  that must not depend on data loaded later (write models that way; ``--full-refresh`` otherwise).

Then its tests run as SELECTs of failing rows (``unique``, ``not_null``, ``accepted_values``,
``relationships``); any failing row fails the run with a sample. Everything goes through
``pipeline.sql_client()``, so it runs wherever dlt loaded.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
from sqlglot import exp

from insider_source.transform.compiler import column, compile_model, lint, qualified
from insider_source.transform.errors import ModelError, ModelRunError
from insider_source.transform.project import Model, ModelTest, discover, resolve, select

SAMPLE_ROWS = 5


@dataclass
class ModelResult:
    name: str
    materialization: str  # what was done: view, table, incremental, full refresh
    rows: int
    seconds: float
    tests_passed: int


def source_tables(pipeline: dlt.Pipeline) -> set[str]:
    if not pipeline.default_schema_name:
        return set()
    return {name for name, table in pipeline.default_schema.tables.items()
            if not name.startswith("_dlt") and table.get("columns")}


def prepare(models_dir: Path | None, tables: set[str]) -> dict[str, Model]:
    models = discover(models_dir)
    resolve(models, tables)
    for model in models.values():
        lint(model)
    return models


def run_models(
    pipeline: dlt.Pipeline,
    *,
    select: list[str] | None = None,
    full_refresh: bool = False,
    models_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[ModelResult]:
    """Build the selected models (all by default) and run their tests; see the module doc."""
    say = log or (lambda _msg: None)
    tables = source_tables(pipeline)
    if not tables:
        raise ModelError(models_dir or Path("models"), 0, 0,
                         "no loaded tables yet: run the daily job first")
    models = prepare(models_dir, tables)
    names = _select(models, select)
    results = []
    with pipeline.sql_client() as client:
        builder = _Builder(pipeline, client, models)
        for name in names:
            started = time.monotonic()
            how = builder.build(models[name], full_refresh)
            rows = builder.count(name)
            passed = builder.test(models[name])
            result = ModelResult(name, how, rows, time.monotonic() - started, passed)
            say(f"model {name}: {how}, {rows} rows, {passed} tests passed "
                f"({result.seconds:.2f}s)")
            results.append(result)
    return results


def _select(models: dict[str, Model], selectors: list[str] | None) -> list[str]:
    return select(models, selectors)


class _Builder:
    def __init__(self, pipeline: dlt.Pipeline, client: Any, models: dict[str, Model]) -> None:
        self.client = client
        self.models = models
        self.caps = pipeline.destination.capabilities()
        self.dialect = self.caps.sqlglot_dialect or pipeline.destination.destination_name
        self.dataset = pipeline.dataset_name

    def q(self, name: str) -> str:
        return qualified(name, self.dataset, self.caps, self.dialect)

    def c(self, name: str) -> str:
        return column(name, self.caps, self.dialect)

    def execute(self, model: Model, sql: str) -> Any:
        try:
            return self.client.execute_sql(sql)
        except Exception as e:  # noqa: BLE001 - the warehouse's own message, with the model
            raise ModelRunError(f"model {model.name} ({model.path}): the warehouse refused it: "
                                f"{str(e).strip()[:600]}") from None

    def exists(self, name: str) -> bool:
        try:
            self.client.execute_sql(f"SELECT 1 FROM {self.q(name)} WHERE 1 = 0")
            return True
        except Exception:  # noqa: BLE001 - absent
            return False

    def columns_of(self, model: Model, sql: str) -> list[str]:
        with self.client.execute_query(f"SELECT * FROM ({sql}) AS m WHERE 1 = 0") as cur:
            return [d[0] for d in cur.description]

    def build(self, model: Model, full_refresh: bool) -> str:
        sql = compile_model(model, self.dialect, self.dataset, self.caps)
        target = self.q(model.name)
        if model.materialized == "view":
            self.execute(model, f"CREATE OR REPLACE VIEW {target} AS\n{sql}")
            return "view"
        if model.materialized == "table" or full_refresh or not self.exists(model.name):
            self.execute(model, f"CREATE OR REPLACE TABLE {target} AS\n{sql}")
            return "table" if model.materialized == "table" else "incremental (full refresh)"
        return self.incremental(model, sql, target)

    def incremental(self, model: Model, sql: str, target: str) -> str:
        time_col = self.c(model.config["time_column"])
        have = self.columns_of(model, f"SELECT * FROM {target}")
        want = self.columns_of(model, sql)
        latest = self.execute(model, f"SELECT MAX({time_col}) FROM {target}")[0][0]
        if set(have) != set(want) or latest is None:
            self.execute(model, f"CREATE OR REPLACE TABLE {target} AS\n{sql}")
            return "incremental (full refresh: columns changed or table empty)"
        cutoff = latest - dt.timedelta(days=model.lookback_days)
        since = exp.cast(exp.Literal.string(cutoff.isoformat()),
                         "TIMESTAMPTZ").sql(dialect=self.dialect)
        where = f"{time_col} >= {since}"
        cols = ", ".join(self.c(c) for c in want)
        with self.client.begin_transaction():
            self.execute(model, f"DELETE FROM {target} WHERE {where}")
            self.execute(model, f"INSERT INTO {target} ({cols})\nSELECT {cols} FROM (\n{sql}\n) "
                                f"AS m WHERE {where}")
        return f"incremental (since {cutoff:%Y-%m-%d %H:%M})"

    def count(self, name: str) -> int:
        return int(self.client.execute_sql(f"SELECT COUNT(*) FROM {self.q(name)}")[0][0])

    def test(self, model: Model) -> int:
        failures = []
        tests = model.tests
        for t in tests:
            rows = self.execute(model, self.failing_rows(model, t) + f" LIMIT {SAMPLE_ROWS}")
            if rows:
                sample = "; ".join(repr(tuple(r))[:200] for r in rows)
                failures.append(f"{t}: failing rows (up to {SAMPLE_ROWS}): {sample}")
        if failures:
            raise ModelRunError(f"model {model.name}: {len(failures)} of {len(tests)} tests "
                                "failed: " + " | ".join(failures))
        return len(tests)

    def failing_rows(self, model: Model, t: ModelTest) -> str:
        table, col = self.q(model.name), self.c(t.column)
        if t.kind == "unique":
            return (f"SELECT {col}, COUNT(*) AS n FROM {table} WHERE {col} IS NOT NULL "
                    f"GROUP BY {col} HAVING COUNT(*) > 1")
        if t.kind == "not_null":
            return f"SELECT * FROM {table} WHERE {col} IS NULL"
        if t.kind == "accepted_values":
            values = ", ".join(exp.Literal.string(v).sql(dialect=self.dialect)
                               for v in t.values)
            return f"SELECT {col} FROM {table} WHERE {col} NOT IN ({values})"
        assert t.to_model and t.to_column
        other, other_col = self.q(t.to_model), self.c(t.to_column)
        return (f"SELECT m.{col} FROM {table} AS m LEFT JOIN {other} AS o "
                f"ON m.{col} = o.{other_col} WHERE m.{col} IS NOT NULL AND o.{other_col} IS NULL")


def compile_models(dialect: str, *, dataset: str = "insider", models_dir: Path | None = None,
                   select: list[str] | None = None) -> dict[str, str]:
    """Each selected model's SQL for ``dialect`` (duckdb, snowflake, bigquery)."""
    from insider_source.transform.compiler import capabilities

    caps = capabilities(dialect)
    raw = {"events", "attributes", "attributes_history", "exports", "exports__files"}
    models = prepare(models_dir, raw)
    names = _select(models, select)
    return {n: compile_model(models[n], dialect, dataset, caps) for n in names}
