"""One run at a time per pipeline: an advisory ``flock`` on a file in the pipeline's working dir.

The kernel releases the lock when the holder dies, even by kill -9, so a crashed run never leaves
a stale lock behind. A second run exits 75 (try later) naming the holder.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from insider_source.exceptions import TryLater


class RunLocked(TryLater):
    """Another run of the same pipeline is in progress."""


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise RunLocked(f"another run of this pipeline holds {path} ({holder}); "
                            "try again when it has finished") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
                  .encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
