"""Named points in a run where the fault tests kill the process for real (``kill -9``).

Set ``INSIDER_KILL_AT=<name>`` and the process sends itself SIGKILL when it reaches that point;
unset (always, in production) it costs one dict lookup. Names: ``after_submit`` (POST answered,
before the export id is recorded), ``after_record`` (export id durable), ``while_polling``,
``mid_download`` (the last file is half on disk), ``after_download``, ``mid_convert`` (some
files converted), ``after_convert``, ``after_extract``, ``after_normalize`` (dlt's steps: a load
package is pending), ``after_load`` (loaded, local clean-up not done).
"""

from __future__ import annotations

import os
import signal


def checkpoint(name: str) -> None:
    if os.environ.get("INSIDER_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
