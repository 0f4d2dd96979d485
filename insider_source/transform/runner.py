"""Build the models after a load (``run_models``) or print their SQL (``compile_models``).

``run_models``: read every model (model.py), resolve what each reads against the dlt schema and
order them (graph.py), lint them all (lint.py) and compile the selected ones for the pipeline's
destination (compiler.py): any problem stops the run before anything is built (``ModelError``,
exit 2). Then, in dependency order, each is materialized (materialize.py) and tested (checks.py).
A model that fails to build or fails a test does not stop the others, but the models downstream of
it are not built; at the end every failure is raised together (``ModelRunError``, exit 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dlt

from insider_source import settings as s
from insider_source.transform.checks import run_tests
from insider_source.transform.compiler import Target, compile_model
from insider_source.transform.errors import Failure, ModelError, ModelRunError
from insider_source.transform.graph import (
    SourceTables,
    downstream_of,
    infer_columns,
    order,
    resolve,
    select_models,
)
from insider_source.transform.lint import lint
from insider_source.transform.materialize import StatementFailed, Warehouse
from insider_source.transform.model import DEFAULT_MODELS_DIR, Model, discover

# The tables the Insider source loads, for compiling without a pipeline (columns unknown there).
SOURCE_TABLES = ("events", "attributes", "attributes_history", "exports", "exports__files")


@dataclass
class ModelResult:
    """One model built and tested."""

    name: str
    materialization: str  # view | table | incremental
    rows: int
    seconds: float
    tests_passed: int
    detail: str = ""  # what was done: "first build", "incremental since ...", "full refresh"


def load_project(models_dir: Path | None, sources: SourceTables) -> dict[str, Model]:
    """Every model, parsed, resolved against ``sources`` and linted (all before any build)."""
    models = discover(models_dir)
    resolve(models, sources)
    for model in models.values():
        lint(model)
    infer_columns(models, order(models), sources)
    return models


def loaded_tables(pipeline: dlt.Pipeline) -> dict[str, frozenset[str] | None]:
    """The tables of the pipeline's schema with their columns; restores the schema from the
    destination on a machine that has no local pipeline state yet."""
    if not pipeline.default_schema_name:
        pipeline.sync_destination()
    if not pipeline.default_schema_name:
        return {}
    return {name: frozenset(table["columns"])
            for name, table in pipeline.default_schema.tables.items()
            if not name.startswith("_dlt") and table.get("columns")}


def run_models(
    pipeline: dlt.Pipeline,
    *,
    select: list[str] | None = None,
    full_refresh: bool = False,
    models_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[ModelResult]:
    """Build the selected models (all by default) in dependency order and run their tests.

    Args:
        pipeline: the dlt pipeline that loaded the data; models go into its dataset.
        select: ``NAME``, ``NAME+`` (and what depends on it), ``+NAME`` (and what it needs).
        full_refresh: rebuild incremental models from scratch.
        models_dir: where the ``*.sql`` models are; the repository's ``models/`` by default.
        log: called with one line per model built.

    Returns:
        One ModelResult per model built, in build order.

    Raises:
        ModelError: a model cannot be built as written (exit code 2); nothing was built.
        ConfigError: an unknown ``--select`` name (exit code 2).
        ModelRunError: the warehouse refused a model or a test failed (exit code 1).
    """
    say = log or (lambda _line: None)
    tables = loaded_tables(pipeline)
    if not tables:
        raise ModelError(models_dir or DEFAULT_MODELS_DIR, 0, 0,
                         f"pipeline {pipeline.pipeline_name} has loaded no tables yet: run the "
                         "daily job first")
    models = load_project(models_dir, tables)
    names = select_models(models, select)
    results: list[ModelResult] = []
    failures: list[Failure] = []
    blocked: set[str] = set()
    with pipeline.sql_client() as client:
        warehouse = Warehouse(client, Target.for_client(client))
        # everything is compiled before anything is built: a model sqlglot cannot write for this
        # warehouse stops the run with nothing changed
        compiled = {name: compile_model(models[name], warehouse.target) for name in names}
        for name in names:
            if name in blocked:
                continue
            try:
                result = _build_and_test(warehouse, models[name], compiled[name], full_refresh)
            except _ModelFailed as e:
                skipped = sorted(downstream_of(models, name) & set(names) - blocked)
                blocked.update(skipped)
                failures.append(Failure(name, str(e), tuple(skipped)))
                say(f"model {name}: FAILED: {e}")
                continue
            results.append(result)
            say(f"model {name}: {result.detail}, {result.rows} rows, {result.tests_passed} "
                f"tests passed ({result.seconds:.2f}s)")
    if failures:
        raise ModelRunError(failures, results)
    return results


class _ModelFailed(Exception):
    pass


def _build_and_test(warehouse: Warehouse, model: Model, sql: str,
                    full_refresh: bool) -> ModelResult:
    started = time.monotonic()
    try:
        detail = warehouse.build(model, sql, full_refresh)
        rows = warehouse.count(model.name)
    except StatementFailed as e:
        raise _ModelFailed(f"the warehouse refused it ({model.path}): {e}") from None
    try:
        outcomes = run_tests(warehouse, model)
    except StatementFailed as e:
        raise _ModelFailed(f"a test could not run (does the column exist?): {e}") from None
    failed = [o for o in outcomes if o.failing]
    if failed:
        raise _ModelFailed(f"{len(failed)} of {len(outcomes)} tests failed: "
                           + " | ".join(str(o) for o in failed))
    return ModelResult(model.name, model.materialized, rows, time.monotonic() - started,
                       len(outcomes), detail)


def compile_models(dialect: str, *, dataset: str = s.DATASET_NAME,
                   models_dir: Path | None = None,
                   select: list[str] | None = None) -> dict[str, str]:
    """Each selected model's SQL for ``dialect`` (``duckdb``, ``snowflake`` or ``bigquery``), in
    build order, without a connection. Tables are qualified with ``dataset``; the columns of
    loaded tables are not checked (no schema here), everything else is.

    Raises:
        ModelError, ConfigError: as ``run_models``, before anything is compiled.
    """
    target = Target.for_destination(dialect, dataset)
    models = load_project(models_dir, dict.fromkeys(SOURCE_TABLES))
    return {n: compile_model(models[n], target) for n in select_models(models, select)}
