"""The daily job: load yesterday's (and any missed days') Insider export into the warehouse.

    python pipelines/daily.py            # configured by .dlt/config.toml, .dlt/secrets.toml, env
    python pipelines/daily.py --demo     # against the bundled API simulator, into a local DuckDB
    python pipelines/daily.py --backfill 2026-01-01 2026-03-01   # plan a long range, then run
    python pipelines/daily.py --models-only [--select NAME+] [--full-refresh]
    python pipelines/daily.py --compile snowflake                # print each model's SQL

Exit codes for schedulers: 0 loaded or up to date, 75 try later (quota used today, export still
processing), 2 bad configuration, 1 any other failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT))

import dlt  # noqa: E402
from dlt.common.configuration.exceptions import ConfigurationException  # noqa: E402
from dlt.pipeline.exceptions import PipelineStepFailed  # noqa: E402

from insider_source import logs  # noqa: E402
from insider_source import settings as s  # noqa: E402
from insider_source.config import load_settings  # noqa: E402
from insider_source.exceptions import (  # noqa: E402
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    ConfigError,
    InsiderError,
)
from insider_source.job import RunResult, run_export  # noqa: E402
from insider_source.runtime import apply_duckdb_defaults  # noqa: E402

if TYPE_CHECKING:
    from insider_source.inbox import Inbox, UrlPolicy

DEMO_DIR = ROOT / "demo_data"


def make_pipeline(name: str = s.PIPELINE_NAME, duckdb_path: str | None = None,
                  pipelines_dir: str | None = None) -> dlt.Pipeline:
    destination = dlt.config.get("insider_daily.destination", str) or "duckdb"
    if destination == "duckdb" or duckdb_path is not None:
        apply_duckdb_defaults()  # a memory cap unless the DuckDB credentials have their own
    dest: object = destination
    if duckdb_path is not None:
        dest = dlt.destinations.duckdb(duckdb_path)
    return dlt.pipeline(pipeline_name=name, destination=dest, dataset_name=s.DATASET_NAME,
                        pipelines_dir=pipelines_dir, progress=None)


def print_summary(result: RunResult, pipeline: dlt.Pipeline, duckdb_path: str | None) -> None:
    pipelines_dir = Path(pipeline.pipelines_dir)
    out = sys.stdout
    if result.status == "up_to_date":
        print("Up to date: nothing to export yet (the next window opens at 00:00 UTC).", file=out)
    else:
        print(f"Loaded export {result.export_id} for window {result.window}"
              + (" (resumed)" if result.resumed else ""), file=out)
        for table, n in result.rows_loaded.items():
            print(f"  {table:<20} {n:>10} rows from this export", file=out)
    for note in result.notes:
        print(f"Note: {note}", file=out)
    if result.table_counts:
        print(f"Tables in dataset '{pipeline.dataset_name}' "
              f"({pipeline.destination.destination_name}):", file=out)
        for table, n in result.table_counts.items():
            print(f"  {table:<20} {n:>10} rows", file=out)
    if duckdb_path:
        print(f"DuckDB file: {duckdb_path}", file=out)
        print(f"State:   dlt pipeline --pipelines-dir {pipelines_dir} {pipeline.pipeline_name}"
              " info -v", file=out)
        print(f"Query:   python -c \"import duckdb; duckdb.connect('{duckdb_path}').sql("
              f"'SELECT event_name, count(*) FROM {pipeline.dataset_name}.events GROUP BY 1')"
              f".show()\"", file=out)


@dataclass
class ModelOptions:
    select: list[str] | None = None
    full_refresh: bool = False


def build_models(pipeline: dlt.Pipeline, options: ModelOptions) -> None:
    """Run the SQL models (models/*.sql) in the warehouse; print one line per model."""
    from insider_source.progress import Progress
    from insider_source.transform import run_models

    progress = Progress()
    results = run_models(pipeline, select=options.select, full_refresh=options.full_refresh,
                         log=progress.say)
    print(f"Models built in dataset '{pipeline.dataset_name}':")
    for r in results:
        how = r.materialization + (f" ({r.detail})" if r.detail not in ("", r.materialization)
                                   else "")
        print(f"  {r.name:<22} {r.rows:>10} rows  {how}, "
              f"{r.tests_passed} tests passed")


def run_demo(fmt: str, demo_dir: Path, api_version: str = "v2") -> int:
    from insider_source.simulator import DEMO_EVENTS, Simulator

    if fmt == "json" and api_version != "v1":
        raise ConfigError("--format", fmt, "JSON exists in Raw Export v1 only: add "
                          "--api-version v1, or use --format csv or parquet.")
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # the demo stays offline
    demo_dir.mkdir(parents=True, exist_ok=True)
    db = demo_dir / "insider_demo.duckdb"
    pipelines_dir = demo_dir / "pipelines"
    inbox_path = demo_dir / "inbox"
    for stale in (db, pipelines_dir, inbox_path):  # every demo starts from an empty warehouse
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(
            missing_ok=True)
    token = secrets.token_hex(16)
    today = dt.datetime.now(dt.UTC).date()
    with Simulator(partner_name="demo", request_token=token, users=2000,
                   processing_polls=2) as sim, demo_inbox(api_version, inbox_path) as inbox:
        hook, box, policy = inbox if inbox else (f"{sim.base_url}/hook", None, None)
        cfg = load_settings(
            partner_name="demo", request_token=token, base_url=sim.base_url,
            hook=hook, format=fmt, user_source="segment", segment_id=1,
            attributes=["*"], events=DEMO_EVENTS, get_tags=api_version == "v2",
            initial_start_date=(today - dt.timedelta(days=7)).isoformat(),
            poll_interval_seconds=0.5, max_wait_seconds=120, api_version=api_version,
        )
        pipeline = make_pipeline("insider_demo", str(db), str(pipelines_dir))
        print(f"Demo: simulator at {sim.base_url}, loading into {db}"
              + (f", webhook inbox in {inbox_path}" if inbox else ""), file=sys.stderr)
        result = run_export(pipeline, cfg, inbox=box, url_policy=policy)
    print_summary(result, pipeline, str(db))
    build_models(pipeline, ModelOptions())
    return EXIT_OK


@contextmanager
def demo_inbox(api_version: str, directory: Path) -> Iterator[tuple[str, Any, Any] | None]:
    """With v1, the webhook inbox on 127.0.0.1 for the simulator to deliver to."""
    if api_version != "v1":
        yield None
        return
    try:
        import waitress  # noqa: F401
    except ImportError:
        raise ConfigError("--api-version", "v1", "the v1 demo runs the webhook inbox, which "
                          "needs waitress: pip install -e \".[webhook]\"") from None
    import threading

    from insider_source.inbox import Inbox, InboxConfig, UrlPolicy, make_server

    secret = secrets.token_urlsafe(24)
    # the simulator serves files on http://127.0.0.1: allowed here, refused by default
    policy = UrlPolicy(allowed_hosts=("127.0.0.1",), allow_http=True, allow_private=True)
    server = make_server(InboxConfig(directory=directory, secret=secret, url_policy=policy),
                         host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, name="insider-inbox", daemon=True)
    thread.start()
    try:
        yield (f"http://127.0.0.1:{server.effective_port}/insider-hook/{secret}",
               Inbox(directory), policy)
    finally:
        server.close()


def parse_backfill(values: list[str] | None) -> tuple[dt.date, dt.date] | None:
    if not values:
        return None
    try:
        start, end = (dt.date.fromisoformat(v) for v in values)
    except ValueError:
        raise ConfigError("--backfill", " ".join(values),
                          "give two ISO dates, START and END (exclusive), e.g. --backfill "
                          "2026-01-01 2026-02-01.") from None
    return start, end


def run_configured(backfill: tuple[dt.date, dt.date] | None = None,
                   redact: logs.RedactingFilter | None = None,
                   models: ModelOptions | None = None, models_only: bool = False) -> int:
    models = models or ModelOptions()
    if models_only:
        pipeline = make_pipeline()
        if not pipeline.default_schema_name:
            pipeline.sync_destination()  # a new machine: the schema lives in the destination
        build_models(pipeline, models)
        return EXIT_OK
    cfg = load_settings()
    if redact is not None:
        redact.secrets.append(cfg.request_token.reveal())
        inbox_secret = dlt.secrets.get("insider_inbox.secret")
        if inbox_secret:  # the hook URL's path holds it
            redact.secrets.append(str(inbox_secret))
    inbox, policy = open_inbox(cfg.api_version)
    pipeline = make_pipeline()
    result = run_export(pipeline, cfg, backfill=backfill, inbox=inbox, url_policy=policy)
    creds = getattr(pipeline.destination_client().config, "credentials", None)
    db = getattr(creds, "database", None) if pipeline.destination.destination_name == "duckdb" \
        else None
    print_summary(result, pipeline, db)
    if (result.status == "loaded" or models.full_refresh) and dlt.config.get(
            "insider_daily.models", bool) is not False:
        build_models(pipeline, models)
    return EXIT_OK


def open_inbox(api_version: str) -> tuple[Inbox | None, UrlPolicy | None]:
    """The webhook inbox the job reads: required with v1; with v2, used when its directory
    exists (a v2 manifest delivered there saves the polling)."""
    from insider_source.inbox import Inbox
    from insider_source.inbox.settings import inbox_dir, url_policy

    directory = inbox_dir()
    if api_version != "v1" and not directory.is_dir():
        return None, None
    try:
        inbox = Inbox(directory)
    except OSError as e:
        raise ConfigError("insider_inbox.dir", str(directory),
                          f"the webhook inbox directory cannot be used ({e.strerror}); give a "
                          "directory the job and the inbox service share, e.g. [insider_inbox] "
                          "dir = \"/var/lib/insider-inbox\".") from None
    return inbox, url_policy()


def print_compiled(dialect: str, select: list[str] | None) -> int:
    from insider_source.transform import compile_models

    for name, sql in compile_models(dialect, dataset=s.DATASET_NAME, select=select).items():
        print(f"-- {name} ({dialect})\n{sql};\n")
    return EXIT_OK


def error_exit(e: BaseException, redact: logs.RedactingFilter | None = None) -> int:
    """Print one clear line for a known error and map it to the scheduler's exit code."""
    if isinstance(e, PipelineStepFailed) and e.exception is not None:
        return error_exit(e.exception, redact)
    clean = redact.redact if redact is not None else str

    def emit(text: str) -> None:  # every line is redacted: no token, no URL signature
        print(clean(text), file=sys.stderr)

    if isinstance(e, InsiderError):
        kind = "configuration error" if isinstance(e, ConfigError) else "error"
        if e.exit_code == 75:
            kind = "try later"
        emit(f"{kind}: {e}")
        return e.exit_code
    if isinstance(e, ConfigurationException):
        emit(f"configuration error: {e}")
        return EXIT_CONFIG
    emit(f"error: {type(e).__name__}: {e}")
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", action="store_true",
                        help="run against the bundled Insider API simulator into a local DuckDB")
    parser.add_argument("--format", choices=s.FORMATS_V1, default="parquet",
                        help="with --demo: the export file format (default parquet; json with "
                        "--api-version v1)")
    parser.add_argument("--api-version", choices=s.API_VERSIONS, default="v2",
                        help="with --demo: Raw Export v2 (default) or v1 through the webhook "
                        "inbox (needs pip install -e \".[webhook]\")")
    parser.add_argument("--demo-dir", type=Path, default=DEMO_DIR,
                        help="with --demo: where the DuckDB file and pipeline state go")
    parser.add_argument("--backfill", nargs=2, metavar=("START", "END"),
                        help="export [START, END) (ISO dates) as windows of "
                        "backfill_window_days, one export per UTC day, before the daily window; "
                        "run the job daily (with or without this flag) until it is done")
    parser.add_argument("--models-only", action="store_true",
                        help="build the SQL models on what is loaded, without exporting")
    parser.add_argument("--select", nargs="+", metavar="MODEL",
                        help="models to build: NAME, NAME+ (and downstream), +NAME (and upstream)")
    parser.add_argument("--full-refresh", action="store_true",
                        help="rebuild incremental models from scratch (e.g. after a backfill)")
    parser.add_argument("--compile", choices=("duckdb", "snowflake", "bigquery"),
                        help="print each model's SQL for this warehouse and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    redact = logs.install()
    if not args.debug:
        os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
    try:
        if args.compile:
            return print_compiled(args.compile, args.select)
        if args.demo:
            return run_demo(args.format, args.demo_dir, args.api_version)
        return run_configured(parse_backfill(args.backfill), redact,
                              ModelOptions(args.select, args.full_refresh), args.models_only)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line and an exit code
        if args.debug:
            logging.exception("run failed")
        return error_exit(e, redact)


if __name__ == "__main__":
    sys.exit(main())
