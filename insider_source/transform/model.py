"""One model file: its header config, its generic tests and its parsed SELECT.

A model is ``models/<name>.sql``: one SELECT in DuckDB's dialect, no templating, after a header
of ``-- key: value`` comment lines (a value continues on comment lines indented by two or more
spaces)::

    -- grain: one row per user and UTC day             (required)
    -- purpose: what it is for                          (required)
    -- materialized: view | table | incremental         (default view)
    -- unique_key: insider_id                           (adds unique + not_null tests; an
    --   incremental model also replaces the rows whose key comes again)
    -- time_column: timestamp                           (incremental: required)
    -- lookback: 3 days                                 (incremental: N days | N hours)
    -- load_column: export_id                           (incremental: the load a row came from;
    --   a value the table has not seen reopens the window back to the earliest such row)
    -- tests: not_null(c), unique(c), accepted_values(c: a, b), relationships(c -> table.column)

Every problem is a ``ModelError`` at the file, line and column where it is, with the fix.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot import exp

from insider_source.transform.errors import ModelError

try:  # sqlglot 30 roots every node at Expr (a Query is not an Expression there)
    from sqlglot.expressions import Expr as Node
except ImportError:  # pragma: no cover - older sqlglot
    from sqlglot.expressions import Expression as Node  # type: ignore[assignment]

MATERIALIZATIONS = ("view", "table", "incremental")
HEADER_KEYS = ("grain", "purpose", "materialized", "unique_key", "time_column", "lookback",
               "load_column", "tests")
REQUIRED_KEYS = ("grain", "purpose")
TEST_KINDS = ("unique", "not_null", "accepted_values", "relationships")
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
# dlt's snake_case naming: the one spelling that is the same name on every warehouse
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")

_HEADER_LINE = re.compile(r"^--\s?([a-z_]+)\s*:\s*(.*)$")
_CONTINUATION = re.compile(r"^--\s{2,}(\S.*)$")
_LOOKBACK = re.compile(r"^(\d+)\s*(day|days|hour|hours)$")
_TEST_CALL = re.compile(r"\s*([a-z_]+)\s*\(([^()]*)\)\s*(,|$)")
_NOTE = re.compile(r"\s{2,}\(.*\)$")  # "table   (view | table | incremental)": a note


@dataclass(frozen=True)
class ColumnTest:
    """A generic test on one column of a model; it passes when it selects no rows."""

    kind: str  # unique | not_null | accepted_values | relationships
    column: str
    values: tuple[str, ...] = ()  # accepted_values
    to_table: str | None = None  # relationships: a model or a loaded table
    to_column: str | None = None
    line: int = 1  # of the header, for errors

    def __str__(self) -> str:
        if self.kind == "accepted_values":
            return f"accepted_values({self.column}: {', '.join(self.values)})"
        if self.kind == "relationships":
            return f"relationships({self.column} -> {self.to_table}.{self.to_column})"
        return f"{self.kind}({self.column})"


@dataclass(frozen=True)
class ModelConfig:
    grain: str
    purpose: str
    materialized: str = "view"
    unique_key: str | None = None
    time_column: str | None = None
    lookback: dt.timedelta = dt.timedelta(0)
    load_column: str | None = None
    tests: tuple[ColumnTest, ...] = ()


@dataclass
class Model:
    """A parsed model. ``refs`` (other models) and ``sources`` (loaded tables) map each table it
    reads to where it first reads it; graph.resolve fills them, graph.infer_columns ``columns``."""

    name: str
    path: Path
    sql: str
    config: ModelConfig
    tree: exp.Query
    refs: dict[str, tuple[int, int]] = field(default_factory=dict)
    sources: dict[str, tuple[int, int]] = field(default_factory=dict)
    columns: tuple[str, ...] | None = None  # output columns, when the loaded ones are known

    @property
    def materialized(self) -> str:
        return self.config.materialized

    @property
    def tests(self) -> tuple[ColumnTest, ...]:
        return self.config.tests

    def where(self, node: Node, keyword: str | None = None) -> tuple[int, int]:
        """Line and column (1-based) where ``node`` starts in the file.

        sqlglot keeps token offsets on identifiers, literals and most functions; a node without
        one (e.g. ``TRY_CAST``, a type) starts at ``keyword``, searched back from its first
        located child, else forward (a type's keyword follows the value it casts).
        """
        start = node.meta.get("start") if node.meta else None
        if start is None:
            anchor = node.parent if isinstance(node, exp.DataType) and node.parent else node
            # auto-filled parts of a type (DuckDB's DECIMAL -> DECIMAL(18, 3)) carry offsets
            # into another string: skip types
            starts = [n.meta["start"] for n in anchor.walk(
                prune=lambda n: isinstance(n, exp.DataType))
                      if n.meta and "start" in n.meta and not isinstance(n, exp.DataType)]
            start = min(starts) if starts else 0
            if keyword:
                upper, key = self.sql.upper(), keyword.upper()
                back, ahead = upper.rfind(key, 0, start + 1), upper.find(key, start)
                found = ahead if isinstance(node, exp.DataType) and ahead >= 0 or back < 0 \
                    else back
                start = found if found >= 0 else start
        return offset_to_line_col(self.sql, int(start))

    def error(self, node: Node | None, message: str,
              keyword: str | None = None) -> ModelError:
        line, col = self.where(node, keyword) if node is not None else (1, 1)
        return ModelError(self.path, line, col, message)


def offset_to_line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def discover(models_dir: Path | None = None) -> dict[str, Model]:
    """Every ``*.sql`` of the models directory, parsed, by name."""
    root = models_dir or DEFAULT_MODELS_DIR
    paths = sorted(root.glob("*.sql"))
    if not paths:
        raise ModelError(root, 0, 0, "no models (*.sql files) here")
    return {p.stem: load_model(p) for p in paths}


def load_model(path: Path) -> Model:
    sql = path.read_text(encoding="utf-8")
    name = path.stem
    if not NAME_RE.match(name):
        raise ModelError(path, 1, 1, f"model name {name!r}: name the file in lower snake_case "
                         f"(e.g. {_snake(name)}.sql), the one spelling every warehouse keeps")
    config = parse_header(path, sql)
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.ParseError as e:
        err = e.errors[0] if e.errors else {}
        line, col = int(err.get("line") or 1), int(err.get("col") or 1)
        col = max(1, col - len(str(err.get("highlight") or "x")) + 1)  # sqlglot gives the end
        raise ModelError(path, line, col,
                         f"SQL does not parse (DuckDB dialect): {err.get('description') or e}"
                         ) from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ModelError(path, 1, 1, "a model is exactly one SELECT (WITH ... SELECT allowed), "
                         "without a trailing second statement")
    return Model(name, path, sql, config, statements[0])


def parse_header(path: Path, sql: str) -> ModelConfig:
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    key: str | None = None
    for number, raw in enumerate(sql.splitlines(), start=1):
        text = raw.rstrip()
        if not text:
            key = None
            continue
        if not text.startswith("--"):
            break
        m = _HEADER_LINE.match(text)
        if m and not _CONTINUATION.match(text):
            key = m.group(1)
            if key not in HEADER_KEYS:
                raise ModelError(path, number, 4, f"unknown header key {key!r}: use "
                                 f"{', '.join(HEADER_KEYS)}")
            if key in values:
                raise ModelError(path, number, 4, f"header key {key!r} given twice")
            value = m.group(2).strip()
            if key not in ("grain", "purpose", "tests"):
                value = _NOTE.sub("", value)
            values[key], lines[key] = value, number
        elif key and (c := _CONTINUATION.match(text)):
            values[key] += " " + c.group(1).strip()
        else:
            key = None  # a plain comment
    for required in REQUIRED_KEYS:
        if not values.get(required):
            raise ModelError(path, 1, 1, f"the header needs '-- {required}: ...' (every model "
                             "documents its grain and purpose)")

    def bad(k: str, message: str) -> ModelError:
        return ModelError(path, lines[k], 4, message)

    materialized = values.get("materialized", "view")
    if materialized not in MATERIALIZATIONS:
        raise bad("materialized", f"materialized: {materialized!r} is not one of "
                  f"{', '.join(MATERIALIZATIONS)}")
    for k in ("unique_key", "time_column", "load_column"):
        if k in values and not NAME_RE.match(values[k]):
            raise bad(k, f"{k}: {values[k]!r} is not one column name in lower snake_case")
    lookback = dt.timedelta(0)
    if "lookback" in values:
        m = _LOOKBACK.match(values["lookback"])
        if not m:
            raise bad("lookback", f"lookback: {values['lookback']!r}: write 'N days' or 'N hours'")
        n = int(m.group(1))
        lookback = dt.timedelta(days=n) if m.group(2).startswith("day") else dt.timedelta(hours=n)
    if materialized == "incremental" and "time_column" not in values:
        raise ModelError(path, lines.get("materialized", 1), 4,
                         "an incremental model needs '-- time_column: <column>' (the rows from "
                         "its latest value minus '-- lookback: N days' are rebuilt each run)")
    if materialized != "incremental":
        for k in ("time_column", "lookback", "load_column"):
            if k in values:
                raise bad(k, f"{k} applies to incremental models only "
                          f"(this one is materialized as {materialized})")
    tests = parse_tests(path, values.get("tests", ""), lines.get("tests", 1))
    key = values.get("unique_key")
    if key:  # a unique key is a promise: test it
        implied = [ColumnTest("not_null", key, line=lines["unique_key"]),
                   ColumnTest("unique", key, line=lines["unique_key"])]
        tests = [*tests, *(t for t in implied if (t.kind, t.column) not in
                           {(x.kind, x.column) for x in tests})]
    return ModelConfig(grain=values["grain"], purpose=values["purpose"],
                       materialized=materialized, unique_key=key,
                       time_column=values.get("time_column"), lookback=lookback,
                       load_column=values.get("load_column"),
                       tests=tuple(tests))


def parse_tests(path: Path, text: str, line: int) -> list[ColumnTest]:
    tests: list[ColumnTest] = []
    pos = 0
    while pos < len(text):
        m = _TEST_CALL.match(text, pos)
        if not m:
            raise ModelError(path, line, 4, f"tests: cannot read {text[pos:].strip()!r}: write "
                             "a comma-separated list of " + ", ".join(f"{k}(...)" for k in
                                                                       TEST_KINDS))
        tests.append(_parse_test(path, line, m.group(1), m.group(2).strip()))
        pos = m.end()
    return tests


def _parse_test(path: Path, line: int, kind: str, args: str) -> ColumnTest:
    def bad(usage: str) -> ModelError:
        return ModelError(path, line, 4, f"tests: {kind}({args}): write {usage}")

    if kind in ("unique", "not_null"):
        if not NAME_RE.match(args):
            raise bad(f"{kind}(column)")
        return ColumnTest(kind, args, line=line)
    if kind == "accepted_values":
        column, sep, rest = args.partition(":")
        values = tuple(v.strip().strip("'\"") for v in rest.split(",") if v.strip())
        if not sep or not NAME_RE.match(column.strip()) or not values:
            raise bad("accepted_values(column: value, value, ...)")
        return ColumnTest(kind, column.strip(), values=values, line=line)
    if kind == "relationships":
        column, sep, target = args.partition("->")
        to_table, dot, to_column = target.strip().partition(".")
        if not sep or not dot or not all(NAME_RE.match(x.strip())
                                         for x in (column, to_table, to_column)):
            raise bad("relationships(column -> table.column)")
        return ColumnTest(kind, column.strip(), to_table=to_table.strip(),
                          to_column=to_column.strip(), line=line)
    raise ModelError(path, line, 4, f"tests: unknown test {kind!r}: use {', '.join(TEST_KINDS)}")


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower())
