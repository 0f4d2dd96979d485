"""Process settings that keep the job's memory flat (runtime.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from insider_source.runtime import apply_duckdb_defaults, use_system_allocator
from tests.conftest import ROOT

ENV = "DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG"


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("INSIDER_DAILY__DUCKDB_MEMORY_LIMIT", raising=False)


def test_duckdb_of_the_daily_job_is_capped_at_the_default_limit(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "pipelines"))
    try:
        import daily
    finally:
        sys.path.remove(str(ROOT / "pipelines"))
    pipeline = daily.make_pipeline("capped", str(tmp_path / "w.duckdb"), str(tmp_path / "p"))
    with pipeline.sql_client() as client:
        [(limit,)] = client.execute_sql("SELECT current_setting('memory_limit')")
    assert limit.endswith("MiB") and 200 < float(limit.split()[0]) <= 256, limit
    os.environ.pop(ENV)


def test_a_configured_limit_or_none_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSIDER_DAILY__DUCKDB_MEMORY_LIMIT", "1GB")
    apply_duckdb_defaults()
    assert json.loads(os.environ[ENV]) == {"memory_limit": "1GB"}
    monkeypatch.delenv(ENV)
    monkeypatch.setenv("INSIDER_DAILY__DUCKDB_MEMORY_LIMIT", "")
    apply_duckdb_defaults()
    assert ENV not in os.environ, "an empty limit leaves DuckDB's own default"


def test_the_users_own_duckdb_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, json.dumps({"memory_limit": "3GB", "threads": 1}))
    apply_duckdb_defaults()
    assert json.loads(os.environ[ENV]) == {"memory_limit": "3GB", "threads": 1}


def test_arrow_allocates_with_the_system_allocator() -> None:
    before = pa.default_memory_pool()
    try:
        use_system_allocator()
        assert pa.default_memory_pool().backend_name == "system"
    finally:
        pa.set_memory_pool(before)
