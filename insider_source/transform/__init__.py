"""SQL models: written once in DuckDB's dialect (``models/*.sql``), compiled by sqlglot for the
warehouse dlt loaded into, built and tested after each load.

model.py reads a model file (header, tests, SELECT); graph.py resolves what it reads and orders
the models; lint.py refuses non-portable SQL; compiler.py writes it for the destination;
materialize.py builds views, tables and incremental tables; checks.py runs the generic tests;
runner.py puts it together.
"""

from insider_source.transform.errors import Failure, ModelError, ModelRunError
from insider_source.transform.runner import ModelResult, compile_models, run_models

__all__ = ["Failure", "ModelError", "ModelResult", "ModelRunError", "compile_models",
           "run_models"]
