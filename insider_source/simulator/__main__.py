"""Run the Raw Export v2/v1 simulator in the foreground: ``python -m insider_source.simulator``."""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import threading

from insider_source.simulator.output import TIMESTAMP_FORMATS
from insider_source.simulator.server import Simulator


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the simulator, print how to reach it, serve until interrupted."""
    p = argparse.ArgumentParser(prog="python -m insider_source.simulator",
                                description="Local Insider One Raw Export v2 and v1 API simulator.")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free one)")
    p.add_argument("--partner-name", default="demo")
    p.add_argument("--token", default=None, help="request token (default: a random one)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--events-per-user-day", type=float, default=0.6)
    p.add_argument("--attribute-chunk-rows", type=int, default=200)
    p.add_argument("--event-chunk-days", type=int, default=2)
    p.add_argument("--timestamp-format", choices=TIMESTAMP_FORMATS, default="iso")
    p.add_argument("--processing-polls", type=int, default=2)
    p.add_argument("--url-ttl-seconds", type=int, default=86400)
    p.add_argument("--hook-delay-seconds", type=float, default=0.2,
                   help="v1: seconds from the file being ready to the link's POST to the hook")
    p.add_argument("--deliver-v2-hooks", action="store_true",
                   help="also POST v2 result manifests to their (loopback) hook")
    args = p.parse_args(argv)
    token = args.token or secrets.token_hex(16)
    sim = Simulator(
        partner_name=args.partner_name, request_token=token, seed=args.seed, users=args.users,
        events_per_user_day=args.events_per_user_day,
        attribute_chunk_rows=args.attribute_chunk_rows, event_chunk_days=args.event_chunk_days,
        timestamp_format=args.timestamp_format, processing_polls=args.processing_polls,
        url_ttl_seconds=args.url_ttl_seconds, hook_delay_seconds=args.hook_delay_seconds,
        deliver_v2_hooks=args.deliver_v2_hooks,
    )
    base_url = sim.start(port=args.port)
    print(f"Insider Raw Export v2/v1 simulator at {base_url}")
    print(f"  base_url      = {base_url}")
    print(f"  partner_name  = {args.partner_name}")
    print(f"  request_token = {token}")
    print("Ctrl-C to stop (generated files are deleted on exit).", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
