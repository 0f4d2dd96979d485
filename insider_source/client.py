"""HTTP client for Insider's Raw Export v2: one method per endpoint, no knowledge of dlt.

API calls carry ``X-PARTNER-NAME``/``X-REQUEST-TOKEN``; downloads go to the storage host through a
separate session that sends no API header. Retries use capped exponential backoff with full
jitter and honour ``Retry-After``. A submission is retried only when the server cannot have
accepted it (a 5xx answer or a connection that was never made): a retry after an ambiguous failure
could hit the daily quota and lose the export id. Downloads stream to ``<dest>.part`` and resume
with ``Range`` after a dropped connection, then are renamed into place, so a file at ``dest`` is
always complete. Logs and errors show URLs without their query string (the signature).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.exceptions import ChunkedEncodingError, ConnectionError, ConnectTimeout, Timeout

from insider_source import settings as s
from insider_source.config import Secret
from insider_source.exceptions import (
    ApiError,
    AuthenticationFailed,
    InsiderError,
    ManifestError,
    QuotaExceeded,
    RequestRejected,
    TransientError,
)
from insider_source.typing import TExportStatusBody, TManifestFile
from insider_source.window import next_quota_reset

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSPORT_ERRORS = (ConnectionError, Timeout, ChunkedEncodingError)


class ExportNotFound(ApiError):
    """404 on the status endpoint: the export id is unknown or gone."""


class DownloadUrlExpired(InsiderError):
    """The storage host refused a signed URL (403 AccessDenied): fetch fresh URLs."""


def redact_url(url: str) -> str:
    """A URL without query and fragment: signed URLs carry their signature in the query."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}{p.path}"


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2**attempt)))


class InsiderClient:
    """Raw Export v2 endpoints.

    Args:
        base_url: API root, e.g. ``https://unification.useinsider.com``.
        partner_name: lowercase partner name.
        request_token: the API token; only ever placed in the API session's headers.
        sleep: injectable for tests that script the clock.
    """

    def __init__(
        self,
        base_url: str,
        partner_name: str,
        request_token: Secret,
        *,
        max_attempts: int = s.API_MAX_ATTEMPTS,
        backoff_base: float = s.BACKOFF_BASE_SECONDS,
        backoff_max: float = s.BACKOFF_MAX_SECONDS,
        timeout: tuple[float, float] = (s.CONNECT_TIMEOUT_SECONDS, s.READ_TIMEOUT_SECONDS),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.sleep = sleep
        self._api = requests.Session()
        self._api.headers.update({
            "X-PARTNER-NAME": partner_name,
            "X-REQUEST-TOKEN": request_token.reveal(),
            "Content-Type": "application/json",
            "User-Agent": "insider-dlt/0.1",
        })
        self._storage = requests.Session()
        self._storage.headers.clear()
        self._storage.headers.update({"User-Agent": "insider-dlt/0.1"})
        # Checks each redirect of a download before it is followed (set for delivered URLs)
        self.url_check: Callable[[str], str | None] | None = None
        self._storage.hooks["response"].append(self._check_redirect)

    def close(self) -> None:
        self._api.close()
        self._storage.close()

    # -- endpoints -----------------------------------------------------------------------------

    def submit(self, body: dict[str, Any]) -> str:
        """POST a v2 export request and return its ``export_id``.

        Raises:
            RequestRejected: 400, with the server's message.
            AuthenticationFailed: wrong partner name or token.
            QuotaExceeded: 429, today's export is used; says when the quota resets.
            TransientError: the server kept failing, or the outcome is unknown.
        """
        path = s.EXPORT_PATH
        data = self._post_export(path, body)
        export_id = data.get("export_id") if isinstance(data, dict) else None
        if not isinstance(export_id, str) or not export_id:
            raise ManifestError(f"POST {path} answered 200 without an export_id: {data!r:.200}")
        return export_id

    def submit_v1(self, body: dict[str, Any]) -> None:
        """POST a v1 export request. v1 answers 200 without an id: the file link arrives later
        at the hook. Raises like ``submit``."""
        self._post_export(s.EXPORT_PATH_V1, body)

    def _post_export(self, path: str, body: dict[str, Any]) -> Any:
        for attempt in range(self.max_attempts):
            try:
                resp = self._api.post(self.base_url + path, json=body, timeout=self.timeout)
            except (ConnectTimeout, ConnectionError) as e:
                if not _never_sent(e):
                    raise TransientError(
                        f"POST {path}: the connection broke after the request was sent "
                        f"({_brief(e)}); Insider may have accepted it. The next run tries again "
                        "(a 429 then means it was accepted today)."
                    ) from None
                self._retry_wait("POST", path, attempt, _brief(e), None)
                continue
            except Timeout as e:
                raise TransientError(
                    f"POST {path}: no answer within {self.timeout[1]:.0f}s ({_brief(e)}); Insider "
                    "may have accepted the request. The next run tries again."
                ) from None
            if resp.status_code == 429:
                reset = next_quota_reset(_now())
                raise QuotaExceeded(
                    f"Insider answered 429 ({_error_message(resp)}): today's one export is used. "
                    f"The quota resets at {reset:%Y-%m-%d %H:%M} UTC; run again after that."
                )
            if resp.status_code >= 500:
                self._retry_wait("POST", path, attempt, f"HTTP {resp.status_code}", resp)
                continue
            self._raise_for_status("POST", path, resp)
            if not resp.content.strip():
                return {}
            return _json(resp, "POST", path)
        raise TransientError(f"POST {path} kept failing after {self.max_attempts} attempts; "
                             "nothing was submitted. Run again later.")

    def status(self, export_id: str) -> TExportStatusBody:
        """GET the export's status; returns the validated body.

        Raises:
            ExportNotFound: unknown or expired export id.
            ManifestError: a body that does not match the documented shape.
            TransientError: 429/5xx/transport errors beyond the retry budget.
        """
        path = f"{s.EXPORT_PATH}/{quote(export_id, safe='')}"
        for attempt in range(self.max_attempts):
            try:
                resp = self._api.get(self.base_url + path, timeout=self.timeout)
            except TRANSPORT_ERRORS as e:
                self._retry_wait("GET", path, attempt, _brief(e), None)
                continue
            if resp.status_code in RETRYABLE_STATUS:
                self._retry_wait("GET", path, attempt, f"HTTP {resp.status_code}", resp)
                continue
            if resp.status_code == 404:
                raise ExportNotFound("GET", path, 404, _error_message(resp))
            self._raise_for_status("GET", path, resp)
            return validate_status(_json(resp, "GET", path), export_id)
        raise TransientError(f"GET {path} kept failing after {self.max_attempts} attempts. "
                             "The export stays in flight; run again later.")

    def download(
        self, url: str, dest: Path, on_bytes: Callable[[int], None] | None = None
    ) -> int:
        """Stream ``url`` to ``dest`` (atomically) and return its size in bytes.

        A connection dropped mid-body resumes with ``Range`` when the host allows it, otherwise
        the file restarts. Raises DownloadUrlExpired on 403, TransientError past the budget.
        """
        shown = redact_url(url)
        part = dest.with_name(dest.name + ".part")
        pos = 0
        ranges_ok = False
        for attempt in range(s.DOWNLOAD_MAX_ATTEMPTS):
            headers = {"Range": f"bytes={pos}-"} if pos and ranges_ok else {}
            try:
                with self._storage.get(url, stream=True, timeout=self.timeout,
                                       headers=headers) as resp:
                    if resp.status_code in (401, 403):
                        raise DownloadUrlExpired(
                            f"storage refused {shown} with {resp.status_code} "
                            f"({_s3_code(resp)}): the signed URL expired or is invalid")
                    if resp.status_code in RETRYABLE_STATUS:
                        self._retry_wait("GET", shown, attempt, f"HTTP {resp.status_code}", resp)
                        continue
                    if resp.status_code not in (200, 206):
                        raise ApiError("GET", shown, resp.status_code, _s3_code(resp))
                    if resp.status_code == 200:
                        pos = 0  # the host ignored Range (or none was sent): start over
                    ranges_ok = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
                    length = resp.headers.get("Content-Length")
                    expected = pos + int(length) if length is not None else None
                    with open(part, "ab" if pos else "wb") as f:
                        for chunk in resp.iter_content(s.DOWNLOAD_CHUNK_BYTES):
                            f.write(chunk)
                            pos += len(chunk)
                            if on_bytes:
                                on_bytes(len(chunk))
                    if expected is not None and pos != expected:
                        raise ChunkedEncodingError(f"got {pos} of {expected} bytes")
            except TRANSPORT_ERRORS as e:
                pos = part.stat().st_size if part.exists() and ranges_ok else 0
                self._retry_wait("GET", shown, attempt, _brief(e), None)
                continue
            os.replace(part, dest)
            return pos
        raise TransientError(f"download of {shown} kept failing after "
                             f"{s.DOWNLOAD_MAX_ATTEMPTS} attempts; the next run resumes it.")

    # -- helpers -------------------------------------------------------------------------------

    def _check_redirect(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        """A storage redirect must pass ``url_check`` too: a URL that passed on an allowed host
        must not lead to an internal address (requests calls this before following)."""
        if self.url_check is None or not resp.is_redirect:
            return
        target = urljoin(resp.url, resp.headers.get("Location", ""))
        reason = self.url_check(target)
        if reason is not None:
            resp.close()
            raise ApiError("GET", redact_url(resp.url), resp.status_code,
                           f"redirect to {redact_url(target)} refused: {reason}")

    def _retry_wait(
        self, method: str, path: str, attempt: int, why: str, resp: requests.Response | None
    ) -> None:
        if attempt + 1 >= self.max_attempts:
            return
        delay = backoff_delay(attempt, self.backoff_base, self.backoff_max)
        retry_after = resp.headers.get("Retry-After") if resp is not None else None
        if retry_after and retry_after.strip().isdigit():
            delay = max(delay, min(float(retry_after), self.backoff_max))
        log.warning("%s %s failed (%s); retry %d in %.1fs", method, path, why, attempt + 1, delay)
        self.sleep(delay)

    def _raise_for_status(self, method: str, path: str, resp: requests.Response) -> None:
        if resp.status_code < 400:
            return
        msg = _error_message(resp)
        if resp.status_code in (401, 403):
            raise AuthenticationFailed(method, path, resp.status_code, msg + " (check "
                                       "partner_name and request_token in [sources.insider])")
        if resp.status_code == 400:
            if "partner" in msg or "token" in msg:
                raise AuthenticationFailed(method, path, 400, msg)
            raise RequestRejected(method, path, 400, msg)
        raise ApiError(method, path, resp.status_code, msg)


def validate_status(data: Any, export_id: str) -> TExportStatusBody:
    """Check a status body against the documented shape; raise ManifestError naming the gap."""
    where = f"status of export {export_id}"
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
    status = data.get("status")
    if status not in s.EXPORT_STATUSES:
        raise ManifestError(f"{where}: unknown status {status!r} (expected one of "
                            f"{', '.join(s.EXPORT_STATUSES)})")
    if status != "completed":
        return cast(TExportStatusBody, data)
    if data.get("format") not in s.FORMATS:
        raise ManifestError(f"{where}: completed without a valid format ({data.get('format')!r})")
    files = data.get("files")
    if not isinstance(files, dict):
        raise ManifestError(f"{where}: completed without 'files'")
    names: set[str] = set()
    for kind in ("attributes", "events"):
        entries = files.get(kind, [])
        if not isinstance(entries, list):
            raise ManifestError(f"{where}: files.{kind} is not a list")
        files[kind] = entries
        for i, f in enumerate(entries):
            _check_file(f, f"{where}: files.{kind}[{i}]", names)
    return cast(TExportStatusBody, data)


def _check_file(f: Any, where: str, names: set[str]) -> None:
    if not isinstance(f, dict):
        raise ManifestError(f"{where} is not an object")
    for key, typ in (("name", str), ("url", str), ("rows", int)):
        if not isinstance(f.get(key), typ) or isinstance(f.get(key), bool):
            raise ManifestError(f"{where}: missing or invalid {key!r}")
    f = cast(TManifestFile, f)
    name = f["name"]
    if "/" in name or "\\" in name or name.startswith(".") or name in names:
        raise ManifestError(f"{where}: unsafe or duplicate file name {name!r}")
    names.add(name)
    if urlsplit(f["url"]).scheme not in ("http", "https"):
        raise ManifestError(f"{where}: URL scheme {urlsplit(f['url']).scheme!r} is not http(s)")
    if f["rows"] < 0:
        raise ManifestError(f"{where}: negative rows")


def _json(resp: requests.Response, method: str, path: str) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise ApiError(method, path, resp.status_code,
                       f"answer is not JSON: {resp.text[:200]!r}") from None


def _error_message(resp: requests.Response) -> str:
    try:
        data = resp.json()
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])
    except ValueError:
        pass
    return resp.text[:200] or resp.reason or f"HTTP {resp.status_code}"


def _s3_code(resp: requests.Response) -> str:
    text = resp.text[:500]
    for tag in ("Code", "Message"):
        start = text.find(f"<{tag}>")
        if start >= 0:
            end = text.find(f"</{tag}>", start)
            return text[start + len(tag) + 2 : end]
    return f"HTTP {resp.status_code}"


def _never_sent(e: Exception) -> bool:
    """True when the connection was never established, so the request cannot have arrived."""
    if isinstance(e, ConnectTimeout):
        return True
    text = repr(e)
    return any(m in text for m in ("NewConnectionError", "Connection refused",
                                   "Name or service not known", "nodename nor servname"))


def _brief(e: Exception) -> str:
    """An exception's class and a short text with any URL query stripped."""
    text = str(e)
    cut = text.find("?")
    if cut >= 0:
        text = text[:cut] + "?…"
    return f"{type(e).__name__}: {text[:160]}"


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)
