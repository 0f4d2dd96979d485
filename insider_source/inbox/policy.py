"""Which delivered URLs the inbox accepts, and later lets the daily job download.

A delivery is authenticated by the shared secret in the hook path; this policy limits where an
accepted URL may point, so that a leaked secret or a forged manifest cannot turn the daily job
into a proxy towards internal services (SSRF). ``UrlPolicy.check`` is pure and cheap apart from
one DNS look-up, and answers ``None`` (acceptable) or a short reason:

1. the URL parses, its scheme is https (http only with ``allow_http``) and it has no userinfo;
2. its lowercase hostname matches one of ``allowed_hosts`` (``fnmatch`` patterns);
3. unless ``allow_private``: an IP literal must be a global address, and a hostname must resolve
   (``socket.getaddrinfo``) to global addresses only.

The service checks on receipt and the job checks again right before it downloads, because DNS
answers change. Reasons show at most scheme, host and path: a signed URL's query is a secret.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_ALLOWED_HOSTS = (
    "insider-data-export.useinsider.com",
    "s3.amazonaws.com",
    "*.s3.amazonaws.com",
    "s3.*.amazonaws.com",
    "*.s3.*.amazonaws.com",
)

_HOSTNAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class UrlPolicy:
    """Rules a delivered file URL must pass.

    Args:
        allowed_hosts: ``fnmatch`` patterns matched against the lowercase hostname (or IP
            literal, without brackets).
        allow_http: accept ``http://`` too; only for local testing.
        allow_private: skip the global-address check; only for local testing.
    """

    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    allow_http: bool = False
    allow_private: bool = False

    def check(self, url: str) -> str | None:
        """Return ``None`` when ``url`` is acceptable, else a short reason without its query."""
        if not isinstance(url, str) or not url:
            return "URL is not a non-empty string"
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
            return "URL contains whitespace or control characters"
        try:
            parts = urlsplit(url)
            host = parts.hostname
            port = parts.port
        except ValueError:
            return "URL does not parse"
        scheme = parts.scheme.lower()
        if scheme != "https" and not (scheme == "http" and self.allow_http):
            allowed = "https or http" if self.allow_http else "https"
            return f"URL scheme {scheme!r} is not allowed (only {allowed})"
        if "@" in parts.netloc:
            return "URL carries user info (user:password@)"
        if not host:
            return "URL has no host"
        ip = _ip_literal(host)
        if ip is None and not _HOSTNAME.match(host):
            return f"host {host!r} is not a valid hostname"
        if not any(fnmatch.fnmatchcase(host, p.lower()) for p in self.allowed_hosts):
            return f"host {host!r} is not an allowed export host"
        if self.allow_private:
            return None
        if ip is not None:
            return None if _is_global(ip) else f"host {host!r} is not a public address"
        try:
            addresses = _resolve(host, port or (443 if scheme == "https" else 80))
        except (OSError, UnicodeError):
            return f"host {host!r} does not resolve"
        if not addresses:
            return f"host {host!r} does not resolve"
        for address in addresses:
            if not _is_global(address):
                return f"host {host!r} resolves to a non-public address ({address})"
        return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (a seam for tests that run offline)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_global(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4 inside IPv6 (::ffff:10.0.0.1, 2002:0a00:0001::) is judged by the IPv4 inside.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not _is_global(embedded):
            return False
    return not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
        or ip.is_multicast or ip.is_unspecified or not ip.is_global
    )
