"""Webhook inbox: receive Insider export deliveries over HTTP and keep them for the daily job.

Raw Export v1 announces its file only by a webhook POST ``{"url": ...}``; Raw Export v2 can POST
its result manifest. ``app`` is the WSGI service (secret path, source networks, size limits, URL
policy; it never fetches), ``store`` the durable de-duplicating directory both sides share,
``policy`` the rules a delivered URL must pass, ``settings`` the ``[insider_inbox]`` config.
Run it with ``python pipelines/webhook.py`` (``pip install -e ".[webhook]"``).
"""

from __future__ import annotations

from insider_source.inbox.app import InboxConfig, make_app, make_server, serve
from insider_source.inbox.policy import DEFAULT_ALLOWED_HOSTS, UrlPolicy
from insider_source.inbox.settings import inbox_dir, load_service_config, url_policy
from insider_source.inbox.store import Delivery, Inbox, delivery_key

__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "Delivery",
    "Inbox",
    "InboxConfig",
    "UrlPolicy",
    "delivery_key",
    "inbox_dir",
    "load_service_config",
    "make_app",
    "make_server",
    "serve",
    "url_policy",
]
