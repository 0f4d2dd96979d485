"""Human-readable progress on stderr: export status while waiting, files and bytes while
downloading. Quiet when ``INSIDER_PROGRESS=0``."""

from __future__ import annotations

import os
import sys
import time


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class Progress:
    def __init__(self, enabled: bool | None = None) -> None:
        if enabled is None:
            enabled = os.environ.get("INSIDER_PROGRESS", "1") != "0"
        self.enabled = enabled
        self.started = time.monotonic()
        self._last_bytes_print = 0.0

    def elapsed(self) -> str:
        secs = int(time.monotonic() - self.started)
        return f"{secs // 60:d}m{secs % 60:02d}s"

    def say(self, msg: str) -> None:
        if self.enabled:
            print(f"[insider {self.elapsed()}] {msg}", file=sys.stderr, flush=True)

    def bytes(
        self, name: str, done: int, total_files: int, index: int, force: bool = False
    ) -> None:
        now = time.monotonic()
        if force or now - self._last_bytes_print >= 2.0:
            self._last_bytes_print = now
            self.say(f"downloading {index}/{total_files} {name}: {human_bytes(done)}")
