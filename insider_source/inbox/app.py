"""The webhook inbox as a plain WSGI application, served by waitress.

Routes: ``GET /healthz`` answers 200 for load balancers; ``POST {path_prefix}/{secret}`` takes a
delivery; everything else is 404. A delivery passes, in this order, each check before the next
(the first failure answers 4xx, logs one WARNING and stores nothing):

1. source address in ``allowed_networks`` (when set), else 403;
2. the secret path segment (``hmac.compare_digest`` of sha256 digests), else 403;
3. the ``ref`` query parameter, if any, is ``[A-Za-z0-9._-]{1,64}``, else 400;
4. Content-Length present (411), a number (400), at most ``max_body_bytes`` (413, unread);
5. the body is UTF-8 JSON: exactly ``{"url": str}`` (Raw Export v1) or a final v2 manifest
   (``completed``/``failed``/``rejected``, shape checked by ``client.validate_status``), else 400;
6. every URL in it passes ``cfg.url_policy``, else 422.

Then it is stored with ``Inbox.put`` (fsynced) before the 200 answer, so an answered delivery is
never lost. The service never fetches a delivered URL. Nothing it logs or answers contains the
secret or a URL's query (the signature): paths are logged as ``{prefix}/***`` and URLs through
``redact_url``. Any unexpected exception answers 500 and logs a redacted traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from insider_source.client import redact_url, validate_status
from insider_source.exceptions import ManifestError
from insider_source.inbox.policy import UrlPolicy
from insider_source.inbox.store import Inbox

log = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 24
FINAL_STATUSES = ("completed", "failed", "rejected")
HEALTH_PATH = "/healthz"
_REF = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_QUERY_IN_TEXT = re.compile(r"\?[^\s\"'<>]*")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class InboxConfig:
    """What the service needs; ``settings.load_service_config`` builds it from dlt config.

    Attributes:
        directory: the inbox directory (see ``Inbox``).
        secret: the shared secret, the last path segment of the hook URL; 24+ characters.
        path_prefix: the hook path before the secret.
        allowed_networks: CIDRs the sender must be in; empty accepts any source address.
        url_policy: rules every delivered URL must pass.
        max_body_bytes: larger bodies are refused with 413.
    """

    directory: Path
    secret: str
    path_prefix: str = "/insider-hook"
    allowed_networks: tuple[str, ...] = ()
    url_policy: UrlPolicy = field(default_factory=UrlPolicy)
    max_body_bytes: int = 65536

    def __repr__(self) -> str:  # never show the secret
        return (f"InboxConfig(directory={str(self.directory)!r}, secret='***', "
                f"path_prefix={self.path_prefix!r}, allowed_networks={self.allowed_networks!r})")


class Reject(Exception):
    """A refused request: its HTTP status and the reason shown to the sender and logged."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_STATUS_TEXT = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
                411: "Length Required", 413: "Content Too Large", 422: "Unprocessable Content",
                500: "Internal Server Error"}


def make_app(cfg: InboxConfig, inbox: Inbox | None = None) -> WSGIApp:
    """Build the WSGI application.

    Args:
        cfg: the service configuration.
        inbox: the store; by default ``Inbox(cfg.directory)``.

    Raises:
        ValueError: a short secret, a bad path prefix or a bad CIDR.
    """
    if not isinstance(cfg.secret, str) or len(cfg.secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"the inbox secret must have at least {MIN_SECRET_LENGTH} characters")
    prefix = cfg.path_prefix.rstrip("/")
    if not prefix.startswith("/") or prefix == HEALTH_PATH:
        raise ValueError(f"path_prefix must start with '/' and not be {HEALTH_PATH}")
    networks = [ipaddress.ip_network(n, strict=False) for n in cfg.allowed_networks]
    store = inbox if inbox is not None else Inbox(cfg.directory)
    secret_digest = hashlib.sha256(cfg.secret.encode()).digest()
    handler = _Handler(cfg, store, prefix, networks, secret_digest)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            status, body = handler.handle(environ)
        except Exception:  # noqa: BLE001 - a request never takes the service down
            log.error("inbox: internal error on %s %s from %s\n%s",
                      environ.get("REQUEST_METHOD"), handler.safe_path(environ),
                      environ.get("REMOTE_ADDR"), handler.redact(traceback.format_exc()))
            status, body = 500, {"error": "internal error"}
        payload = json.dumps(body).encode()
        start_response(f"{status} {_STATUS_TEXT.get(status, '')}".rstrip(), [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
        ])
        return [payload]

    return app


class _Handler:
    def __init__(self, cfg: InboxConfig, inbox: Inbox, prefix: str,
                 networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
                 secret_digest: bytes) -> None:
        self.cfg = cfg
        self.inbox = inbox
        self.prefix = prefix
        self.networks = networks
        self.secret_digest = secret_digest

    def handle(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "") or "/"
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            return 200, {"ok": True}
        if method != "POST" or not (path == self.prefix or path.startswith(self.prefix + "/")):
            return self.refuse(environ, Reject(404, "not found"))
        try:
            return self.accept(environ, path)
        except Reject as r:
            return self.refuse(environ, r)

    def accept(self, environ: dict[str, Any], path: str) -> tuple[int, dict[str, Any]]:
        remote = environ.get("REMOTE_ADDR") or ""
        self.check_source(remote)
        candidate = path[len(self.prefix) + 1:]
        digest = hashlib.sha256(candidate.encode("utf-8", "surrogateescape")).digest()
        if not hmac.compare_digest(digest, self.secret_digest):
            raise Reject(403, "missing or wrong secret in the hook path")
        ref = self.ref(environ.get("QUERY_STRING", ""))
        body = self.body(environ)
        if set(body) == {"url"}:
            url = body["url"]
            if not isinstance(url, str):
                raise Reject(400, "'url' must be a string")
            self.check_url(url, "url")
            delivery, new = self.inbox.put("v1", url=url, ref=ref, remote=remote)
            what = f"v1 file link {redact_url(url)} ref={ref or '-'}"
        elif "export_id" in body and "status" in body:
            export_id = self.export_id(body.get("export_id"))
            try:
                validate_status(body, export_id)
            except ManifestError as e:
                raise Reject(400, f"invalid v2 manifest: {e}") from None
            if body["status"] not in FINAL_STATUSES:
                raise Reject(400, f"status {body['status']!r} is not a final result (expected "
                                  f"one of {', '.join(FINAL_STATUSES)})")
            files = body.get("files")
            for kind, entries in (files.items() if isinstance(files, dict) else ()):
                for i, entry in enumerate(entries if isinstance(entries, list) else ()):
                    if isinstance(entry, dict):
                        self.check_url(entry.get("url"), f"files.{kind}[{i}].url")
            delivery, new = self.inbox.put("v2", manifest=body, remote=remote)
            what = f"v2 manifest of export {export_id!r} status={body['status']}"
        else:
            keys = ", ".join(sorted(repr(k)[:40] for k in body)[:10]) or "none"
            raise Reject(400, "expected {\"url\": ...} (Raw Export v1) or a v2 manifest with "
                              f"export_id and status; got keys {keys}")
        log.info("inbox: %s %s from %s (key %s)", "stored" if new else "duplicate of stored",
                 what, remote, delivery.key[:12])
        return 200, {"ok": True, "key": delivery.key, "duplicate": not new}

    # -- checks ----------------------------------------------------------------------------------

    def check_source(self, remote: str) -> None:
        if not self.networks:
            return
        try:
            address = ipaddress.ip_address(remote.split("%")[0])
        except ValueError:
            raise Reject(403, "source address is not an IP address") from None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not any(address in n for n in self.networks):
            raise Reject(403, f"source address {address} is not in allowed_networks")

    def ref(self, query: str) -> str | None:
        try:
            values = parse_qs(query, keep_blank_values=True, strict_parsing=False).get("ref")
        except ValueError:
            raise Reject(400, "query string does not parse") from None
        if values is None:
            return None
        if len(values) != 1 or not _REF.match(values[0]):
            raise Reject(400, "'ref' must appear once and be 1-64 of [A-Za-z0-9._-]")
        return values[0]

    def body(self, environ: dict[str, Any]) -> dict[str, Any]:
        length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
        if not length_text:
            raise Reject(411, "Content-Length is required")
        if not length_text.isdigit():
            raise Reject(400, "Content-Length is not a number")
        length = int(length_text)
        if length > self.cfg.max_body_bytes:
            raise Reject(413, f"body larger than {self.cfg.max_body_bytes} bytes")
        raw = _read(environ["wsgi.input"], length)
        if len(raw) != length:
            raise Reject(400, "body shorter than its Content-Length")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError:
            raise Reject(400, "body is not valid UTF-8") from None
        except (ValueError, RecursionError):
            raise Reject(400, "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise Reject(400, f"body must be a JSON object, got {_json_type(data)}")
        return data

    def export_id(self, value: Any) -> str:
        if not isinstance(value, str) or not 1 <= len(value) <= 200 or not value.isprintable():
            raise Reject(400, "export_id must be a non-empty printable string")
        return value

    def check_url(self, url: Any, where: str) -> None:
        if not isinstance(url, str):
            raise Reject(400, f"{where} is not a string")
        reason = self.cfg.url_policy.check(url)
        if reason is not None:
            raise Reject(422, f"{where} refused: {reason}")

    # -- answers and logs ------------------------------------------------------------------------

    def refuse(self, environ: dict[str, Any], r: Reject) -> tuple[int, dict[str, Any]]:
        log.warning("inbox: refused %s %s from %s: %d %s", environ.get("REQUEST_METHOD"),
                    self.safe_path(environ), environ.get("REMOTE_ADDR"), r.status,
                    self.redact(r.reason))
        return r.status, {"error": r.reason}

    def safe_path(self, environ: dict[str, Any]) -> str:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith(self.prefix + "/"):
            return self.prefix + "/***"
        return self.redact(path[:120])

    def redact(self, text: str) -> str:
        text = text.replace(self.cfg.secret, "***")
        return _QUERY_IN_TEXT.sub("?<redacted>", text)


def _read(stream: Any, length: int) -> bytes:
    chunks, left = [], length
    while left > 0:
        chunk = stream.read(min(left, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def make_server(cfg: InboxConfig, host: str = "127.0.0.1", port: int = 8080,
                trusted_proxy: str | None = None, threads: int = 4,
                inbox: Inbox | None = None) -> Any:
    """A waitress server for the inbox (not yet running); ``serve`` runs one.

    With ``trusted_proxy`` (the load balancer's address, as waitress's ``trusted_proxy``), the
    sender's address is taken from its ``X-Forwarded-For`` header and that header is dropped
    when anyone else sends it, so ``allowed_networks`` sees the real sender.
    """
    import waitress

    options: dict[str, Any] = {
        "host": host, "port": port, "threads": threads,
        "max_request_body_size": cfg.max_body_bytes, "ident": "insider-inbox",
    }
    if trusted_proxy:
        options.update(trusted_proxy=trusted_proxy, trusted_proxy_headers={"x-forwarded-for"},
                       clear_untrusted_proxy_headers=True)
    return waitress.create_server(make_app(cfg, inbox), **options)


def serve(cfg: InboxConfig, host: str = "127.0.0.1", port: int = 8080,
          trusted_proxy: str | None = None, threads: int = 4) -> None:
    """Serve the inbox with waitress until interrupted (see ``make_server``)."""
    server = make_server(cfg, host, port, trusted_proxy, threads)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
