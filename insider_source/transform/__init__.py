"""SQL models: written once in DuckDB's dialect (``models/*.sql``), compiled by sqlglot for the
destination dlt loaded into, built after each load. See project.py (discovery, dependencies),
compiler.py (lint, compile) and runner.py (materialize, test)."""

from insider_source.transform.errors import ModelError, ModelRunError
from insider_source.transform.runner import ModelResult, compile_models, run_models

__all__ = ["ModelError", "ModelResult", "ModelRunError", "compile_models", "run_models"]
