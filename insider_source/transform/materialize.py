"""Materialize compiled models in the warehouse through dlt's SQL client.

- ``view``: ``CREATE OR REPLACE VIEW``.
- ``table``: ``CREATE OR REPLACE TABLE ... AS`` (atomic on every warehouse: readers see the old
  table or the new one).
- ``incremental``: a full build (as ``table``) the first time, with ``full_refresh``, when the
  table is empty or when the model's columns changed. Otherwise the rows whose ``time_column`` is
  at or after the table's latest value minus ``lookback`` are computed once into a staging table
  ``<name>__incoming``, then in one transaction the table's rows in that window (and, with a
  ``unique_key``, the rows whose key comes again) are deleted and the staged rows inserted. With a
  ``load_column`` (the load a row came from, e.g. the event's ``export_id``), rows of a load the
  table has not seen reopen the window back to the earliest of them, so a backfill or a late load
  of an old day is picked up without ``--full-refresh``. Rows older than the window must not
  depend on data loaded later: that is the model's contract.

A relation that changes kind (a table that becomes a view) is dropped first. Warehouse errors
become ``StatementFailed`` naming the model; the runner turns them into the run's failures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlglot import exp

from insider_source.transform.compiler import Target
from insider_source.transform.model import Model, Node

STAGE_SUFFIX = "__incoming"


class StatementFailed(Exception):
    """The warehouse refused a statement; the message is the warehouse's own."""


class Warehouse:
    """The few statements the runner needs, on an open ``pipeline.sql_client()``."""

    def __init__(self, client: Any, target: Target) -> None:
        self.client = client
        self.target = target

    def table(self, name: str) -> str:
        return self.target.sql(self.target.table(name))

    def column(self, name: str) -> str:
        return self.target.sql(self.target.ident(name))

    def execute(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        try:
            rows = self.client.execute_sql(sql, *params)
        except Exception as e:  # noqa: BLE001 - any driver's error, reported with the model
            raise StatementFailed(_first_lines(str(e))) from e
        return list(rows or [])

    def columns(self, sql: str) -> list[str]:
        """Column names of a SELECT, without reading rows."""
        try:
            with self.client.execute_query(f"SELECT * FROM ({sql}) AS q WHERE 1 = 0") as cur:
                return [str(d[0]) for d in cur.description]
        except Exception as e:  # noqa: BLE001
            raise StatementFailed(_first_lines(str(e))) from e

    def kind(self, name: str) -> str | None:
        """``table``, ``view`` or None (absent), from the dataset's INFORMATION_SCHEMA."""
        folded = self.target.casefold(name)
        if self.target.dialect == "bigquery":
            dataset = ".".join(self.column(p) for p in (self.target.catalog, self.target.dataset)
                               if p)
            rows = self.execute(f"SELECT table_type FROM {dataset}.INFORMATION_SCHEMA.TABLES "
                                "WHERE table_name = %s", folded)
        else:
            rows = self.execute("SELECT table_type FROM INFORMATION_SCHEMA.TABLES "
                                "WHERE table_schema = %s AND table_name = %s",
                                self.target.dataset, folded)
        if not rows:
            return None
        return "view" if "VIEW" in str(rows[0][0]).upper() else "table"

    def drop(self, name: str, kind: str) -> None:
        self.execute(f"DROP {kind.upper()} IF EXISTS {self.table(name)}")

    def count(self, name: str) -> int:
        return int(self.execute(f"SELECT COUNT(*) FROM {self.table(name)}")[0][0])

    def build(self, model: Model, sql: str, full_refresh: bool = False) -> str:
        """Materialize ``model`` (its compiled ``sql``); returns what was done."""
        kind = self.kind(model.name)
        wanted = "view" if model.materialized == "view" else "table"
        if kind is not None and kind != wanted:
            self.drop(model.name, kind)
            kind = None
        if model.materialized == "view":
            self.execute(f"CREATE OR REPLACE VIEW {self.table(model.name)} AS\n{sql}")
            return "view"
        if model.materialized == "table":
            self._create_table(model, sql)
            return "table"
        if full_refresh or kind is None:
            self._create_table(model, sql)
            return "full refresh" if kind else "first build"
        return self._incremental(model, sql)

    def _create_table(self, model: Model, sql: str) -> None:
        self.execute(f"CREATE OR REPLACE TABLE {self.table(model.name)} AS\n{sql}")

    def _incremental(self, model: Model, sql: str) -> str:
        assert model.config.time_column
        target = self.table(model.name)
        time_col = self.column(model.config.time_column)
        have = [c.lower() for c in self.columns(f"SELECT * FROM {target}")]
        latest = self.execute(f"SELECT MAX({time_col}) FROM {target}")[0][0]
        if latest is None:
            self._create_table(model, sql)
            return "full refresh (the table was empty)"
        cutoff = latest - model.config.lookback
        detail = f"incremental since {_shown(cutoff)}"
        if model.config.load_column:
            # rows from a load the table has not seen (a backfill, a late load of an old day)
            # reopen the window back to the earliest of them
            load = self.column(model.config.load_column)
            reopen = self.execute(
                f"SELECT MIN({time_col}) FROM (\n{sql}\n) AS m WHERE {load} IS NOT NULL AND "
                f"{load} NOT IN (SELECT {load} FROM {target} WHERE {load} IS NOT NULL)")[0][0]
            if reopen is not None and reopen < cutoff:
                cutoff = reopen
                detail = f"incremental since {_shown(cutoff)} (reopened for new loads)"
        window = f"{time_col} >= {self.target.sql(_literal(cutoff))}"
        stage = self.table(model.name + STAGE_SUFFIX)
        self.execute(f"CREATE OR REPLACE TABLE {stage} AS\nSELECT * FROM (\n{sql}\n) AS m "
                     f"WHERE {window}")
        try:
            incoming = self.columns(f"SELECT * FROM {stage}")
            if [c.lower() for c in incoming] != have:
                self._create_table(model, sql)
                return "full refresh (the model's columns changed)"
            delete = f"DELETE FROM {target} WHERE {window}"
            if model.config.unique_key:
                key = self.column(model.config.unique_key)
                delete += f" OR {key} IN (SELECT {key} FROM {stage})"
            cols = ", ".join(self.column(c) for c in incoming)
            with self.client.begin_transaction():
                self.execute(delete)
                self.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}")
        finally:
            self.execute(f"DROP TABLE IF EXISTS {stage}")
        return detail


def _literal(value: Any) -> Node:
    """A typed SQL literal for a watermark read back from the warehouse."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # a naive value: the warehouse's UTC wall time
            value = value.replace(tzinfo=dt.UTC)
        return exp.cast(exp.Literal.string(value.astimezone(dt.UTC).isoformat(sep=" ")),
                        exp.DataType.Type.TIMESTAMPTZ)
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.Type.DATE)
    return exp.convert(value)


def _shown(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value.tzinfo \
            else value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _first_lines(text: str, limit: int = 800) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " ..."
