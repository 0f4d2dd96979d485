"""Insider One Raw Export v2 → your warehouse, with dlt.

Modules, one stage each: ``config`` (settings and validation), ``window`` (export date windows),
``client`` (HTTP), ``lifecycle`` (submit/record/wait/download), ``files`` (CSV/Parquet → typed
Parquet), ``source`` (the dlt source), ``job`` (one daily run), ``simulator`` (a local v2 API).
"""

from __future__ import annotations

from insider_source.config import InsiderSettings, load_settings
from insider_source.job import RunResult, run_export
from insider_source.source import insider_export

__all__ = ["InsiderSettings", "RunResult", "insider_export", "load_settings", "run_export"]
