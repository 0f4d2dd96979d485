"""Dependencies between models, read from their SQL, and the order to build them in.

sqlglot's scope traversal tells real tables from CTEs and subqueries. Each table a model reads must
be a bare name: another model (a dependency) or a table dlt loaded (a *source*, checked against the
dlt schema, and so are the columns the model reads from it). Anything else is a ``ModelError`` at
the file, line and column of the name. ``graphlib`` orders the models; a cycle is reported as its
path, each step with the place where one model reads the next. When the loaded columns are known,
sqlglot's ``qualify`` expands each model's stars in that order to learn its output columns: a name
twice (DuckDB would quietly rename one, Snowflake and BigQuery refuse it) or a test, key or time
column the model does not have is refused before anything is built.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping

from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.schema import MappingSchema

from insider_source.exceptions import ConfigError
from insider_source.transform.errors import ModelError
from insider_source.transform.model import Model, Node

# table name -> its column names, or None where they are unknown (compiling without a pipeline)
SourceTables = Mapping[str, frozenset[str] | None]


def resolve(models: Mapping[str, Model], sources: SourceTables) -> None:
    """Fill each model's ``refs`` and ``sources``; raise on anything else it reads."""
    for name in models:
        if name in sources:
            raise ModelError(models[name].path, 1, 1,
                             f"model {name!r} has the name of a loaded table: building it would "
                             "replace that table; rename the file")
    for model in models.values():
        for scope in traverse_scope(model.tree):
            for table in _tables(scope):
                _resolve_table(model, table, models, sources)
            _check_source_columns(model, scope, sources)
        for test in model.tests:
            if test.to_table and test.to_table not in models and test.to_table not in sources:
                raise ModelError(model.path, test.line, 4,
                                 f"tests: {test}: {test.to_table!r} is neither a model nor a "
                                 "loaded table")


def _tables(scope: Scope) -> Iterable[exp.Table]:
    for source in scope.sources.values():
        if isinstance(source, exp.Table):
            yield source


def _resolve_table(model: Model, table: exp.Table, models: Mapping[str, Model],
                   sources: SourceTables) -> None:
    if not isinstance(table.this, exp.Identifier):
        raise model.error(table, f"{table.sql('duckdb')}: a model reads tables by name only "
                          "(no table functions or files): load the data with dlt first")
    if table.args.get("db") or table.args.get("catalog"):
        raise model.error(table, f"{table.sql('duckdb')}: write the bare table name "
                          f"({table.name}); the runner qualifies it with each warehouse's dataset")
    name = table.name.lower()  # DuckDB's names are case-insensitive
    where = model.where(table.this)
    if name == model.name:
        raise model.error(table.this, f"model {model.name} reads itself")
    if name in models:
        model.refs.setdefault(name, where)
    elif name in sources:
        model.sources.setdefault(name, where)
    else:
        known = ", ".join(sorted(sources)) or "none loaded yet: run the daily job first"
        raise model.error(table.this, f"unknown table {table.name!r}: not a model in "
                          f"{model.path.parent} and not a loaded table ({known})")
    table.this.set("this", name)


def _check_source_columns(model: Model, scope: Scope, sources: SourceTables) -> None:
    """Columns read from a loaded table must exist in the dlt schema. Many are optional (event
    params and attributes are configured), so say where a missing one comes from."""
    aliases = {alias.lower(): src for alias, src in scope.sources.items()}
    only = next(iter(aliases.values())) if len(aliases) == 1 else None
    selected = {e.alias_or_name.lower() for e in getattr(scope.expression, "expressions", [])}
    for column in scope.columns:
        if isinstance(column.this, exp.Star):
            continue
        if column.table:
            source = aliases.get(column.table.lower())
        elif column.name.lower() not in selected:  # not an alias reused in ORDER BY, QUALIFY...
            source = only
        else:
            continue
        if not isinstance(source, exp.Table) or source.name not in sources:
            continue
        known = sources[source.name]
        if known is not None and column.name.lower() not in known:
            raise model.error(column, _missing_column(source.name, column.name, known))


def _missing_column(table: str, column: str, known: frozenset[str]) -> str:
    hint = ""
    if table == "events":
        hint = (" It is an event parameter: add it to the 'params' of an event in the 'events' "
                "setting of [sources.insider] (custom.x loads as custom_x), or stop using it.")
    elif table in ("attributes", "attributes_history"):
        hint = (" It is a user attribute: add it to the 'attributes' setting of "
                "[sources.insider] (custom.x loads as custom_x), or stop using it.")
    columns = ", ".join(sorted(c for c in known if not c.startswith("_dlt")))
    return f"column {column!r} is not in the loaded table {table} ({columns}).{hint}"


def infer_columns(models: Mapping[str, Model], ordered: list[str], sources: SourceTables) -> None:
    """Set each model's ``columns`` (in ``ordered``, the build order); raise on duplicate output
    names and on header columns (tests, unique_key, time_column) the model does not have. A no-op
    when the loaded columns are unknown."""
    if any(columns is None for columns in sources.values()):
        return
    known: dict[str, tuple[str, ...]] = {n: tuple(sorted(c or ())) for n, c in sources.items()}
    for name in ordered:
        model = models[name]
        schema = MappingSchema({t: dict.fromkeys(cols, "TEXT") for t, cols in known.items()},
                               dialect="duckdb")
        try:
            tree = qualify(model.tree.copy(), schema=schema, dialect="duckdb",
                           validate_qualify_columns=True, quote_identifiers=False)
        except OptimizeError as e:
            raise model.error(_named_column(model, str(e)),
                              f"cannot resolve the model's columns: {e}") from None
        assert isinstance(tree, exp.Query)
        columns = [c.lower() for c in tree.named_selects]
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            star = next(iter(model.tree.find_all(exp.Star)), None)
            raise model.error(star.parent if star and star.parent else None,
                              f"the model has columns named twice: {', '.join(twice)} (e.g. from "
                              "two t.*): DuckDB would rename one (x_1), Snowflake and BigQuery "
                              "refuse the model; EXCLUDE them from one side or alias them")
        model.columns = tuple(columns)
        known[name] = model.columns
    for model in models.values():
        _check_header_columns(model, known)


def _check_header_columns(model: Model, known: Mapping[str, tuple[str, ...]]) -> None:
    have = set(model.columns or ())
    for key in ("unique_key", "time_column", "load_column"):
        column = getattr(model.config, key)
        if column and column not in have:
            raise ModelError(model.path, 1, 1, f"{key}: the model has no column {column!r} "
                             f"(it has {', '.join(model.columns or ())})")
    for test in model.tests:
        if test.column not in have:
            raise ModelError(model.path, test.line, 4, f"tests: {test}: the model has no column "
                             f"{test.column!r} (it has {', '.join(model.columns or ())})")
        if test.to_table and test.to_column not in known.get(test.to_table, ()):
            raise ModelError(model.path, test.line, 4, f"tests: {test}: {test.to_table} has no "
                             f"column {test.to_column!r}")


def _named_column(model: Model, message: str) -> Node | None:
    """The first column named in sqlglot's message, to point at it."""
    for column in model.tree.find_all(exp.Column):
        if f"'{column.name}'" in message or f"\"{column.name}\"" in message:
            return column
    return None


def order(models: Mapping[str, Model]) -> list[str]:
    """Model names, each after the models it reads; a cycle is a ModelError showing its path."""
    sorter = graphlib.TopologicalSorter({n: set(m.refs) for n, m in sorted(models.items())})
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as e:
        # graphlib lists the cycle so that each node is a dependency of the next: reversed,
        # each model reads the next one
        path = list(reversed(e.args[1]))
        steps = [f"{a} reads {b} at {models[a].path.name}:{':'.join(map(str, models[a].refs[b]))}"
                 for a, b in zip(path, path[1:], strict=False)]
        first = models[path[0]]
        line, col = first.refs[path[1]]
        raise ModelError(first.path, line, col,
                         f"models read each other in a cycle: {' -> '.join(path)} ("
                         + "; ".join(steps) + "). Break it: one of them must not read the next"
                         ) from None


def select_models(models: Mapping[str, Model], selectors: list[str] | None) -> list[str]:
    """Names to build, in dependency order. ``NAME``; ``NAME+``: and every model downstream of
    it; ``+NAME``: and every model it needs (upstream); ``+NAME+``: both."""
    ordered = order(models)
    if not selectors:
        return ordered
    upstream = {n: set(m.refs) for n, m in models.items()}
    downstream = _downstream_edges(models)
    chosen: set[str] = set()
    for raw in selectors:
        name = raw.strip().strip("+")
        if name not in models:
            raise ConfigError("--select", raw, f"there is no model {name!r}; models: "
                              f"{', '.join(sorted(models))} (NAME, NAME+ for it and what "
                              "depends on it, +NAME for it and what it needs)")
        chosen.add(name)
        if raw.strip().endswith("+"):
            chosen |= _reach(name, downstream)
        if raw.strip().startswith("+"):
            chosen |= _reach(name, upstream)
    return [n for n in ordered if n in chosen]


def downstream_of(models: Mapping[str, Model], name: str) -> set[str]:
    """Every model that reads ``name``, directly or through other models."""
    return _reach(name, _downstream_edges(models))


def _downstream_edges(models: Mapping[str, Model]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {n: set() for n in models}
    for n, m in models.items():
        for r in m.refs:
            edges[r].add(n)
    return edges


def _reach(start: str, edges: Mapping[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
