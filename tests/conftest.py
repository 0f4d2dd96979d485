"""Shared fixtures: an isolated dlt environment, a running simulator, helpers to run the job
in-process or as a real subprocess, and to read what landed in DuckDB."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "tok-3f9c2a71e8d54b06a1c7"  # searched for in outputs: it must never appear
PARTNER = "acme"
EVENTS = [
    {"event_name": "purchase",
     "params": ["product_id", "product_name", "unit_price", "currency", "quantity",
                "custom.gift_wrap"]},
    {"event_name": "email_open", "params": ["campaign_id", "custom.campaign_variant"]},
    {"event_name": "session_start", "params": ["device_type"]},
]
ATTRIBUTES = ["name", "email", "age", "email_optin", "last_purchase_date",
              "custom.loyalty_tier", "custom.lifetime_value", "custom.newsletter_opt_in"]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's config, another test's state, or the network."""
    for key in list(os.environ):
        if key.startswith(("SOURCES__", "DESTINATION__", "INSIDER_", "RUNTIME__", "DLT_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt_data"))
    monkeypatch.setenv("INSIDER_PROGRESS", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sim() -> Iterator[Any]:
    from insider_source.simulator import Simulator

    s = Simulator(partner_name=PARTNER, request_token=TOKEN, seed=11, users=300,
                  events_per_user_day=0.5, attribute_chunk_rows=120, event_chunk_days=2,
                  processing_polls=2)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def raw_settings(sim: Any, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "partner_name": PARTNER, "request_token": TOKEN, "base_url": sim.base_url,
        "hook": "https://example.com/hook", "format": "parquet", "segment_id": 1,
        "attributes": ATTRIBUTES, "events": EVENTS, "get_tags": True,
        "initial_start_date": "2026-03-01", "lookback_days": 2,
        "poll_interval_seconds": 0.05, "max_wait_seconds": 30,
    }
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


def run_inprocess(sim: Any, db: Path, now: dt.datetime, *, pipeline_name: str = "insider_daily",
                  client: Any = None, backfill: Any = None, inbox: Any = None,
                  url_policy: Any = None, **changes: Any) -> Any:
    import dlt

    from insider_source.config import InsiderSettings
    from insider_source.job import run_export
    from insider_source.progress import Progress

    sim.set_now(now)
    cfg = InsiderSettings.from_raw(raw_settings(sim, **changes))
    pipeline = dlt.pipeline(pipeline_name, destination=dlt.destinations.duckdb(str(db)),
                            dataset_name="insider")
    return run_export(pipeline, cfg, progress=Progress(enabled=False), clock=lambda: now,
                      client=client, backfill=backfill, inbox=inbox, url_policy=url_policy)


def cli_env(sim: Any, db: Path, **changes: Any) -> dict[str, str]:
    import json

    env = {k: v for k, v in os.environ.items()}
    for key, value in raw_settings(sim, **changes).items():
        env[f"SOURCES__INSIDER__{key.upper()}"] = (
            json.dumps(value) if isinstance(value, list | dict) else str(value).lower()
            if isinstance(value, bool) else str(value))
    env["DESTINATION__DUCKDB__CREDENTIALS"] = str(db)
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_cli(env: dict[str, str], *args: str, kill_at: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(env)
    if kill_at:
        env["INSIDER_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "daily.py"), *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
