"""Errors of the model runner, with the exit codes of the job."""

from __future__ import annotations

from pathlib import Path

from insider_source.exceptions import EXIT_CONFIG, EXIT_FAILURE, InsiderError


class ModelError(InsiderError):
    """A model that cannot be built as written: ``file:line:col: message`` (exit 2)."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: Path, line: int, col: int, message: str) -> None:
        self.path, self.line, self.col, self.message = path, line, col, message
        where = f"{path}:{line}:{col}" if line else str(path)
        super().__init__(f"{where}: {message}")


class ModelRunError(InsiderError):
    """The warehouse refused a model, or a model's test found failing rows (exit 1)."""

    exit_code = EXIT_FAILURE
