"""Throughput and memory of a whole export, against the machine's floor for the same files.

    python benchmarks/run.py --events 1_000_000 --format parquet [--repeats 3]

The bundled simulator serves an export of the requested size on 127.0.0.1. Each repeat:

1. **pipeline**: the real job in a child process (benchmarks/child.py: submit, poll, streamed
   download, convert, load into a fresh DuckDB file). Its time excludes the wait for the simulator
   to *generate* the files (the child times ``wait`` and reports it); it includes interpreter
   start-up and imports. Peak RSS is the child's own (``wait4``).
2. **floor**: in this process, a plain streamed download of the same files, then DuckDB's own
   ``CREATE TABLE AS SELECT * FROM read_parquet(...)`` / ``read_csv(...)`` of them into a fresh
   file: the least any loader must do.

Medians over the repeats are printed: rows/s, MB/s, peak RSS, the ratio pipeline/floor. Then the
SQL models are timed on the loaded data: a full refresh, then one more day is loaded and the
models are built again incrementally.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import requests  # noqa: E402

from insider_source.simulator import DEMO_EVENTS as EVENTS  # noqa: E402
from insider_source.simulator import Simulator  # noqa: E402
from insider_source.simulator.catalog import EVENT_WEIGHTS  # noqa: E402

ATTRIBUTES = ["name", "email", "age", "country", "email_optin", "created_date",
              "custom.loyalty_tier", "custom.lifetime_value"]
MiB = 1 << 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=lambda v: int(v.replace("_", "")), default=1_000_000,
                   help="events in the export (approximately; the simulator draws them)")
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    p.add_argument("--users", type=int, default=None, help="default: events / 50, at least 1000")
    p.add_argument("--event-types", type=int, default=4, choices=range(1, len(EVENTS) + 1))
    p.add_argument("--days", type=int, default=7, help="days in the export window")
    p.add_argument("--chunk-days", type=int, default=4,
                   help="days per event file (files = event types x days / chunk-days)")
    p.add_argument("--attribute-chunk-rows", type=int, default=250_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-models", action="store_true", help="skip the model timings")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    return p.parse_args(argv)


def run_child(job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    path = workdir / "job.json"
    path.write_text(json.dumps(job))
    env = dict(os.environ, RUNTIME__DLTHUB_TELEMETRY="false", RUNTIME__LOG_LEVEL="ERROR")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "child.py"), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the pipeline run failed:\n{err[-4000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["wall"] = wall
    result["seconds"] = wall - result["waited"]
    # the child measures its own peak (VmHWM): ru_maxrss of a forked child starts at ours
    result["rusage_maxrss_mib"] = usage.ru_maxrss / 1024
    return result


def floor(sim: Simulator, export_id: str, fmt: str, workdir: Path) -> dict[str, float]:
    """Plain streamed download of the export's files + DuckDB's own read of them."""
    manifest = sim.manifest(export_id)
    files = workdir / "floor"
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir()
    paths: dict[str, list[str]] = {"attributes": [], "events": []}
    size = 0
    started = time.perf_counter()
    with requests.Session() as s:
        for kind in ("attributes", "events"):
            for f in manifest["files"][kind]:
                dest = files / f"{kind}-{f['name']}"
                with s.get(f["url"], stream=True, timeout=60) as r, open(dest, "wb") as out:
                    r.raise_for_status()
                    for chunk in r.iter_content(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
                paths[kind].append(str(dest))
    download = time.perf_counter() - started
    db = workdir / "floor.duckdb"
    db.unlink(missing_ok=True)
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    try:
        for kind, listed in paths.items():
            if listed:
                opts = ", union_by_name = true" if fmt == "parquet" else ", union_by_name = true"
                con.execute(f"CREATE TABLE {kind} AS SELECT * FROM {reader}({listed!r}{opts})")
    finally:
        con.close()
    read = time.perf_counter() - started
    shutil.rmtree(files, ignore_errors=True)
    return {"download": download, "duckdb": read, "seconds": download + read, "bytes": size}


def time_models(workdir: Path, full_refresh: bool) -> tuple[float, int, str]:
    import dlt

    from insider_source.transform import run_models

    pipeline = dlt.pipeline("insider_bench", destination=dlt.destinations.duckdb(
        str(workdir / "bench.duckdb")), dataset_name="insider",
        pipelines_dir=str(workdir / "pipelines"))
    started = time.perf_counter()
    results = run_models(pipeline, full_refresh=full_refresh)
    each = ", ".join(f"{r.name} {r.seconds:.2f}s" for r in results)
    return time.perf_counter() - started, len(results), each


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    wanted = EVENTS[: args.event_types]
    share = sum(EVENT_WEIGHTS[e["event_name"]] for e in wanted)
    users = args.users or max(1000, args.events // 50)
    per_user_day = args.events / (users * args.days * share)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="insider-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    base_day = dt.datetime(2026, 6, 1, 6, 0, tzinfo=dt.UTC)
    print(f"benchmark: ~{args.events:,} events, {users:,} users, {args.event_types} event types, "
          f"{args.days}-day window, {args.format}, {args.repeats} repeats; "
          f"{os.cpu_count()} cores; workdir {workdir}", flush=True)

    runs, floors = [], []
    with Simulator(partner_name="bench", request_token=token, users=users,
                   events_per_user_day=per_user_day, attribute_chunk_rows=args.attribute_chunk_rows,
                   event_chunk_days=args.chunk_days, processing_polls=0) as sim:

        def job(now: dt.datetime, start: dt.date) -> dict[str, Any]:
            sim.set_now(now)
            return {
                "now": now.isoformat(), "db": str(workdir / "bench.duckdb"),
                "pipelines_dir": str(workdir / "pipelines"),
                "duckdb_global_config": json.loads(os.environ.get("BENCH_DUCKDB_CONFIG", "{}")),
                "settings": {
                    "partner_name": "bench", "request_token": token, "base_url": sim.base_url,
                    "hook": f"{sim.base_url}/hook", "format": args.format, "segment_id": 1,
                    "attributes": ATTRIBUTES, "events": wanted, "get_tags": True,
                    "initial_start_date": start.isoformat(), "lookback_days": 2,
                    "poll_interval_seconds": 0.2, "max_wait_seconds": 3600},
            }

        for i in range(args.repeats):
            now = base_day + dt.timedelta(days=i)
            for stale in ("bench.duckdb", "pipelines"):
                p = workdir / stale
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            run = run_child(job(now, now.date() - dt.timedelta(days=args.days)), workdir)
            fl = floor(sim, run["export_id"], args.format, workdir)
            rows = sum(run["rows"].values())
            runs.append(run | {"rows_total": rows})
            floors.append(fl)
            print(f"  repeat {i + 1}: pipeline {run['seconds']:.2f}s (peak RSS "
                  f"{run['peak_rss_mib']:.0f} MiB, DuckDB {run['duckdb_memory_limit']}), "
                  f"floor {fl['seconds']:.2f}s (download "
                  f"{fl['download']:.2f}s + duckdb {fl['duckdb']:.2f}s), {rows:,} rows, "
                  f"{fl['bytes'] / MiB:.1f} MiB", flush=True)

        models = "models: skipped (--no-models)"
        if not args.no_models:
            full, n, full_each = time_models(workdir, full_refresh=True)
            nxt = base_day + dt.timedelta(days=args.repeats)
            extra = run_child(job(nxt, nxt.date() - dt.timedelta(days=args.days + args.repeats)),
                              workdir)
            incremental, _, incr_each = time_models(workdir, full_refresh=False)
            models = (f"models: {n} built, full refresh {full:.2f}s; after one more day "
                      f"(+{sum(extra['rows'].values()):,} rows loaded in {extra['seconds']:.2f}s)"
                      f" incremental {incremental:.2f}s = {incremental / full:.2f}x the full "
                      f"refresh\n    full refresh: {full_each}\n    incremental:  {incr_each}")

    seconds = statistics.median(r["seconds"] for r in runs)
    floor_s = statistics.median(f["seconds"] for f in floors)
    rss = statistics.median(r["peak_rss_mib"] for r in runs)
    rows = runs[-1]["rows_total"]
    size = floors[-1]["bytes"]
    print("\nresults (medians)")
    print(f"  rows:            {rows:,} ({runs[-1]['rows'].get('events', 0):,} events)")
    print(f"  bytes:           {size / MiB:.1f} MiB of {args.format}")
    print(f"  pipeline:        {seconds:.2f} s   {rows / seconds:,.0f} rows/s   "
          f"{size / MiB / seconds:.1f} MB/s")
    print(f"  floor:           {floor_s:.2f} s   (download "
          f"{statistics.median(f['download'] for f in floors):.2f} s + duckdb read "
          f"{statistics.median(f['duckdb'] for f in floors):.2f} s)")
    print(f"  ratio:           {seconds / floor_s:.2f}x the floor")
    print(f"  peak RSS:        {rss:.0f} MiB (pipeline process)")
    print(f"  {models}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
