"""Named errors of the Insider loader, grouped by what a scheduler should do about them.

Every error carries an ``exit_code``: ``ConfigError`` (2) means a human must fix configuration or
input, ``TryLater`` (75, EX_TEMPFAIL) means re-run later and the run resumes where it stopped,
anything else (1) is a failure. Messages never contain the request token or a signed URL's query.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_TRY_LATER = 75


class InsiderError(Exception):
    """Root of all errors raised by this package."""

    exit_code = EXIT_FAILURE


class ConfigError(InsiderError):
    """Bad configuration or input: names the field, the bad value and the fix."""

    exit_code = EXIT_CONFIG

    def __init__(self, field: str, value: object, fix: str) -> None:
        self.field = field
        self.value = value
        self.fix = fix
        super().__init__(f"{field}: {value!r} is not valid. {fix}")


class ConfigErrors(ConfigError):
    """Several configuration problems found at once, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        Exception.__init__(
            self,
            f"{len(errors)} configuration problems:\n" + "\n".join(f"  - {e}" for e in errors),
        )


class MissingSettings(ConfigError):
    """Required settings are absent; says where to put them."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        keys = ", ".join(names)
        envs = ", ".join(f"SOURCES__INSIDER__{n.upper()}" for n in names)
        Exception.__init__(
            self,
            f"missing settings: {keys}. Put them under [sources.insider] in .dlt/secrets.toml "
            f"(request_token) and .dlt/config.toml (the rest), or set the environment variables "
            f"{envs}. See .dlt/example.secrets.toml, or try `python pipelines/daily.py --demo`.",
        )


class ApiError(InsiderError):
    """The Insider API answered with an error that retrying will not fix."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.server_message = message
        super().__init__(f"Insider API {method} {path} answered {status}: {message}")


class RequestRejected(ApiError):
    """A 400 on submission: the server's own message names what is wrong."""

    exit_code = EXIT_CONFIG


class AuthenticationFailed(ApiError):
    """403 (or 400 for empty credentials): partner name or request token is wrong."""

    exit_code = EXIT_CONFIG


class TryLater(InsiderError):
    """Nothing is wrong, but the work cannot finish now; the next run resumes it."""

    exit_code = EXIT_TRY_LATER


class QuotaExceeded(TryLater):
    """429 on submission: today's one export is used. Resets at 00:00 UTC."""


class StillProcessing(TryLater):
    """The export did not finish within ``max_wait_seconds``; it stays in flight."""

    def __init__(self, export_id: str, waited_seconds: float) -> None:
        self.export_id = export_id
        self.waited_seconds = waited_seconds
        super().__init__(
            f"export {export_id} still processing after {waited_seconds:.0f}s "
            f"(max_wait_seconds). It stays recorded as in flight: the next run resumes it and "
            f"submits nothing new. Re-run later, or raise max_wait_seconds."
        )


class StillWaitingForDelivery(TryLater):
    """A v1 export's file link has not reached the webhook inbox yet; it stays in flight."""


class TransientError(TryLater):
    """The API or storage kept failing with retryable errors (5xx, resets, timeouts)."""


class ExportOutcomeError(InsiderError):
    """The export ended ``failed`` or ``rejected`` on Insider's side."""

    def __init__(self, export_id: str, status: str, reason: str | None) -> None:
        self.export_id = export_id
        self.status = status
        self.reason = reason
        hint = (
            "Insider could not finish it; the next run submits the same window again."
            if status == "failed"
            else "its estimated volume exceeded Insider's limits; narrow the request "
            "(fewer events or attributes, a smaller segment, or a later initial_start_date)."
        )
        super().__init__(
            f"export {export_id} ended {status}" + (f" ({reason})" if reason else "") + f": {hint}"
        )


class ManifestError(InsiderError):
    """A status body or manifest that does not match the documented shape."""


class IntegrityError(InsiderError):
    """A downloaded file does not match its manifest (row count, columns, readability)."""

    def __init__(self, file_name: str, problem: str) -> None:
        self.file_name = file_name
        self.problem = problem
        super().__init__(f"file {file_name}: {problem}. Nothing from this export was loaded.")
