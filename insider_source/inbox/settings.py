"""Settings of the webhook inbox, read from dlt config in section ``[insider_inbox]``.

Keys (env vars ``INSIDER_INBOX__<KEY>``; lists also as JSON strings):

| key | default |
| --- | --- |
| ``dir`` | ``insider_inbox`` (relative to the working directory) |
| ``secret`` | required, secret, 24+ URL-safe characters (``.dlt/secrets.toml``) |
| ``host``, ``port`` | ``127.0.0.1``, ``8080`` |
| ``path_prefix`` | ``/insider-hook`` |
| ``allowed_networks`` | ``[]`` (any source address) |
| ``allowed_hosts`` | ``DEFAULT_ALLOWED_HOSTS`` |
| ``allow_http``, ``allow_private_addresses`` | ``false`` (local testing only) |
| ``max_body_bytes`` | ``65536`` |
| ``trusted_proxy`` | none (the load balancer's address) |

``inbox_dir`` and ``url_policy`` need no secret: the daily job reads the store and re-checks
delivered URLs with them. ``load_service_config`` validates everything the service needs and
raises ``ConfigError`` (one problem) or ``ConfigErrors`` (several), naming field, value and fix;
the secret is shown as ``<hidden>``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import dlt

from insider_source.exceptions import ConfigError, ConfigErrors
from insider_source.inbox.app import MIN_SECRET_LENGTH, InboxConfig
from insider_source.inbox.policy import DEFAULT_ALLOWED_HOSTS, UrlPolicy

SECTION = "insider_inbox"
DEFAULT_DIR = "insider_inbox"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_PATH_PREFIX = "/insider-hook"
DEFAULT_MAX_BODY_BYTES = 65536
MAX_BODY_BYTES_LIMIT = 16 << 20
HIDDEN = "<hidden>"

_SECRET = re.compile(r"^[A-Za-z0-9._~-]+$")  # URL path characters that need no escaping
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_HOST_PATTERN = re.compile(r"^[a-z0-9*?._:\[\]-]+$")


def inbox_dir() -> Path:
    """The inbox directory (``[insider_inbox] dir``), absolute."""
    errors: list[ConfigError] = []
    path = _dir(_get("dir"), errors)
    _raise(errors)
    return path


def url_policy() -> UrlPolicy:
    """The policy delivered URLs must pass, from ``allowed_hosts``, ``allow_http`` and
    ``allow_private_addresses``."""
    errors: list[ConfigError] = []
    policy = _policy(errors)
    _raise(errors)
    return policy


def load_service_config() -> tuple[InboxConfig, dict[str, Any]]:
    """Everything the service needs, validated.

    Returns:
        The ``InboxConfig`` and ``{"host", "port", "trusted_proxy"}`` for ``serve``.

    Raises:
        ConfigError: one bad or missing value (``ConfigErrors`` for several).
    """
    errors: list[ConfigError] = []
    directory = _dir(_get("dir"), errors)
    secret = _secret(dlt.secrets.get(f"{SECTION}.secret"), errors)
    host = _host(_get("host"), errors)
    port = _int("port", _get("port"), DEFAULT_PORT, 1, 65535, errors)
    prefix = _path_prefix(_get("path_prefix"), errors)
    networks = _networks(_get("allowed_networks"), errors)
    policy = _policy(errors)
    max_body = _int("max_body_bytes", _get("max_body_bytes"), DEFAULT_MAX_BODY_BYTES, 1024,
                    MAX_BODY_BYTES_LIMIT, errors)
    proxy = _trusted_proxy(_get("trusted_proxy"), networks, errors)
    _raise(errors)
    cfg = InboxConfig(directory=directory, secret=secret, path_prefix=prefix,
                      allowed_networks=networks, url_policy=policy, max_body_bytes=max_body)
    return cfg, {"host": host, "port": port, "trusted_proxy": proxy}


# -- single fields -------------------------------------------------------------------------------


def _get(key: str) -> Any:
    return dlt.config.get(f"{SECTION}.{key}")


def _field(key: str) -> str:
    return f"{SECTION}.{key}"


def _raise(errors: list[ConfigError]) -> None:
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _dir(value: Any, errors: list[ConfigError]) -> Path:
    if _blank(value):
        return Path(DEFAULT_DIR).absolute()
    if not isinstance(value, str):
        errors.append(ConfigError(_field("dir"), value, "dir is a directory path, e.g. "
                                  'dir = "/var/lib/insider_inbox".'))
        return Path(DEFAULT_DIR).absolute()
    return Path(value.strip()).expanduser().absolute()


def _secret(value: Any, errors: list[ConfigError]) -> str:
    fix = (f"set [{SECTION}] secret in .dlt/secrets.toml (or INSIDER_INBOX__SECRET) to a random "
           f"string of at least {MIN_SECRET_LENGTH} URL-safe characters (letters, digits, "
           "'-', '_', '.', '~'); `python pipelines/webhook.py --print-secret-suggestion` "
           "makes one.")
    if _blank(value):
        errors.append(ConfigError(_field("secret"), HIDDEN, "the secret is missing: " + fix))
        return ""
    secret = str(value).strip()
    if len(secret) < MIN_SECRET_LENGTH:
        errors.append(ConfigError(_field("secret"), HIDDEN,
                                  f"the secret has {len(secret)} characters: " + fix))
    elif not _SECRET.match(secret):
        errors.append(ConfigError(_field("secret"), HIDDEN,
                                  "the secret is part of the hook URL path: " + fix))
    return secret


def _host(value: Any, errors: list[ConfigError]) -> str:
    if _blank(value):
        return DEFAULT_HOST
    if not isinstance(value, str) or any(c.isspace() for c in value.strip()):
        errors.append(ConfigError(_field("host"), value, "host is the address to listen on, e.g. "
                                  'host = "127.0.0.1" (or "0.0.0.0" behind a load balancer).'))
        return DEFAULT_HOST
    return value.strip()


def _int(key: str, value: Any, default: int, low: int, high: int,
         errors: list[ConfigError]) -> int:
    if _blank(value):
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        n = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        errors.append(ConfigError(_field(key), value,
                                  f"{key} is a whole number, e.g. {key} = {default}."))
        return default
    if not low <= n <= high:
        errors.append(ConfigError(_field(key), value, f"{key} must be from {low} to {high}."))
        return default
    return n


def _bool(key: str, value: Any, errors: list[ConfigError]) -> bool:
    if _blank(value):
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    errors.append(ConfigError(_field(key), value, f"{key} is true or false."))
    return False


def _list(key: str, value: Any, example: str, errors: list[ConfigError]) -> list[Any] | None:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [
                v.strip() for v in text.split(",") if v.strip()]
        except ValueError:
            errors.append(ConfigError(_field(key), value,
                                      f"{key} is a list, e.g. {key} = {example}."))
            return None
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(ConfigError(_field(key), value, f"{key} is a list of strings, e.g. "
                                  f"{key} = {example}."))
        return None
    return [v.strip() for v in value]


def _path_prefix(value: Any, errors: list[ConfigError]) -> str:
    if _blank(value):
        return DEFAULT_PATH_PREFIX
    prefix = str(value).strip().rstrip("/")
    if not _PREFIX.match(prefix) or prefix == "/healthz":
        errors.append(ConfigError(_field("path_prefix"), value,
                                  "path_prefix is a URL path of plain segments other than "
                                  f'/healthz, e.g. path_prefix = "{DEFAULT_PATH_PREFIX}".'))
        return DEFAULT_PATH_PREFIX
    return prefix


def _networks(value: Any, errors: list[ConfigError]) -> tuple[str, ...]:
    if _blank(value):
        return ()
    items = _list("allowed_networks", value, '["10.0.0.0/8", "192.168.1.0/24"]', errors)
    networks = []
    for i, item in enumerate(items or []):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=True)))
        except ValueError:
            fix = "each entry is a network in CIDR notation, e.g. \"10.0.0.0/8\""
            try:
                fix += f"; did you mean {str(ipaddress.ip_network(item, strict=False))!r}?"
            except ValueError:
                fix += "."
            errors.append(ConfigError(f"{_field('allowed_networks')}[{i}]", item, fix))
    return tuple(networks)


def _policy(errors: list[ConfigError]) -> UrlPolicy:
    raw_hosts = _get("allowed_hosts")
    hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    if not _blank(raw_hosts):
        items = _list("allowed_hosts", raw_hosts, '["insider-data-export.useinsider.com"]',
                      errors)
        if items is not None:
            bad = [h for h in items if not _HOST_PATTERN.match(h.lower())]
            if not items or bad:
                errors.append(ConfigError(_field("allowed_hosts"), raw_hosts,
                                          "allowed_hosts is a non-empty list of hostname "
                                          'patterns, e.g. ["insider-data-export.useinsider.com",'
                                          ' "*.s3.amazonaws.com"]; remove the key for the '
                                          "defaults."))
            else:
                hosts = tuple(h.lower() for h in items)
    return UrlPolicy(allowed_hosts=hosts,
                     allow_http=_bool("allow_http", _get("allow_http"), errors),
                     allow_private=_bool("allow_private_addresses",
                                         _get("allow_private_addresses"), errors))


def _trusted_proxy(value: Any, networks: tuple[str, ...],
                   errors: list[ConfigError]) -> str | None:
    if _blank(value):
        return None
    proxy = str(value).strip()
    if proxy == "*":
        if networks:
            errors.append(ConfigError(_field("trusted_proxy"), value,
                                      "with trusted_proxy = \"*\" any sender can forge "
                                      "X-Forwarded-For and pass allowed_networks: give the load "
                                      "balancer's address instead."))
        return proxy
    try:
        ipaddress.ip_address(proxy)
    except ValueError:
        errors.append(ConfigError(_field("trusted_proxy"), value,
                                  "trusted_proxy is the IP address your load balancer connects "
                                  'from, e.g. trusted_proxy = "10.0.0.5".'))
        return None
    return proxy
