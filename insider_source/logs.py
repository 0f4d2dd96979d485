"""Logging that cannot leak secrets: the request token and signed-URL query strings are redacted.

Our own code never logs either (URLs go through ``client.redact_url``), but libraries do at DEBUG:
urllib3 logs every request line with its query string, which for a signed download URL is the
signature. ``install`` puts a filter on every root handler that rewrites such records.
"""

from __future__ import annotations

import logging
import re

_QUERY = re.compile(r"\?[^\s\"']*(?:Signature|Credential|Security-Token|token)[^\s\"']*",
                    re.IGNORECASE)


_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        text = _QUERY.sub("?<redacted>", text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:  # tracebacks carry exception texts (URLs) too
            record.exc_text = self.redact(_FORMATTER.formatException(record.exc_info))
            record.exc_info = None
        return True


def install(secrets: list[str] | None = None) -> RedactingFilter:
    """Attach (or update) the redacting filter on all root handlers."""
    root = logging.getLogger()
    for handler in root.handlers:
        for f in handler.filters:
            if isinstance(f, RedactingFilter):
                f.secrets = list({*f.secrets, *(secrets or [])})
                return f
    flt = RedactingFilter(secrets or [])
    for handler in root.handlers:
        handler.addFilter(flt)
    return flt
