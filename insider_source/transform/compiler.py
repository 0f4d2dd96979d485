"""Lint and compile a model for a warehouse.

``lint`` refuses constructs that sqlglot transpiles with a silently different meaning, or that a
target warehouse lacks, each with ``file:line:col`` and the portable form to write instead.

``compile_model`` turns the DuckDB-dialect SELECT into the target's SQL: every table qualified with
the dataset, every identifier case-folded the way dlt stores it on that destination (upper case on
Snowflake) and quoted, comments dropped, ``unsupported_level=RAISE`` so nothing is dropped quietly.
The dialect and the case folding come from dlt's destination capabilities.
"""

from __future__ import annotations

from typing import Any

import sqlglot
from dlt.common.destination.capabilities import DestinationCapabilitiesContext
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from insider_source.transform.errors import ModelError
from insider_source.transform.project import Model, position

DIALECTS = ("duckdb", "snowflake", "bigquery")


def capabilities(dialect: str) -> DestinationCapabilitiesContext:
    import dlt

    if dialect not in DIALECTS:
        raise ModelError(__import__("pathlib").Path("models"), 0, 0,
                         f"unknown dialect {dialect!r}: use one of {', '.join(DIALECTS)}")
    factory = getattr(dlt.destinations, dialect)
    caps: DestinationCapabilitiesContext = factory().capabilities()
    return caps


def lint(model: Model) -> None:
    """Raise ModelError at the first construct whose meaning is not portable."""
    for node in model.tree.walk():
        problem = _problem(node)
        if problem:
            line, col = position(node)
            raise ModelError(model.path, line, col, problem)


def _problem(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Anonymous):
        return (f"unknown function {node.name}(): sqlglot cannot translate it to other "
                "warehouses; use a standard function (COALESCE, CASE, DATE_TRUNC('day', ...), "
                "EXTRACT, STRING_AGG, ...)")
    if isinstance(node, exp.UnixToTime) and node.args.get("scale") is not None:
        return ("epoch_ms() means two things in DuckDB (milliseconds → timestamp, timestamp → "
                "milliseconds) and transpiles as the first: write TO_TIMESTAMP(ms / 1000) for "
                "milliseconds → timestamp, or CAST(EXTRACT(EPOCH FROM ts) * 1000 AS BIGINT) for "
                "timestamp → milliseconds")
    if isinstance(node, exp.TimestampTrunc | exp.DateTrunc):
        unit = node.args.get("unit")
        text = (unit.name if isinstance(unit, exp.Expression) else str(unit or "")).lower()
        if text.startswith("week"):
            return ("week truncation starts weeks on different days (DuckDB Monday, BigQuery "
                    "Sunday, Snowflake per WEEK_START): truncate to 'day' and derive the week "
                    "with EXTRACT(ISODOW FROM ...) , or aggregate weeks downstream")
    if isinstance(node, exp.TryCast):
        return ("TRY_CAST accepts only text input on Snowflake and fails on other types: use "
                "CAST, or CASE WHEN ... THEN CAST(...) END for values that may not convert")
    if isinstance(node, exp.DataType) and node.this in (exp.DataType.Type.DECIMAL,):
        params = [int(p.name) for p in node.expressions if p.name.isdigit()]
        if len(params) == 2 and (params[1] > 9 or params[0] > 38):
            return (f"DECIMAL({params[0]}, {params[1]}): BigQuery NUMERIC allows scale up to 9 "
                    "(precision 38); use DECIMAL(38, 9) or less, or DOUBLE")
    if isinstance(node, exp.Identifier) and "." in node.name:
        return (f'quoted dotted name "{node.name}": dlt stores {node.name} as '
                f"{node.name.replace('.', '_')}; use that column name")
    if isinstance(node, exp.Union) and node.args.get("by_name"):
        return ("UNION ... BY NAME is DuckDB only: list the same columns in the same order in "
                "every branch and use UNION ALL")
    if isinstance(node, exp.Join) and (node.args.get("kind") or "").upper() == "ASOF":
        return ("ASOF JOIN does not exist on BigQuery: join on a validity range instead "
                "(LEAD() over the history for valid_to, then ts >= valid_from AND ts < valid_to)")
    return None


def compile_model(model: Model, dialect: str, dataset: str,
                  caps: DestinationCapabilitiesContext | None = None) -> str:
    """The model's SELECT in ``dialect``, tables qualified with ``dataset``."""
    caps = caps or capabilities(dialect)
    fold = caps.casefold_identifier
    tree = model.tree.copy()
    for table in tree.find_all(exp.Table):
        if table.name in model.refs or table.name in model.sources:
            table.set("db", exp.to_identifier(dataset))
    for ident in tree.find_all(exp.Identifier):
        ident.set("this", fold(ident.name))
        ident.set("quoted", True)
    try:
        sql: str = tree.sql(dialect=caps.sqlglot_dialect or dialect, identify=True,
                            unsupported_level=ErrorLevel.RAISE, comments=False, pretty=True)
    except sqlglot.errors.UnsupportedError as e:
        raise ModelError(model.path, 1, 1, f"cannot be written for {dialect}: {e}") from None
    return sql


def qualified(name: str, dataset: str, caps: DestinationCapabilitiesContext,
              dialect: str) -> str:
    """``dataset.name`` as the warehouse stores it, quoted."""
    table = exp.table_(caps.casefold_identifier(name), db=caps.casefold_identifier(dataset),
                       quoted=True)
    out: str = table.sql(dialect=caps.sqlglot_dialect or dialect)
    return out


def column(name: str, caps: DestinationCapabilitiesContext, dialect: str) -> str:
    out: str = exp.to_identifier(caps.casefold_identifier(name), quoted=True).sql(
        dialect=caps.sqlglot_dialect or dialect)
    return out


def literal(value: Any, dialect: str) -> str:
    out: str = exp.convert(value).sql(dialect=dialect)
    return out
