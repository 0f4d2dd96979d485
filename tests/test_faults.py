"""The fault suite: every fault is injected for real (simulator switches, kill -9 of the process)
and every scenario ends with the export loaded exactly once, or with the warehouse as it was.

Kill tests run ``pipelines/daily.py`` as a subprocess that sends itself SIGKILL at a named point
(insider_source/checkpoints.py); everything else runs the job in-process against the simulator
with a client whose backoff is short, so the suite stays fast.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from insider_source.client import InsiderClient
from insider_source.config import Secret
from insider_source.exceptions import (
    EXIT_FAILURE,
    EXIT_TRY_LATER,
    ExportOutcomeError,
    InsiderError,
    IntegrityError,
    QuotaExceeded,
    StillProcessing,
    TransientError,
)
from insider_source.files import normalize_name
from tests.conftest import PARTNER, ROOT, TOKEN, cli_env, query, run_cli, run_inprocess
from tests.test_e2e import DAY1, assert_matches_truth, loaded, rows_of

pytestmark = pytest.mark.e2e

DAY2 = DAY1 + dt.timedelta(days=1)


def SORT_KEY(r: tuple[Any, ...]) -> tuple[tuple[bool, str], ...]:  # noqa: N802 - as rows_of
    return tuple((v is None, str(v)) for v in r)


def fast_client(sim: Any, read_timeout: float = 5.0) -> InsiderClient:
    return InsiderClient(sim.base_url, PARTNER, Secret(TOKEN), backoff_base=0.02,
                         backoff_max=1.0, timeout=(2.0, read_timeout))


def exports(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT export_id, status, window_start::DATE, window_end::DATE, note "
                     "FROM insider.exports ORDER BY window_start, export_id")


def assert_export_loaded(db: Path, truth: dict[str, pa.Table], export_id: str) -> None:
    """This export's events (earlier days may hold older exports) and the latest attributes."""
    events = truth["events"]
    assert events.num_rows > 100
    cols = ", ".join(f'"{normalize_name(c)}"' for c in events.column_names)
    got = query(db, f"SELECT {cols} FROM insider.events WHERE export_id = '{export_id}'")
    assert sorted(got, key=SORT_KEY) == rows_of(events)
    attrs = truth["attributes"]
    assert loaded(db, "attributes", [normalize_name(c) for c in attrs.column_names]) == \
        rows_of(attrs)


def data_snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the data tables (small scenarios), to prove a failed run changed nothing."""
    out = {}
    for table in ("events", "attributes", "attributes_history"):
        out[table] = query(db, f"SELECT * FROM insider.{table} ORDER BY ALL")
    return out


# -- 1. crash anywhere, resume exactly ------------------------------------------------------------

KILL_POINTS = [
    # (point, format, wipe the dlt working dir before the re-run = a new machine)
    ("after_submit", "parquet", False),
    ("after_record", "parquet", True),
    ("while_polling", "csv", True),
    ("mid_download", "csv", False),
    ("after_download", "parquet", False),
    ("mid_convert", "csv", False),
    ("after_convert", "parquet", True),
    ("after_extract", "csv", False),
    ("after_extract", "parquet", True),
    ("after_normalize", "parquet", False),
    ("after_load", "csv", False),
]


@pytest.mark.parametrize("kill_at,fmt,new_machine", KILL_POINTS)
def test_kill_9_anywhere_then_rerun_loads_the_export_exactly_once(
    sim: Any, tmp_path: Path, kill_at: str, fmt: str, new_machine: bool
) -> None:
    db = tmp_path / "w.duckdb"
    env = cli_env(sim, db, initial_start_date=None, format=fmt)  # window: yesterday
    sim.processing_polls = 3
    killed = run_cli(env, kill_at=kill_at)
    assert killed.returncode == -9, f"the run was not killed at {kill_at}: {killed.stderr}"
    assert len(sim.submissions) == 1
    if new_machine:  # a fresh dlt working dir: state must come back from DuckDB
        shutil.rmtree(tmp_path / "dlt_data")
    done = run_cli(env)
    assert done.returncode == 0, done.stderr
    assert len(sim.submissions) == 1, "a re-run must never submit a second export"
    export_id = sim.submissions[0]["export_id"]
    assert_matches_truth(db, sim.ground_truth(export_id))  # every row once, no duplicates
    [(eid, status, *_)] = exports(db)
    assert (eid, status) == (export_id, "loaded")
    again = run_cli(env)
    assert again.returncode == 0 and "Up to date" in again.stdout, again.stderr
    assert len(sim.submissions) == 1
    assert TOKEN not in "".join(r.stdout + r.stderr for r in (killed, done, again))


def test_a_run_killed_while_holding_the_lock_does_not_block_the_next(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    env = cli_env(sim, db, initial_start_date=None)
    assert run_cli(env, kill_at="while_polling").returncode == -9
    assert list((tmp_path / "dlt_data").rglob("insider_run.lock")), "the lock file stays behind"
    done = run_cli(env)
    assert done.returncode == 0, done.stderr
    assert len(sim.submissions) == 1


def test_two_runs_at_once_never_both_submit(sim: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sim.processing_polls = 40  # the first run holds the lock while it polls
    env = cli_env(sim, db, initial_start_date=None, poll_interval_seconds=0.1)
    first = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "daily.py")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=60)
        while not sim.submissions and dt.datetime.now() < deadline:
            time.sleep(0.1)
        assert sim.submissions, "the first run submitted"
        second = run_cli(env)
        assert second.returncode == EXIT_TRY_LATER, second.stderr
        assert "another run" in second.stderr and "pid" in second.stderr
        sim.processing_polls = 0
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert len(sim.submissions) == 1
    assert_matches_truth(db, sim.ground_truth(sim.submissions[0]["export_id"]))


# -- 2. transient faults --------------------------------------------------------------------------

def test_status_5xx_429_and_dropped_connections_are_retried(sim: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sim.faults.submit_errors = 2
    sim.faults.status_errors = 2
    sim.faults.status_429 = 1
    sim.faults.status_drops = 2
    result = run_inprocess(sim, db, DAY1, client=fast_client(sim))
    assert result.status == "loaded"
    statuses = [r["status"] for r in sim.request_log if r["path"].startswith("/api/")]
    assert statuses.count(500) == 2 and statuses.count(503) == 2
    assert statuses.count(429) == 1 and statuses.count(0) == 2  # 0: connection dropped
    assert len(sim.submissions) == 1
    assert_matches_truth(db, sim.ground_truth(result.export_id))


@pytest.fixture
def big_files_sim() -> Any:
    """Files of a few hundred KiB, so a break mid-body leaves whole chunks on disk."""
    from insider_source.simulator import Simulator

    with Simulator(partner_name=PARTNER, request_token=TOKEN, seed=5, users=3000,
                   events_per_user_day=1.0, attribute_chunk_rows=3000, event_chunk_days=4,
                   processing_polls=0) as s:
        yield s


def test_download_broken_mid_body_resumes_with_range(big_files_sim: Any, tmp_path: Path) -> None:
    sim, db = big_files_sim, tmp_path / "w.duckdb"
    sim.faults.download_drop_after_bytes = 150_000
    sim.faults.download_drops = 2
    result = run_inprocess(sim, db, DAY1, format="csv", client=fast_client(sim))
    storage = [r for r in sim.request_log if r["path"].startswith("/storage/")]
    resumed = [r for r in storage if r["status"] == 206]
    assert len(resumed) == 2, [(r["path"], r["status"]) for r in storage]
    # each resume asked for the rest of the file, from further on, not for all of it again
    offsets = [int(r["headers"]["Range"].removeprefix("bytes=").rstrip("-")) for r in resumed]
    assert 0 < offsets[0] <= 150_000 < offsets[1] <= 300_000
    assert_matches_truth(db, sim.ground_truth(result.export_id))


def test_download_broken_where_ranges_are_not_allowed_restarts_the_file(
    big_files_sim: Any, tmp_path: Path
) -> None:
    sim, db = big_files_sim, tmp_path / "w.duckdb"
    sim.faults.no_ranges = True
    sim.faults.download_drop_after_bytes = 150_000
    sim.faults.download_drops = 3
    result = run_inprocess(sim, db, DAY1, format="csv", client=fast_client(sim))
    storage = [r for r in sim.request_log if r["path"].startswith("/storage/")]
    assert not [r for r in storage if "Range" in r["headers"] or r["status"] == 206]
    n_files = sum(len(v) for v in sim.manifest(result.export_id)["files"].values())
    assert len(storage) == n_files + 3  # three files were fetched twice, from the start
    assert_matches_truth(db, sim.ground_truth(result.export_id))


def test_read_timeouts_are_retried(sim: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sim.faults.download_delay_seconds = 1.5
    sim.faults.delayed_downloads = 2
    result = run_inprocess(sim, db, DAY1, client=fast_client(sim, read_timeout=0.5))
    assert_matches_truth(db, sim.ground_truth(result.export_id))


def test_storage_failing_past_the_budget_exits_75_and_next_run_resumes(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    sim.faults.download_errors = 1000
    with pytest.raises(TransientError) as e:
        run_inprocess(sim, db, DAY1, client=fast_client(sim))
    assert e.value.exit_code == EXIT_TRY_LATER
    assert "?" not in str(e.value), "a signed URL's query must not be shown"
    assert query(db, "SELECT status FROM insider.exports") == [("processing",)]
    assert not query(db, "SELECT count(*) FROM information_schema.tables "
                         "WHERE table_name = 'events'")[0][0], "nothing partial is loaded"
    sim.faults.reset()
    result = run_inprocess(sim, db, DAY1, client=fast_client(sim))
    assert result.resumed and len(sim.submissions) == 1
    assert_matches_truth(db, sim.ground_truth(result.export_id))


# -- 3. terminal outcomes -------------------------------------------------------------------------

def test_failed_export_is_recorded_and_its_window_submitted_again(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    sim.faults.failures = 1
    result = run_inprocess(sim, db, DAY1, client=fast_client(sim))
    assert result.status == "loaded"
    first, second = (x["export_id"] for x in sim.submissions)
    assert sim.submissions[0]["body"] == sim.submissions[1]["body"], "the same window again"
    assert [(e[0], e[1]) for e in exports(db)] == sorted(
        [(first, "failed"), (second, "loaded")])
    assert "ended failed" in result.notes[0]
    assert_matches_truth(db, sim.ground_truth(second))


def test_failed_export_when_the_day_is_used_exits_75_then_retries_next_day(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    sim.failed_exports_use_quota = True
    sim.faults.failures = 1
    with pytest.raises(QuotaExceeded) as e:
        run_inprocess(sim, db, DAY1, client=fast_client(sim))
    assert "ended failed" in str(e.value) and "00:00 UTC" in str(e.value)
    assert [e[1] for e in exports(db)] == ["failed"]
    result = run_inprocess(sim, db, DAY2, client=fast_client(sim))
    assert result.status == "loaded" and not result.resumed
    assert str(result.window) == "[2026-03-01, 2026-03-06)", "the failed window is included"
    assert len(sim.submissions) == 2
    assert_matches_truth(db, sim.ground_truth(result.export_id))


def test_export_failing_again_and_again_exits_1_after_two_attempts(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    sim.faults.outcome = "failed"
    out = run_cli(cli_env(sim, db, initial_start_date=None))
    assert out.returncode == EXIT_FAILURE, out.stderr
    assert "ended failed" in out.stderr and "next run submits the window again" in out.stderr
    assert len(sim.submissions) == 2
    assert query(db, "SELECT status FROM insider.exports") == [("failed",), ("failed",)]


def test_rejected_export_is_split_and_the_halves_exported_on_following_days(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    sim.faults.reject_over_days = 2  # the 4-day first window is too big
    day1 = run_inprocess(sim, db, DAY1, client=fast_client(sim))
    assert str(day1.window) == "[2026-03-01, 2026-03-03)"
    rejected = sim.submissions[0]["export_id"]
    assert sorted(exports(db), key=str) == sorted([
        (rejected, "rejected", dt.date(2026, 3, 1), dt.date(2026, 3, 5),
         "rejected; split into [2026-03-01, 2026-03-03) and [2026-03-03, 2026-03-05)"),
        (day1.export_id, "loaded", dt.date(2026, 3, 1), dt.date(2026, 3, 3), None),
        ("planned-20260301-20260303", "submitted", dt.date(2026, 3, 1), dt.date(2026, 3, 3),
         f"half of rejected export {rejected} [2026-03-01, 2026-03-05); submitted as export "
         f"{day1.export_id}"),
        ("planned-20260303-20260305", "planned", dt.date(2026, 3, 3), dt.date(2026, 3, 5),
         f"half of rejected export {rejected} [2026-03-01, 2026-03-05)"),
    ], key=str)
    day2 = run_inprocess(sim, db, DAY2, client=fast_client(sim))
    assert str(day2.window) == "[2026-03-03, 2026-03-05)"
    assert len(sim.submissions) == 3
    truth = [sim.ground_truth(day1.export_id)["events"],
             sim.ground_truth(day2.export_id)["events"]]
    both = pa.concat_tables(truth)
    assert {d for d in query(db, "SELECT DISTINCT event_date FROM insider.events")} == {
        (dt.date(2026, 3, d),) for d in (1, 2, 3, 4)}
    assert loaded(db, "events", ["insider_id", "event_name", "timestamp"]) == rows_of(
        both.select(["insider_id", "event_name", "timestamp"]))
    # the plan is done: the next day is the daily window again (last end minus lookback)
    sim.faults.reject_over_days = None
    day3 = run_inprocess(sim, db, DAY2 + dt.timedelta(days=1), client=fast_client(sim))
    assert str(day3.window) == "[2026-03-03, 2026-03-07)"


def test_rejected_one_day_window_exits_1_asking_to_narrow_the_request(
    sim: Any, tmp_path: Path
) -> None:
    sim.faults.outcome = "rejected"
    out = run_cli(cli_env(sim, tmp_path / "w.duckdb", initial_start_date=None))
    assert out.returncode == EXIT_FAILURE, out.stderr
    assert "ended rejected" in out.stderr and "narrow the request" in out.stderr
    assert len(sim.submissions) == 1


# -- 4. expired download links and exports that are gone -----------------------------------------

def test_expired_download_link_fetches_fresh_urls(sim: Any, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sim.faults.expired_downloads = 1
    result = run_inprocess(sim, db, DAY1, client=fast_client(sim))
    log = [(r["path"].split("/")[1], r["status"]) for r in sim.request_log]
    refused = log.index(("storage", 403))
    assert ("api", 200) in log[refused:], "the status was fetched again after the 403"
    assert_matches_truth(db, sim.ground_truth(result.export_id))


def test_export_gone_before_it_was_loaded_is_recorded_and_its_window_exported_again(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    sim.processing_polls = 10_000
    with pytest.raises(StillProcessing):
        run_inprocess(sim, db, DAY1, max_wait_seconds=0.2, client=fast_client(sim))
    lost = sim.submissions[0]["export_id"]
    sim.faults.forget = {lost}
    sim.processing_polls = 0
    result = run_inprocess(sim, db, DAY2, client=fast_client(sim))
    assert result.status == "loaded" and result.export_id != lost
    assert any("is gone" in n for n in result.notes)
    rows = {e[0]: e[1] for e in exports(db)}
    assert rows == {lost: "gone", result.export_id: "loaded"}
    assert str(result.window) == "[2026-03-01, 2026-03-06)"
    assert_matches_truth(db, sim.ground_truth(result.export_id))


# -- 5. integrity ---------------------------------------------------------------------------------

def _rewrite_parquet(change: Any) -> Any:
    def damage(data: bytes) -> bytes:
        table = change(pq.read_table(io.BytesIO(data)))
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()
    return damage


INTEGRITY_CASES = [
    # (format, file, damage or "truncate", words the error must contain)
    ("csv", "event-purchase-0.csv", "truncate", ["CSV"]),
    ("parquet", "event-purchase-0.parquet", "truncate", ["unreadable"]),
    ("parquet", "event-email_open-0.parquet", lambda b: b[:-8] + b"\x00" * 8, ["unreadable"]),
    ("parquet", "attrs-1.parquet",
     _rewrite_parquet(lambda t: t.drop_columns(["email"])), ["lacks", "email"]),
    ("parquet", "event-session_start-0.parquet",
     _rewrite_parquet(lambda t: t.append_column("surprise", pa.array([1] * t.num_rows))),
     ["surprise", "did not request"]),
    ("csv", "event-purchase-1.csv",
     lambda b: b"".join(b.splitlines(keepends=True)[:-5]), ["rows", "manifest"]),
    ("csv", "attrs-0.csv", lambda b: b.replace(b"insider_id", b"user_id", 1),
     ["lacks", "insider_id"]),
]


@pytest.mark.parametrize("fmt,name,damage,words", INTEGRITY_CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(INTEGRITY_CASES)])
def test_short_or_corrupt_file_fails_naming_it_and_leaves_the_warehouse_as_it_was(
    sim: Any, tmp_path: Path, fmt: str, name: str, damage: Any, words: list[str]
) -> None:
    db = tmp_path / "w.duckdb"
    run_inprocess(sim, db, DAY1, format=fmt, client=fast_client(sim))
    before = data_snapshot(db)
    assert before["events"], "a real baseline"
    if damage == "truncate":
        sim.faults.truncate_file = name
    else:
        sim.faults.damage = {name: damage}
    with pytest.raises(IntegrityError) as e:
        run_inprocess(sim, db, DAY2, format=fmt, client=fast_client(sim))
    assert name in str(e.value) and e.value.exit_code == EXIT_FAILURE
    for word in words:
        assert word in str(e.value)
    assert data_snapshot(db) == before
    # once the server serves good files, the same export loads (no second submission): the
    # damaged download was not kept
    sim.faults.reset()
    result = run_inprocess(sim, db, DAY2, format=fmt, client=fast_client(sim))
    assert result.resumed and len(sim.submissions) == 2
    assert_export_loaded(db, sim.ground_truth(result.export_id), result.export_id)


# -- 6. backfill ----------------------------------------------------------------------------------

def test_backfill_exports_a_long_range_one_window_a_day_then_the_daily_window(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    daily = run_inprocess(sim, db, DAY1, client=fast_client(sim))  # loaded through 03-05
    assert str(daily.window) == "[2026-03-01, 2026-03-05)"
    backfill = (dt.date(2026, 2, 10), dt.date(2026, 3, 1))
    day = DAY2
    first = run_inprocess(sim, db, day, client=fast_client(sim), backfill=backfill,
                          backfill_window_days=7)
    assert str(first.window) == "[2026-02-10, 2026-02-17)"
    planned = query(db, "SELECT export_id, status FROM insider.exports "
                        "WHERE export_id LIKE 'planned-%' ORDER BY 1")
    assert planned == [("planned-20260210-20260217", "submitted"),
                       ("planned-20260217-20260224", "planned"),
                       ("planned-20260224-20260301", "planned")]
    windows = [str(first.window)]
    for _ in range(2):
        day += dt.timedelta(days=1)
        # asking again for the same backfill (a scheduler re-running the command) is a no-op
        r = run_inprocess(sim, db, day, client=fast_client(sim), backfill=backfill,
                          backfill_window_days=7)
        windows.append(str(r.window))
    assert windows == ["[2026-02-10, 2026-02-17)", "[2026-02-17, 2026-02-24)",
                       "[2026-02-24, 2026-03-01)"]
    day += dt.timedelta(days=1)
    after = run_inprocess(sim, db, day, client=fast_client(sim))
    assert str(after.window) == "[2026-03-03, 2026-03-09)", "the daily window is undisturbed"
    days = {d for (d,) in query(db, "SELECT DISTINCT event_date FROM insider.events")}
    assert days == {dt.date(2026, 2, 10) + dt.timedelta(days=i) for i in range(27)}
    assert len({s["at"].date() for s in sim.submissions}) == len(sim.submissions) == 5
    dup = query(db, "SELECT count(*) FROM (SELECT insider_id, event_name, timestamp, count(*) "
                    "FROM insider.events GROUP BY ALL HAVING count(*) > 1)")
    assert dup == [(0,)]


def test_backfill_killed_after_its_first_submission_resumes_on_a_new_machine(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    env = cli_env(sim, db, initial_start_date=None, backfill_window_days=3)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    start = yesterday - dt.timedelta(days=6)
    killed = run_cli(env, "--backfill", str(start), str(yesterday), kill_at="after_record")
    assert killed.returncode == -9
    shutil.rmtree(tmp_path / "dlt_data")  # and on a new machine
    done = run_cli(env)
    assert done.returncode == 0, done.stderr
    assert len(sim.submissions) == 1
    middle = start + dt.timedelta(days=3)
    assert query(db, "SELECT export_id, status FROM insider.exports "
                     "WHERE export_id LIKE 'planned-%' ORDER BY 1") == [
        (f"planned-{start:%Y%m%d}-{middle:%Y%m%d}", "submitted"),
        (f"planned-{middle:%Y%m%d}-{yesterday:%Y%m%d}", "planned")]
    assert_matches_truth(db, sim.ground_truth(sim.submissions[0]["export_id"]))


@pytest.mark.parametrize("args,words", [
    (["2026-03-01", "2026-02-01"], ["--backfill", "END must be after START"]),
    (["2026-03-01", "2999-01-01"], ["--backfill", "END must be at most"]),
    (["march", "2026-02-01"], ["--backfill", "ISO dates"]),
])
def test_bad_backfill_range_exits_2_before_any_request(
    sim: Any, tmp_path: Path, args: list[str], words: list[str]
) -> None:
    out = run_cli(cli_env(sim, tmp_path / "w.duckdb"), "--backfill", *args)
    assert out.returncode == 2, out.stderr
    for word in words:
        assert word in out.stderr
    assert sim.submissions == []


# -- 8. secrets -----------------------------------------------------------------------------------

def test_the_token_and_url_signatures_never_appear_in_output_traces_or_tables(
    sim: Any, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    env = cli_env(sim, db, initial_start_date=None)
    sim.processing_polls = 10_000  # 1: still processing past the wait budget
    outputs = [run_cli(cli_env(sim, db, initial_start_date=None, max_wait_seconds=0.3),
                       "--debug")]
    sim.processing_polls = 0
    sim.faults.truncate_file = "event-purchase-0.parquet"  # 2: a short file
    outputs.append(run_cli(env, "--debug"))
    sim.faults.reset()
    sim.faults.expired_downloads = 1  # 3: an expired link and a broken download, then success
    sim.faults.download_drop_after_bytes = 100
    sim.faults.download_drops = 1
    outputs.append(run_cli(env, "--debug"))
    other = cli_env(sim, tmp_path / "other.duckdb", request_token="wrong-" + TOKEN)
    other["DLT_DATA_DIR"] = str(tmp_path / "other_dlt")
    outputs.append(run_cli(other))  # 4: a 403
    assert [o.returncode for o in outputs] == [75, 1, 0, 2], outputs[-1].stderr
    text = "".join(o.stdout + o.stderr for o in outputs)
    assert "/storage/" in text, "the debug logs did show the downloads"
    assert TOKEN not in text
    assert "X-Amz-Signature" not in text
    for path in list((tmp_path / "dlt_data").rglob("*")) + [db]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    for r in sim.request_log:
        if r["path"].startswith("/storage/"):
            assert not {h.lower() for h in r["headers"]} & {"x-request-token", "x-partner-name"}


# -- 9. bad input: configuration and server answers ----------------------------------------------

BAD_CONFIG = [
    # (settings changes, words the one message must contain)
    ({"partner_name": "ACME"}, ["partner_name", "'ACME'", "lowercase"]),
    ({"attributes": ["c_loyalty"]}, ["attributes", "c_loyalty", "custom."]),
    ({"attributes": ["Email"]}, ["attributes", "Email"]),
    ({"attributes": ["*", "email"]}, ["attributes", "*"]),
    ({"events": [{"event_name": "purchase", "params": ["c_x"]}]}, ["params", "c_x"]),
    ({"events": [], "attributes": []}, ["attributes", "events"]),
    ({"hook": "example.com/hook"}, ["hook", "scheme"]),
    ({"hook": "https://"}, ["hook"]),
    ({"format": "xlsx"}, ["format", "xlsx", "parquet"]),
    ({"user_source": "events", "segment_id": 5}, ["segment_id", "mutually exclusive"]),
    ({"segment_id": None}, ["segment_id"]),
    ({"segment_id": "abc"}, ["segment_id", "abc"]),
    ({"lookback_days": -1}, ["lookback_days"]),
    ({"lookback_days": "two"}, ["lookback_days", "two"]),
    ({"initial_start_date": "01/03/2026"}, ["initial_start_date", "01/03/2026"]),
    ({"poll_interval_seconds": 0}, ["poll_interval_seconds"]),
    ({"backfill_window_days": 0}, ["backfill_window_days"]),
    ({"base_url": "ftp://insider"}, ["base_url"]),
    ({"events": [{"event_name": "purchase", "filters": [
        {"key": "currency", "operator": "eq", "values": ["USD"]},
        {"key": "quantity", "operator": "gt", "values": ["1"]}]}]}, ["filter"]),
    ({"events": [{"event_name": "purchase", "filters": [
        {"key": "currency", "operator": "eq", "values": ["USD"],
         "values_url": "https://x/v"}]}]}, ["values", "values_url"]),
    ({"get_tags": "sometimes"}, ["get_tags", "sometimes"]),
]


@pytest.mark.parametrize("changes,words", BAD_CONFIG, ids=[str(i) for i in range(len(BAD_CONFIG))])
def test_bad_configuration_gets_one_clear_message_and_exit_2_before_any_request(
    sim: Any, tmp_path: Path, changes: dict[str, Any], words: list[str],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "w.duckdb"
    env = cli_env(sim, db, **changes)
    for key, value in env.items():
        if key.startswith(("SOURCES__", "DESTINATION__")):
            monkeypatch.setenv(key, value)
    for key in ("segment_id", "events", "attributes"):
        if key in changes and changes[key] in (None, []):
            monkeypatch.delenv(f"SOURCES__INSIDER__{key.upper()}", raising=False)
    code = daily_main()
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("configuration error")
    for word in words:
        assert word in err, err
    assert sim.request_log == [], "nothing was sent"
    assert not db.exists()


def daily_main(*args: str) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location("daily", ROOT / "pipelines" / "daily.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["daily"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return int(module.main(list(args)))


BAD_ANSWERS = [
    # (status body served once the export is submitted, exit code, words)
    (b"<html>502 Bad Gateway</html>", EXIT_FAILURE, ["not JSON"]),
    (b'{"export_id": "x", "status": "paused"}', EXIT_FAILURE, ["unknown status", "paused"]),
    (b'{"export_id": "x", "status": "completed", "format": "parquet"}', EXIT_FAILURE,
     ["without 'files'"]),
    (b'{"export_id": "x", "status": "completed", "format": "parquet", "files": {"events": '
     b'[{"name": "e.parquet", "url": "ftp://h/e.parquet", "rows": 3}]}}', EXIT_FAILURE,
     ["scheme", "ftp"]),
    (b'{"export_id": "x", "status": "completed", "format": "parquet", "files": {"events": '
     b'[{"name": "e.parquet", "url": "https://h/e.parquet"}]}}', EXIT_FAILURE, ["'rows'"]),
    (b'{"export_id": "x", "status": "completed", "format": "parquet", "files": {"events": '
     b'[{"name": "../e.parquet", "url": "https://h/e", "rows": 1}]}}', EXIT_FAILURE,
     ["unsafe"]),
    (b'[1, 2]', EXIT_FAILURE, ["JSON object"]),
]


@pytest.mark.parametrize("body,code,words", BAD_ANSWERS,
                         ids=[str(i) for i in range(len(BAD_ANSWERS))])
def test_bad_server_answer_gets_one_clear_message_and_leaves_the_warehouse_alone(
    sim: Any, tmp_path: Path, body: bytes, code: int, words: list[str]
) -> None:
    db = tmp_path / "w.duckdb"
    sim.faults.status_raw = body
    with pytest.raises(InsiderError) as e:
        run_inprocess(sim, db, DAY1, client=fast_client(sim))
    assert e.value.exit_code == code
    for word in words:
        assert word in str(e.value), str(e.value)
    assert len(sim.submissions) == 1
    assert query(db, "SELECT status FROM insider.exports") == [("processing",)]
    assert not query(db, "SELECT count(*) FROM information_schema.tables "
                         "WHERE table_name IN ('events', 'attributes')")[0][0]
    sim.faults.reset()  # the export is still in flight: a re-run picks it up
    result = run_inprocess(sim, db, DAY1, client=fast_client(sim))
    assert result.resumed and len(sim.submissions) == 1


def test_wrong_token_exits_2_naming_the_settings(sim: Any, tmp_path: Path) -> None:
    out = run_cli(cli_env(sim, tmp_path / "w.duckdb", request_token="nope"))
    assert out.returncode == 2
    assert "authentication failed" in out.stderr and "request_token" in out.stderr
    assert sim.submissions == []


def test_submission_outcome_unknown_exits_75(sim: Any, tmp_path: Path) -> None:
    sim.faults.submit_errors = 1000
    with pytest.raises(TransientError) as e:
        run_inprocess(sim, tmp_path / "w.duckdb", DAY1, client=fast_client(sim))
    assert "nothing was submitted" in str(e.value)
    assert sim.submissions == []


def test_outcome_error_names_the_export(sim: Any, tmp_path: Path) -> None:
    sim.faults.outcome = "failed"
    with pytest.raises(ExportOutcomeError) as e:
        run_inprocess(sim, tmp_path / "w.duckdb", DAY1, client=fast_client(sim))
    assert e.value.export_id == sim.submissions[-1]["export_id"]
