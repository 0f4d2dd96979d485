"""Portability lint: refuse what would mean something else, or fail, on another warehouse.

Models are written once in DuckDB's dialect and transpiled by sqlglot. sqlglot translates syntax,
not meaning: some constructs come out valid but different (week boundaries, rounding, time zones,
division by zero), others come out invalid on one warehouse. Each rule below names the construct,
what goes wrong where, and the portable form; ``lint`` raises the first hit as a ``ModelError``
at its file, line and column. The rules apply whatever the destination, so a model that builds on
DuckDB builds the same on Snowflake and BigQuery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from insider_source.transform.model import NAME_RE, Model, Node

T = exp.DataType.Type
EPOCH_ZERO = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"
WEEK_UNITS = {"WEEK", "WEEKS", "ISOWEEK", "WEEKOFYEAR", "YEARWEEK", "WEEKDAY", "DOW",
              "DAYOFWEEK", "ISODOW", "DAYOFWEEKISO"}
NUMERIC_TYPES = {T.TINYINT, T.SMALLINT, T.INT, T.BIGINT, T.INT128, T.UTINYINT, T.USMALLINT,
                 T.UINT, T.UBIGINT, T.DOUBLE, T.FLOAT, T.DECIMAL}
# Functions sqlglot knows but writes as something another warehouse lacks or reads otherwise.
NOT_PORTABLE: dict[type[Node], str] = {
    exp.Median: "MEDIAN() / QUANTILE(): BigQuery has no exact percentile aggregate (only "
                "PERCENTILE_CONT as a window function): compute it downstream",
    exp.PercentileCont: "PERCENTILE_CONT as an aggregate does not exist on BigQuery (window "
                        "function only): compute it downstream",
    exp.PercentileDisc: "PERCENTILE_DISC as an aggregate does not exist on BigQuery (window "
                        "function only): compute it downstream",
    exp.Quantile: "QUANTILE(): no portable equivalent: compute it downstream",
    exp.SplitPart: "SPLIT_PART() does not exist on BigQuery: use REGEXP_EXTRACT(s, '^(?:[^,]*,)"
                   "{n}([^,]*)') or keep the parts in separate columns",
    exp.TimeToStr: "strftime()/format strings differ per warehouse (Snowflake TO_CHAR, BigQuery "
                   "FORMAT_TIMESTAMP vs FORMAT_DATE): use DATE_TRUNC('month', ts), EXTRACT(...) "
                   "or CAST(ts AS DATE) and format in the BI tool",
    exp.TimeToUnix: f"epoch() becomes TIME_TO_UNIX on BigQuery, which does not exist: write "
                    f"DATE_DIFF('second', {EPOCH_ZERO}, ts)",
}
CLOCK = ("depends on when the model runs (and CURRENT_DATE on the session's time zone: "
         "America/Los_Angeles by default on Snowflake), so an incremental run and a full "
         "refresh differ: derive it from the data, e.g. (SELECT MAX(timestamp) FROM events)")


@dataclass(frozen=True)
class Rule:
    name: str
    check: Callable[[Node], str | None]
    keyword: str | None = None  # where to point when sqlglot kept no position for the node


def lint(model: Model) -> None:
    """Raise a ModelError at the first non-portable construct of ``model``."""
    for node in model.tree.walk():
        for rule in RULES:
            problem = rule.check(node)
            if problem:
                keyword = rule.keyword
                if isinstance(node, exp.DataType) and keyword is None:
                    keyword = node.sql("duckdb").split("(")[0]
                raise model.error(node, problem, keyword)


def _unknown_function(node: Node) -> str | None:
    if not isinstance(node, exp.Anonymous):
        return None
    name = str(node.name).upper()
    if name in ("NOW", "TODAY", "GET_CURRENT_TIMESTAMP", "TRANSACTION_TIMESTAMP"):
        return f"{name}() {CLOCK}"
    if name.startswith("EPOCH_"):
        return (f"{name}(): sqlglot cannot translate it: for timestamps write "
                f"DATE_DIFF('microsecond', {EPOCH_ZERO}, ts) (or 'second', 'millisecond')")
    return (f"unknown function {node.name}(): sqlglot does not know it, so it would be copied "
            "as is to Snowflake and BigQuery, where it may not exist or mean something else: "
            "use a standard SQL function (COALESCE, CASE, DATE_TRUNC('day', ...), EXTRACT, "
            "DATE_DIFF, STRING_AGG, ...)")


def _epoch_ms(node: Node) -> str | None:
    if not isinstance(node, exp.UnixToTime):
        return None
    arg = node.this
    numeric = isinstance(arg, exp.Literal) and not arg.is_string or (
        isinstance(arg, exp.Cast) and arg.to.this in NUMERIC_TYPES)
    if numeric:
        return None  # numbers -> timestamp: sqlglot translates it faithfully
    return ("epoch_ms()/to_timestamp() of a value of unknown type: DuckDB's epoch_ms(timestamp) "
            "returns milliseconds, but sqlglot translates every epoch_ms() as milliseconds -> "
            f"timestamp. Timestamp -> milliseconds: DATE_DIFF('millisecond', {EPOCH_ZERO}, ts); "
            "milliseconds -> timestamp: epoch_ms(CAST(ms AS BIGINT))")


def _week(node: Node) -> str | None:
    unit: Node | str | None = None
    if isinstance(node, exp.TimestampTrunc | exp.DateTrunc | exp.Extract):
        unit = node.args.get("unit") if not isinstance(node, exp.Extract) else node.this
    elif isinstance(node, exp.Week | exp.WeekOfYear | exp.DayOfWeek | exp.DayOfWeekIso):
        unit = "WEEK"
    text = (unit.name if isinstance(unit, Node) else str(unit or "")).upper()
    if text not in WEEK_UNITS:
        return None
    return ("weeks and weekdays differ per warehouse (weeks start on Monday in DuckDB, Sunday in "
            "BigQuery, per WEEK_START in Snowflake; weekday numbers differ too): write "
            "DATE_DIFF('day', DATE '2001-01-01', CAST(ts AS DATE)) with FLOOR(... / 7) for a "
            "Monday-based week number or MOD(..., 7) for the weekday (0 = Monday)")


def _try_cast(node: Node) -> str | None:
    if isinstance(node, exp.TryCast):
        return ("TRY_CAST accepts only text on Snowflake (and fails on numbers or timestamps): "
                "use CAST, or CASE WHEN <check> THEN CAST(...) END for values that may not "
                "convert")
    return None


def _decimal(node: Node) -> str | None:
    if not isinstance(node, exp.DataType) or node.this not in (T.DECIMAL, T.BIGDECIMAL):
        return None
    params = [int(p.name) for p in node.expressions if p.name.isdigit()]
    if params == [38, 9]:
        return None
    shown = f"DECIMAL({', '.join(map(str, params))})" if params else "DECIMAL"
    return (f"{shown}: on BigQuery it becomes NUMERIC, which is always DECIMAL(38, 9) (sqlglot "
            "drops the precision and scale), so values are not rounded the same: round "
            "explicitly with ROUND(x, n) and use DOUBLE, or DECIMAL(38, 9) for an exact type")


def _naive_timestamp(node: Node) -> str | None:
    if isinstance(node, exp.DataType) and node.this in (
            T.TIMESTAMP, T.TIMESTAMPNTZ, T.DATETIME, T.TIMESTAMP_S, T.TIMESTAMP_MS, T.TIMESTAMP_NS):
        return ("TIMESTAMP without time zone is TIMESTAMP_NTZ (or per TIMESTAMP_TYPE_MAPPING) on "
                "Snowflake and DATETIME on BigQuery, which does not compare with the loaded UTC "
                "timestamps: use TIMESTAMPTZ (e.g. TIMESTAMPTZ '2026-01-01 00:00:00+00'), or DATE")
    return None


def _dotted_identifier(node: Node) -> str | None:
    if isinstance(node, exp.Identifier) and "." in node.name:
        return (f'quoted dotted name "{node.name}": dlt stores {node.name} as '
                f"{node.name.replace('.', '_')}; use that name")
    return None


def _identifier_case(node: Node) -> str | None:
    if not isinstance(node, exp.Identifier) or "." in node.name or NAME_RE.match(node.name):
        return None
    return (f"identifier {node.name!r}: write names in lower snake_case, as dlt stores them "
            "(Snowflake upper-cases every name; a mixed-case or quoted special name becomes a "
            "different column per warehouse)")


def _asof_join(node: Node) -> str | None:
    if isinstance(node, exp.Join) and str(node.args.get("method") or "").upper() == "ASOF":
        return ("ASOF JOIN does not exist on BigQuery (and has other syntax on Snowflake): join "
                "on a validity range instead (LEAD() over the history for valid_to, then "
                "ts >= valid_from AND ts < valid_to)")
    return None


def _union_by_name(node: Node) -> str | None:
    if isinstance(node, exp.SetOperation) and node.args.get("by_name"):
        return ("UNION ... BY NAME is DuckDB only: list the same columns in the same order in "
                "every branch and use UNION ALL")
    return None


def _filter_clause(node: Node) -> str | None:
    if isinstance(node, exp.Filter):
        return ("an aggregate FILTER (WHERE ...) clause does not exist on BigQuery: write "
                "COUNT(CASE WHEN <condition> THEN 1 END) or SUM(CASE WHEN <condition> THEN x END)")
    return None


def _division(node: Node) -> str | None:
    if isinstance(node, exp.IntDiv):
        return ("integer division // becomes CAST(a / b AS INT) on Snowflake, which rounds "
                "(DuckDB truncates): write TRUNC(a / b), or FLOOR(a / b)")
    if not isinstance(node, exp.Div):
        return None
    den = node.expression
    while isinstance(den, exp.Paren):
        den = den.this
    if isinstance(den, exp.Literal) and not den.is_string and float(den.name or 0) != 0:
        return None
    if isinstance(den, exp.Nullif):
        return None
    return ("division by a value that may be 0: DuckDB returns inf or NULL, Snowflake and "
            "BigQuery fail the whole query: write a / NULLIF(b, 0)")


def _qualify_alone(node: Node) -> str | None:
    select = node.parent
    if isinstance(node, exp.Qualify) and isinstance(select, exp.Select) and not any(
            select.args.get(k) for k in ("where", "group", "having")):
        return ("QUALIFY without WHERE, GROUP BY or HAVING is refused by BigQuery: add "
                "WHERE TRUE before it")
    return None


def _clock(node: Node) -> str | None:
    if isinstance(node, exp.CurrentDate | exp.CurrentTimestamp | exp.CurrentTime
                  | exp.CurrentDatetime):
        return f"{node.sql('duckdb')} {CLOCK}"
    return None


def _not_portable(node: Node) -> str | None:
    for kind, message in NOT_PORTABLE.items():
        if type(node) is kind:
            return message
    if isinstance(node, exp.Extract) and str(node.this.name).upper() == "EPOCH":
        return (f"EXTRACT(EPOCH FROM ...) does not exist on BigQuery: write "
                f"DATE_DIFF('second', {EPOCH_ZERO}, ts)")
    return None


RULES: tuple[Rule, ...] = (
    Rule("unknown function", _unknown_function),
    Rule("epoch_ms", _epoch_ms, keyword="epoch_ms"),
    Rule("week", _week),
    Rule("try_cast", _try_cast, keyword="TRY_CAST"),
    Rule("decimal", _decimal),
    Rule("naive timestamp", _naive_timestamp),
    Rule("dotted name", _dotted_identifier),
    Rule("identifier case", _identifier_case),
    Rule("asof join", _asof_join, keyword="ASOF"),
    Rule("union by name", _union_by_name, keyword="UNION"),
    Rule("filter clause", _filter_clause, keyword="FILTER"),
    Rule("division", _division),
    Rule("qualify", _qualify_alone, keyword="QUALIFY"),
    Rule("clock", _clock, keyword="CURRENT_"),
    Rule("not portable", _not_portable),
)
