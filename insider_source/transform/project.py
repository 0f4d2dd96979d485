"""Models on disk: discovery, header config, dependencies and their order.

A model is ``models/<name>.sql``: one SELECT in DuckDB's dialect, no templating, preceded by a
header of ``-- key: value`` comment lines (a value may continue on lines that start with ``--``
and two spaces)::

    -- grain: one row per event
    -- purpose: ...
    -- materialized: view | table | incremental
    -- unique_key: insider_id
    -- time_column: timestamp          (incremental)
    -- lookback: 3 days                 (incremental)
    -- tests: unique(c), not_null(c), accepted_values(c: a, b), relationships(c -> model.col)

Dependencies come from the SQL itself: sqlglot's scope traversal separates real tables from CTE
names; a bare table name is another model, or a raw table of the dlt schema (a *source*); anything
else (qualified names, unknown tables) is an error naming ``file:line:col``. ``graphlib`` orders
the models and reports a cycle as its path.
"""

from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from insider_source.transform.errors import ModelError

MATERIALIZATIONS = ("view", "table", "incremental")
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
_HEADER = re.compile(r"^--\s*([a-z_]+)\s*:\s*(.*)$")
_TEST = re.compile(r"(unique|not_null|accepted_values|relationships)\(([^()]*)\)")


@dataclass(frozen=True)
class ModelTest:
    kind: str  # unique | not_null | accepted_values | relationships
    column: str
    values: tuple[str, ...] = ()  # accepted_values
    to_model: str | None = None  # relationships
    to_column: str | None = None

    def __str__(self) -> str:
        if self.kind == "accepted_values":
            return f"accepted_values({self.column}: {', '.join(self.values)})"
        if self.kind == "relationships":
            return f"relationships({self.column} -> {self.to_model}.{self.to_column})"
        return f"{self.kind}({self.column})"


@dataclass
class Model:
    name: str
    path: Path
    sql: str
    config: dict[str, str]
    tree: exp.Query
    refs: set[str] = field(default_factory=set)  # other models
    sources: set[str] = field(default_factory=set)  # raw tables

    @property
    def materialized(self) -> str:
        return self.config.get("materialized", "view")

    @property
    def tests(self) -> list[ModelTest]:
        return parse_tests(self.config.get("tests", ""), self.path)

    @property
    def lookback_days(self) -> int:
        text = self.config.get("lookback", "0 days").split()
        return int(text[0]) if text and text[0].isdigit() else 0


def position(node: exp.Expression) -> tuple[int, int]:
    """Line and first column of a node, from the token sqlglot kept (which records its end)."""
    for n in [node, *node.find_all(exp.Identifier)]:
        meta = n.meta if isinstance(n, exp.Identifier) else {}
        if meta.get("line"):
            width = len(n.name) + (2 if n.args.get("quoted") else 0)
            return int(meta["line"]), max(1, int(meta.get("col", 1)) - width + 1)
    return 1, 1


def parse_header(sql: str) -> dict[str, str]:
    config: dict[str, str] = {}
    key = None
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        m = _HEADER.match(line)
        if m:
            key = m.group(1)
            config[key] = m.group(2).strip()
        elif key and line.startswith("--  "):
            config[key] += " " + line[2:].strip()
    return config


def parse_tests(text: str, path: Path) -> list[ModelTest]:
    tests = []
    for kind, args in _TEST.findall(text):
        if kind == "accepted_values":
            col, _, values = args.partition(":")
            tests.append(ModelTest(kind, col.strip(),
                                   tuple(v.strip() for v in values.split(",") if v.strip())))
        elif kind == "relationships":
            col, _, target = args.partition("->")
            to_model, _, to_col = target.strip().partition(".")
            if not to_col:
                raise ModelError(path, 1, 1, f"relationships test {args!r}: write "
                                 "relationships(column -> model.column)")
            tests.append(ModelTest(kind, col.strip(), to_model=to_model, to_column=to_col))
        else:
            tests.append(ModelTest(kind, args.strip()))
    return tests


def load_model(path: Path) -> Model:
    sql = path.read_text()
    config = parse_header(sql)
    name = path.stem
    mat = config.get("materialized", "view")
    if mat not in MATERIALIZATIONS:
        raise ModelError(path, 1, 1, f"materialized: {mat!r} is not one of "
                         f"{', '.join(MATERIALIZATIONS)}")
    if mat == "incremental" and "time_column" not in config:
        raise ModelError(path, 1, 1, "an incremental model needs '-- time_column: <column>' "
                         "(and usually '-- lookback: N days')")
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.ParseError as e:
        err = e.errors[0] if e.errors else {}
        raise ModelError(path, int(err.get("line") or 1), int(err.get("col") or 1),
                         f"SQL does not parse: {err.get('description') or e}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ModelError(path, 1, 1, "a model is exactly one SELECT statement")
    return Model(name, path, sql, config, statements[0])


def discover(models_dir: Path | None = None) -> dict[str, Model]:
    root = models_dir or DEFAULT_MODELS_DIR
    models = {p.stem: load_model(p) for p in sorted(root.glob("*.sql"))}
    if not models:
        raise ModelError(root, 0, 0, "no models (*.sql) found")
    return models


def resolve(models: dict[str, Model], source_tables: set[str]) -> None:
    """Fill each model's ``refs`` and ``sources`` from its SQL; raise on anything else."""
    for model in models.values():
        for scope in traverse_scope(model.tree):
            for source in scope.sources.values():
                if not isinstance(source, exp.Table):
                    continue  # a CTE or a subquery
                name = source.name
                line, col = position(source.this)
                if source.args.get("db") or source.args.get("catalog"):
                    raise ModelError(model.path, line, col,
                                     f"write bare table names ({source.sql('duckdb')!r}): the "
                                     "runner qualifies them with the dataset of each warehouse")
                if name == model.name:
                    raise ModelError(model.path, line, col, f"model {name} selects from itself")
                if name in models:
                    model.refs.add(name)
                elif name in source_tables:
                    model.sources.add(name)
                else:
                    raise ModelError(model.path, line, col,
                                     f"unknown table {name!r}: not a model in "
                                     f"{model.path.parent} and not a loaded table "
                                     f"({', '.join(sorted(source_tables)) or 'none loaded yet'})")


def order(models: dict[str, Model]) -> list[str]:
    """Model names in dependency order; a cycle is reported as its path."""
    sorter = graphlib.TopologicalSorter({n: m.refs for n, m in models.items()})
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as e:
        cycle = list(e.args[1])
        path = " -> ".join(reversed(cycle))
        first = models[cycle[0]]
        raise ModelError(first.path, 1, 1, f"models depend on each other in a cycle: {path}") \
            from None


def select(models: dict[str, Model], selectors: list[str] | None) -> list[str]:
    """Names to build, in order: ``NAME``, ``NAME+`` (and downstream), ``+NAME`` (and upstream)."""
    ordered = order(models)
    if not selectors:
        return ordered
    downstream: dict[str, set[str]] = {n: set() for n in models}
    for n, m in models.items():
        for r in m.refs:
            downstream[r].add(n)
    chosen: set[str] = set()
    for raw in selectors:
        name = raw.strip("+")
        if name not in models:
            raise ModelError(DEFAULT_MODELS_DIR, 0, 0, f"--select {raw}: no model named {name!r} "
                             f"(models: {', '.join(sorted(models))})")
        chosen.add(name)
        if raw.endswith("+"):
            chosen |= _walk(name, downstream)
        if raw.startswith("+"):
            chosen |= _walk(name, {n: m.refs for n, m in models.items()})
    return [n for n in ordered if n in chosen]


def _walk(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
