"""Constants and defaults of the Insider source: names, endpoints, limits."""

from __future__ import annotations

import re

PIPELINE_NAME = "insider_daily"
DATASET_NAME = "insider"
SOURCE_NAME = "insider"
CONFIG_SECTIONS = ("sources", "insider")

DEFAULT_BASE_URL = "https://unification.useinsider.com"
EXPORT_PATH = "/api/raw/v2/export"
EXPORT_PATH_V1 = "/api/raw/v1/export"
API_VERSIONS = ("v2", "v1")

FORMATS = ("parquet", "csv")
FORMATS_V1 = ("parquet", "csv", "json")
# v1 event columns the loader always asks for: the event base columns of v2, so that both
# versions give the same ``events`` table.
V1_BASE_PARAMS = ("timestamp", "source")
# A v1 request whose file link has not come after this long is given up: its window is planned
# again (Insider "might take several hours"; a link never comes when the hook was unreachable).
V1_DELIVERY_GIVE_UP_SECONDS = 48 * 3600
# Memory DuckDB may use when it splits a v1 file into events and attributes (it spills beyond).
V1_SPLIT_MEMORY_LIMIT = "1GB"
USER_SOURCES = ("segment", "events")
FILTER_OPERATORS = ("eq", "ne", "lt", "gt", "lteq", "gteq")
EXPORT_STATUSES = ("processing", "completed", "failed", "rejected")

DEFAULT_LOOKBACK_DAYS = 2
DEFAULT_POLL_INTERVAL_SECONDS = 30.0
# The poll interval doubles after each "processing" answer up to this many seconds.
MAX_POLL_INTERVAL_SECONDS = 300.0
DEFAULT_MAX_WAIT_SECONDS = 3 * 3600.0
# A backfill is exported as windows of at most this many days, one submission per UTC day.
DEFAULT_BACKFILL_WINDOW_DAYS = 7
# Terminal outcomes handled within one run before it gives up (a failed export is submitted again,
# a rejected one is split); the next run carries on.
MAX_FAILED_PER_RUN = 2
MAX_SUBMISSIONS_PER_RUN = 6

# v2 accepts public names only: lower snake case, optionally in the `custom.` namespace.
SELECTOR_RE = re.compile(r"^(custom\.)?[a-z][a-z0-9_]*$")
PARTNER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Epoch values above this are milliseconds (v2 rejects them).
EPOCH_MS_THRESHOLD = 1e12

# HTTP behaviour.
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0
API_MAX_ATTEMPTS = 6
DOWNLOAD_MAX_ATTEMPTS = 6
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
DOWNLOAD_CHUNK_BYTES = 64 << 10  # also what a dropped connection can cost: Range resumes here

# Reading files: rows per Arrow batch and per written Parquet row group.
CSV_BLOCK_BYTES = 8 << 20
PARQUET_BATCH_ROWS = 256_000
PARQUET_READ_BUFFER_BYTES = 1 << 20
# DuckDB (the default destination) may use this much memory, then spills to disk; DuckDB's own
# default is 80% of RAM. [insider_daily] duckdb_memory_limit overrides it ("" = DuckDB's default).
DUCKDB_MEMORY_LIMIT = "256MB"

# Columns whose type never depends on the data.
STRING_COLUMNS = frozenset({"insider_id", "event_name", "source", "tags"})
# Compression of the converted Parquet files dlt imports (local, short-lived: speed over size).
PARQUET_COMPRESSION = "none"
