"""Compile a model (DuckDB dialect) into the SQL of the warehouse dlt loads into.

A ``Target`` comes from dlt itself: the sqlglot dialect and the identifier case folding from the
destination's capabilities, the dataset (and BigQuery's project) from the pipeline's SQL client,
so names are exactly those dlt created (``"INSIDER"."EVENTS"`` on Snowflake,
`` `insider`.`events` `` on BigQuery). ``compile_query`` qualifies every table the model reads
with the dataset, folds and quotes every identifier, and writes the target dialect with
``unsupported_level=RAISE``: sqlglot fails rather than drop what it cannot express.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel
from sqlglot.optimizer.scope import traverse_scope

from insider_source.exceptions import ConfigError
from insider_source.transform.model import Model, Node

DIALECTS = ("duckdb", "snowflake", "bigquery")


@dataclass(frozen=True)
class Target:
    """Where and how compiled SQL runs: dialect, identifier case, dataset path."""

    dialect: str  # sqlglot's
    casefold: Callable[[str], str]
    dataset: str  # folded, as stored
    catalog: str | None = None  # folded; BigQuery's project, when known

    @classmethod
    def for_destination(cls, destination: str, dataset: str) -> Target:
        """A target from dlt's capabilities of ``destination``, without a connection."""
        import dlt

        if destination not in DIALECTS:
            raise ConfigError("dialect", destination, f"use one of {', '.join(DIALECTS)}")
        caps = getattr(dlt.destinations, destination)().capabilities()
        return cls(caps.sqlglot_dialect or destination, caps.casefold_identifier,
                   caps.casefold_identifier(dataset))

    @classmethod
    def for_client(cls, client: Any) -> Target:
        """The target of an open dlt SQL client (``pipeline.sql_client()``)."""
        caps = client.capabilities
        *catalog, dataset = client.make_qualified_table_name_path(None, quote=False)
        dialect = caps.sqlglot_dialect or client.credentials.drivername
        return cls(dialect, caps.casefold_identifier, dataset, catalog[0] if catalog else None)

    def ident(self, name: str) -> exp.Identifier:
        return exp.to_identifier(self.casefold(name), quoted=True)

    def table(self, name: str) -> exp.Table:
        return exp.Table(this=self.ident(name), db=exp.to_identifier(self.dataset, quoted=True),
                         catalog=exp.to_identifier(self.catalog, quoted=True)
                         if self.catalog else None)

    def sql(self, node: Node) -> str:
        """``node`` in the target dialect (single line), e.g. a qualified table or a literal."""
        out: str = node.sql(dialect=self.dialect, unsupported_level=ErrorLevel.RAISE)
        return out


def compile_model(model: Model, target: Target) -> str:
    """The model's SELECT for ``target``."""
    try:
        return compile_query(model.tree, target, {*model.refs, *model.sources}, pretty=True)
    except sqlglot.errors.UnsupportedError as e:
        raise model.error(None, f"cannot be written for {target.dialect}: {e}") from None


def compile_query(tree: Node, target: Target, tables: Collection[str], *,
                  pretty: bool = False) -> str:
    """``tree`` (DuckDB dialect) for ``target``: the named ``tables`` qualified with the dataset
    (CTE names are left alone), identifiers folded and quoted, comments dropped."""
    tree = tree.copy()
    # the scopes' sources are the real tables, never a CTE that happens to share a name
    found = [source for scope in traverse_scope(tree) for source in scope.sources.values()
             if isinstance(source, exp.Table) and source.name in tables]
    for table in found:
        table.set("db", exp.to_identifier(target.dataset))
        if target.catalog:
            table.set("catalog", exp.to_identifier(target.catalog))
    for ident in tree.find_all(exp.Identifier):
        ident.set("this", target.casefold(ident.name))
        ident.set("quoted", True)
    out: str = tree.sql(dialect=target.dialect, identify=True, comments=False, pretty=pretty,
                        unsupported_level=ErrorLevel.RAISE)
    return out
