"""Generic tests, each a SELECT of the failing rows: a test passes when it selects none.

- ``unique(c)``: values of ``c`` found more than once (NULLs are not compared);
- ``not_null(c)``: rows where ``c`` is NULL;
- ``accepted_values(c: a, b)``: rows where ``c`` (as text) is not one of the values (NULL passes:
  test ``not_null`` for that);
- ``relationships(c -> t.k)``: rows whose ``c`` has no row in ``t`` with ``k = c``.

They are written in DuckDB's dialect over bare names and compiled like models, so they run the
same on every warehouse.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from insider_source.transform.compiler import compile_query
from insider_source.transform.materialize import Warehouse
from insider_source.transform.model import ColumnTest, Model

SAMPLE_ROWS = 5


@dataclass(frozen=True)
class CheckOutcome:
    test: ColumnTest
    failing: int
    sample: list[tuple[object, ...]]

    def __str__(self) -> str:
        rows = "; ".join(repr(tuple(r))[:200] for r in self.sample)
        return (f"{self.test}: {self.failing} failing row(s), e.g. {rows}" if self.failing
                else f"{self.test}: passed")


def failing_rows_sql(model: str, test: ColumnTest) -> str:
    """The test's SELECT of failing rows, in DuckDB's dialect, over bare table names."""
    c = test.column
    if test.kind == "unique":
        return (f"SELECT {c}, COUNT(*) AS n FROM {model} WHERE {c} IS NOT NULL "
                f"GROUP BY {c} HAVING COUNT(*) > 1")
    if test.kind == "not_null":
        return f"SELECT * FROM {model} WHERE {c} IS NULL"
    if test.kind == "accepted_values":
        values = ", ".join(exp.Literal.string(v).sql("duckdb") for v in test.values)
        return (f"SELECT {c}, COUNT(*) AS n FROM {model} "
                f"WHERE CAST({c} AS VARCHAR) NOT IN ({values}) GROUP BY {c}")
    if test.kind == "relationships":
        return (f"SELECT m.{c}, COUNT(*) AS n FROM {model} AS m "
                f"LEFT JOIN {test.to_table} AS r ON m.{c} = r.{test.to_column} "
                f"WHERE m.{c} IS NOT NULL AND r.{test.to_column} IS NULL GROUP BY m.{c}")
    raise ValueError(test.kind)


def run_tests(warehouse: Warehouse, model: Model) -> list[CheckOutcome]:
    """Run every test of ``model`` (already built); returns each outcome."""
    outcomes = []
    for test in model.tests:
        tables = {model.name, *([test.to_table] if test.to_table else [])}
        tree = sqlglot.parse_one(failing_rows_sql(model.name, test), read="duckdb")
        sql = compile_query(tree, warehouse.target, tables)
        failing = int(warehouse.execute(f"SELECT COUNT(*) FROM ({sql}) AS f")[0][0])
        sample = ([tuple(r) for r in warehouse.execute(f"{sql} LIMIT {SAMPLE_ROWS}")]
                  if failing else [])
        outcomes.append(CheckOutcome(test, failing, sample))
    return outcomes
