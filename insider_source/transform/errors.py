"""Errors of the model runner, one per phase, with the job's exit codes.

- ``ModelError`` (exit 2): a model cannot be built as written (SQL that does not parse, an unknown
  table or column, a cycle, a non-portable construct, a bad header). The message starts with
  ``file:line:col`` and says what to write instead. A configuration error: a human fixes the model.
- ``ModelRunError`` (exit 1): the warehouse refused a model that compiled, or a model's tests found
  failing rows. Carries every failure of the run and the results of the models that were built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from insider_source.exceptions import EXIT_FAILURE, ConfigError, InsiderError

if TYPE_CHECKING:
    from insider_source.transform.runner import ModelResult


class ModelError(ConfigError):
    """A model that cannot be built as written: ``file:line:col: message`` (exit 2)."""

    def __init__(self, path: Path | str, line: int, col: int, message: str) -> None:
        self.path, self.line, self.col, self.message = Path(path), line, col, message
        where = f"{path}:{line}:{col}" if line else str(path)
        # ConfigError's fields, for code that reports any configuration error generically
        self.field, self.value, self.fix = where, None, message
        Exception.__init__(self, f"{where}: {message}")


@dataclass(frozen=True)
class Failure:
    """One model that did not build or whose tests failed."""

    model: str
    problem: str
    skipped: tuple[str, ...] = ()  # models not built because they depend on this one

    def __str__(self) -> str:
        text = f"model {self.model}: {self.problem}"
        if self.skipped:
            text += f"\n    not built, as they depend on it: {', '.join(self.skipped)}"
        return text


class ModelRunError(InsiderError):
    """The warehouse refused a model, or a model's tests found failing rows (exit 1)."""

    exit_code = EXIT_FAILURE

    def __init__(self, failures: list[Failure], results: list[ModelResult] | None = None) -> None:
        self.failures = failures
        self.results = results or []
        built = ", ".join(r.name for r in self.results) or "none"
        super().__init__(
            f"{len(failures)} model(s) failed:\n"
            + "\n".join(f"  - {f}" for f in failures)
            + f"\n  built and tested: {built}")
