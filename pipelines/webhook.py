"""The webhook inbox service: receives Insider export deliveries and stores them for the job.

    python pipelines/webhook.py                            # serve, configured by [insider_inbox]
    python pipelines/webhook.py --check                    # validate the configuration and exit
    python pipelines/webhook.py --print-secret-suggestion  # print a fresh random secret

Configure it in ``[insider_inbox]`` (``.dlt/config.toml``; the secret in ``.dlt/secrets.toml``)
or ``INSIDER_INBOX__<KEY>`` env vars, and give Insider the hook URL
``https://<your-public-host>/insider-hook/<secret>``. Exit codes: 0 ok, 2 bad configuration,
1 any other failure. Nothing printed or logged contains the secret.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT))

from insider_source import logs  # noqa: E402
from insider_source.exceptions import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError  # noqa: E402
from insider_source.inbox.app import InboxConfig, serve  # noqa: E402
from insider_source.inbox.settings import load_service_config  # noqa: E402


def describe(cfg: InboxConfig, server: dict[str, object]) -> str:
    networks = ", ".join(cfg.allowed_networks) or "any (set allowed_networks to restrict)"
    proxy = server["trusted_proxy"] or "none (REMOTE_ADDR is the sender)"
    return "\n".join([
        f"Inbox directory: {cfg.directory}",
        f"Listening on:    http://{server['host']}:{server['port']} "
        "(health check: GET /healthz)",
        f"Hook URL:        https://<your-public-host>{cfg.path_prefix}/<secret>"
        "   (set it as hook in [sources.insider]; the job adds ?ref= itself)",
        f"Source networks: {networks}",
        f"Trusted proxy:   {proxy}",
        f"File hosts:      {', '.join(cfg.url_policy.allowed_hosts)}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration, print a summary and exit")
    parser.add_argument("--print-secret-suggestion", action="store_true",
                        help="print a fresh random secret for [insider_inbox] secret and exit")
    args = parser.parse_args(argv)
    if args.print_secret_suggestion:
        print(secrets.token_urlsafe(32))
        return EXIT_OK
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    redact = logs.install()
    try:
        cfg, server = load_service_config()
        redact.secrets.append(cfg.secret)
        print(describe(cfg, server), flush=True)
        if args.check:
            print("Configuration OK.")
            return EXIT_OK
        try:
            import waitress  # noqa: F401
        except ImportError:
            print('error: waitress is not installed: pip install -e ".[webhook]"',
                  file=sys.stderr)
            return EXIT_FAILURE
        serve(cfg, host=str(server["host"]), port=int(str(server["port"])),
              trusted_proxy=server["trusted_proxy"] and str(server["trusted_proxy"]))
        return EXIT_OK
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as e:  # e.g. the port is taken, the directory is not writable
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
