"""One pipeline run for the benchmark, in its own process (so its peak RSS is its own).

Runs the real job (``run_export``: submit, wait, download, convert, load over HTTP into a fresh
DuckDB file) against the simulator the parent serves, and prints one JSON line: the seconds spent
waiting for the simulator to generate the export (not the pipeline's work, subtracted by the
parent), rows loaded, and the seconds of the steps after the wait.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    import dlt

    from insider_source.config import InsiderSettings
    from insider_source.job import run_export
    from insider_source.lifecycle import ExportLifecycle
    from insider_source.progress import Progress

    waited = 0.0
    original_wait = ExportLifecycle.wait

    def timed_wait(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal waited
        started = time.perf_counter()
        try:
            return original_wait(self, *args, **kwargs)
        finally:
            waited += time.perf_counter() - started

    ExportLifecycle.wait = timed_wait  # type: ignore[method-assign]
    now = dt.datetime.fromisoformat(job["now"])
    cfg = InsiderSettings.from_raw(job["settings"])
    import os

    os.environ["DESTINATION__DUCKDB__CREDENTIALS__DATABASE"] = job["db"]
    if job.get("duckdb_global_config"):
        os.environ["DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG"] = json.dumps(
            job["duckdb_global_config"])
    from insider_source.runtime import apply_duckdb_defaults

    apply_duckdb_defaults()  # as pipelines/daily.py does
    pipeline = dlt.pipeline("insider_bench", destination="duckdb",
                            dataset_name="insider", pipelines_dir=job["pipelines_dir"])
    started = time.perf_counter()
    result = run_export(pipeline, cfg, progress=Progress(enabled=False), clock=lambda: now)
    total = time.perf_counter() - started
    with pipeline.sql_client() as client:
        [(limit,)] = client.execute_sql("SELECT current_setting('memory_limit')")
    print(json.dumps({"waited": waited, "run_seconds": total, "export_id": result.export_id,
                      "rows": result.rows_loaded, "duckdb_memory_limit": limit,
                      "peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM). Not ``ru_maxrss`` from the parent's ``wait4``: on
    Linux a child's ``ru_maxrss`` starts at its parent's RSS at fork and survives ``exec``, so
    it reported the benchmark parent's size (the simulator and the floor's DuckDB) instead."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    main(sys.argv[1])
