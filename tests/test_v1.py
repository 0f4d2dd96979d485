"""Raw Export v1 end to end, through the webhook inbox, into DuckDB; and v2 through the inbox.

The simulator POSTs the v1 file link to the hook URL; the hook URL is the inbox service (waitress,
real sockets) that stores the delivery; the job finds it there, downloads the single v1 file,
splits it into events and attributes and loads the same tables a v2 export gives.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from insider_source.exceptions import StillWaitingForDelivery
from insider_source.inbox import Inbox, InboxConfig, UrlPolicy, make_server
from tests.conftest import PARTNER, TOKEN, query, run_cli, run_inprocess

pytestmark = pytest.mark.e2e

SECRET = "inbox-secret-6f1d0c2b9a8e47d3b5c1"
DAY1 = dt.datetime(2026, 3, 5, 6, 0, tzinfo=dt.UTC)  # window [03-01, 03-05)
LOCAL = UrlPolicy(allowed_hosts=("127.0.0.1",), allow_http=True, allow_private=True)
# columns that differ between two exports of the same data by design
PER_EXPORT = ("export_id", "snapshot_at", "_dlt_load_id", "_dlt_id")


@dataclass
class Service:
    url: str
    inbox: Inbox

    @property
    def hook(self) -> str:
        return f"{self.url}/insider-hook/{SECRET}"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    directory = tmp_path / "inbox"
    server = make_server(InboxConfig(directory=directory, secret=SECRET, url_policy=LOCAL),
                         host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield Service(f"http://127.0.0.1:{server.effective_port}", Inbox(directory))
    finally:
        server.close()


@pytest.fixture
def sim() -> Iterator[Any]:
    from insider_source.simulator import Simulator

    s = Simulator(partner_name=PARTNER, request_token=TOKEN, seed=11, users=300,
                  events_per_user_day=0.5, attribute_chunk_rows=120, event_chunk_days=2,
                  processing_polls=2, hook_delay_seconds=0.1)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def run_v1(sim: Any, service: Service, db: Path, now: dt.datetime = DAY1, **changes: Any) -> Any:
    changes.setdefault("get_tags", False)
    return run_inprocess(sim, db, now, api_version="v1", hook=service.hook,
                         inbox=service.inbox, url_policy=LOCAL, **changes)


def table(db: Path, name: str) -> list[tuple[Any, ...]]:
    cols = sorted(r[0] for r in query(db, f"DESCRIBE insider.{name}") if r[0] not in PER_EXPORT)
    select = ", ".join(f'"{c}"' for c in cols)
    return query(db, f"SELECT {select} FROM insider.{name} ORDER BY ALL")


def columns(db: Path, name: str) -> dict[str, str]:
    return {r[0]: r[1] for r in query(db, f"DESCRIBE insider.{name}") if r[0] not in PER_EXPORT}


def exports(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT export_id, api, status, delivered_at IS NOT NULL, note "
                     "FROM insider.exports ORDER BY submitted_at")


def wait_for(predicate: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- the same warehouse whichever API version --------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_v1_through_the_inbox_loads_the_same_tables_and_values_as_v2(
        sim: Any, service: Service, tmp_path: Path, fmt: str) -> None:
    v1_db, v2_db = tmp_path / "v1.duckdb", tmp_path / "v2.duckdb"
    result = run_v1(sim, service, v1_db, format=fmt)
    assert result.status == "loaded" and result.export_id.startswith("v1-20260301-")
    [request] = sim.v1_requests
    assert request["body"]["format"] == fmt
    assert request["body"]["hook"].endswith(f"?ref={result.export_id}")
    truth = sim.v1_ground_truth(request["id"])
    assert truth["events"].num_rows > 100 and truth["attributes"].num_rows > 100

    v2 = run_inprocess(sim, v2_db, DAY1, pipeline_name="insider_v2", format="parquet",
                       get_tags=False)
    assert v2.status == "loaded"
    for name in ("events", "attributes", "attributes_history"):
        assert columns(v1_db, name) == columns(v2_db, name), name
        got, want = table(v1_db, name), table(v2_db, name)
        assert len(got) > 100 and got == want, name
    assert len(table(v1_db, "events")) == truth["events"].num_rows
    assert len(table(v1_db, "attributes")) == truth["attributes"].num_rows

    [(eid, api, status, delivered, _)] = exports(v1_db)
    assert (eid, api, status, delivered) == (result.export_id, "v1", "loaded", True)
    files = query(v1_db, "SELECT name, rows_manifest, rows_loaded FROM insider.exports__files "
                         "ORDER BY name")
    assert len(files) == 2
    assert sorted(r[2] for r in files) == sorted([truth["attributes"].num_rows,
                                                  truth["events"].num_rows])
    assert service.inbox.pending() == [], "a loaded delivery is archived"


def test_every_model_is_the_same_for_v1_and_v2(sim: Any, service: Service,
                                               tmp_path: Path) -> None:
    import dlt

    from insider_source.transform import run_models

    v1_db, v2_db = tmp_path / "v1.duckdb", tmp_path / "v2.duckdb"
    assert run_v1(sim, service, v1_db, format="csv").status == "loaded"
    assert run_inprocess(sim, v2_db, DAY1, pipeline_name="insider_v2",
                         get_tags=False).status == "loaded"
    built = {}
    for db, name in ((v1_db, "insider_daily"), (v2_db, "insider_v2")):
        pipeline = dlt.pipeline(name, destination=dlt.destinations.duckdb(str(db)),
                                dataset_name="insider")
        built[db] = {r.name: r.rows for r in run_models(pipeline)}
    assert built[v1_db] == built[v2_db] and all(n > 0 for n in built[v1_db].values())
    for model in ("user_summary", "daily_event_counts", "events_enriched"):
        got, want = table(v1_db, model), table(v2_db, model)
        assert len(got) > 10 and got == want, model


# -- waiting, duplicates, expiry, kills ----------------------------------------------------------

def test_v1_waiting_for_its_delivery_exits_75_and_never_submits_again(
        sim: Any, service: Service, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sim.faults.v1_deliveries = 0  # the link does not come (yet)
    for _ in range(2):
        with pytest.raises(StillWaitingForDelivery) as e:
            run_v1(sim, service, db, max_wait_seconds=0.3)
        assert e.value.exit_code == 75
        assert "still waiting for its file link in the webhook inbox" in str(e.value)
        assert len(sim.v1_requests) == 1, "a waiting request is never submitted again"
    [(eid, api, status, delivered, _)] = exports(db)
    assert (api, status, delivered) == ("v1", "submitted", False)

    # the link comes late (Insider can take hours): deliver it as Insider would
    [request] = sim.v1_requests
    url = sim._sign(request["id"], request["file"])
    answer = requests.post(request["hook"], json={"url": url}, timeout=10)
    assert answer.status_code == 200, answer.text
    result = run_v1(sim, service, db)
    assert (result.status, result.export_id, result.resumed) == ("loaded", eid, True)
    assert len(table(db, "events")) == sim.v1_ground_truth(request["id"])["events"].num_rows


def test_duplicate_deliveries_are_stored_once_and_loaded_once(
        sim: Any, service: Service, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sim.faults.v1_deliveries = 2  # Insider delivers the same link twice
    result = run_v1(sim, service, db)
    assert result.status == "loaded"
    wait_for(lambda: len([d for d in sim.deliveries if d["kind"] == "v1"]) == 2)
    assert all(d["status"] == 200 for d in sim.deliveries)
    [request] = sim.v1_requests
    truth = sim.v1_ground_truth(request["id"])
    assert len(table(db, "events")) == truth["events"].num_rows
    assert service.inbox.pending() == []  # the duplicate was not stored again
    nxt = run_v1(sim, service, db, now=DAY1 + dt.timedelta(days=1))
    assert nxt.status == "loaded" and nxt.export_id != result.export_id
    assert len(sim.v1_requests) == 2


def test_an_expired_v1_link_is_recorded_and_its_window_submitted_again(
        sim: Any, service: Service, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sim.hook_delay_seconds = 3  # later than the submission's own small load takes
    with pytest.raises(StillWaitingForDelivery):
        run_v1(sim, service, db, max_wait_seconds=0.1)
    wait_for(lambda: len(service.inbox.pending()) == 1)
    later = DAY1 + dt.timedelta(hours=30)  # the link lived 24 h
    result = run_v1(sim, service, db, now=later)
    assert result.status == "loaded"
    first, second = sim.v1_requests
    # its window again (grown by the day that passed meanwhile: nothing is skipped)
    assert second["body"]["events"]["start_date"] == first["body"]["events"]["start_date"]
    assert second["body"]["events"]["end_date"] == first["body"]["events"]["end_date"] + 86400
    rows = exports(db)
    assert [(r[1], r[2]) for r in rows] == [("v1", "expired"), ("v1", "loaded")]
    assert "expired" in result.notes[0]
    assert len(table(db, "events")) == sim.v1_ground_truth(second["id"])["events"].num_rows


def test_v1_killed_job_resumes_from_the_inbox_without_losing_the_delivery(
        sim: Any, service: Service, tmp_path: Path) -> None:
    from tests.conftest import cli_env

    db = tmp_path / "w.duckdb"
    env = cli_env(sim, db, initial_start_date=None, api_version="v1", hook=service.hook,
                  format="csv", get_tags=False)
    env.update({"INSIDER_INBOX__DIR": str(service.inbox.directory),
                "INSIDER_INBOX__ALLOWED_HOSTS": '["127.0.0.1"]',
                "INSIDER_INBOX__ALLOW_HTTP": "true",
                "INSIDER_INBOX__ALLOW_PRIVATE_ADDRESSES": "true"})
    for point in ("after_record", "after_download", "after_extract"):
        killed = run_cli(env, kill_at=point)
        assert killed.returncode == -9, f"not killed at {point}: {killed.stderr}"
        assert len(sim.v1_requests) == 1
        if point == "after_record":  # and a new machine: the request comes back from DuckDB
            shutil.rmtree(tmp_path / "dlt_data")
    done = run_cli(env)
    assert done.returncode == 0, done.stderr
    assert len(sim.v1_requests) == 1, "a re-run never submits a second v1 request"
    truth = sim.v1_ground_truth(sim.v1_requests[0]["id"])
    assert len(table(db, "events")) == truth["events"].num_rows
    assert len(table(db, "attributes")) == truth["attributes"].num_rows
    assert [r[2] for r in exports(db)] == ["loaded"]
    output = "".join(r.stdout + r.stderr for r in (killed, done))
    assert SECRET not in output and TOKEN not in output


def test_v2_manifest_delivered_to_the_inbox_is_loaded_without_polling(
        sim: Any, service: Service, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sim.deliver_v2_hooks = True
    sim.processing_polls = 10_000  # polling alone would never see it complete
    result = run_inprocess(sim, db, DAY1, hook=service.hook, inbox=service.inbox,
                           url_policy=LOCAL, max_wait_seconds=20, poll_interval_seconds=0.05)
    assert result.status == "loaded"
    truth = sim.ground_truth(result.export_id)
    assert len(table(db, "events")) == truth["events"].num_rows
    [(eid, api, status, delivered, _)] = exports(db)
    assert (eid, api, status, delivered) == (result.export_id, "v2", "loaded", True)
    assert service.inbox.pending() == []


def test_a_delivery_nobody_waits_for_is_reported_and_left_alone(
        sim: Any, service: Service, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    url = "http://127.0.0.1:9/acme/p/other.csv?X-Amz-Signature=abc"
    answer = requests.post(f"{service.hook}?ref=someone-else", json={"url": url}, timeout=10)
    assert answer.status_code == 200
    result = run_v1(sim, service, db)
    assert result.status == "loaded"
    assert any("someone-else" in n and "no export of this pipeline" in n for n in result.notes)
    assert [d.ref for d in service.inbox.pending()] == ["someone-else"]


def test_v1_without_an_inbox_is_a_configuration_error_before_any_request(
        sim: Any, tmp_path: Path) -> None:
    from insider_source.exceptions import ConfigError

    with pytest.raises(ConfigError) as e:
        run_inprocess(sim, tmp_path / "w.duckdb", DAY1, api_version="v1", get_tags=False)
    assert "insider_inbox" in str(e.value)
    assert sim.v1_requests == [] and sim.request_log == []


def test_a_delivered_link_redirecting_to_a_refused_host_is_not_followed(
        sim: Any, service: Service, tmp_path: Path) -> None:
    """The URL passed the inbox's policy, but its host redirects elsewhere: the job checks the
    redirect target with the same policy and fetches nothing from it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from insider_source.exceptions import ApiError

    hits: list[str] = []

    class Internal(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    internal = ThreadingHTTPServer(("127.0.0.1", 0), Internal)
    target = f"http://localhost:{internal.server_address[1]}/latest/meta-data"

    class Redirector(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    for server in (internal, redirector):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        db = tmp_path / "w.duckdb"
        sim.faults.v1_deliveries = 0
        with pytest.raises(StillWaitingForDelivery):
            run_v1(sim, service, db, max_wait_seconds=0.1)
        [request] = sim.v1_requests
        link = f"http://127.0.0.1:{redirector.server_address[1]}/acme/p/file.csv?X-Amz-Signature=s"
        assert requests.post(request["hook"], json={"url": link}, timeout=10).status_code == 200
        with pytest.raises(ApiError) as e:
            run_v1(sim, service, db)
        assert "redirect to http://localhost" in str(e.value) and "refused" in str(e.value)
        assert hits == [], "the refused redirect target was fetched"
        assert query(db, "SELECT count(*) FROM insider.exports WHERE status = 'loaded'") == [(0,)]
    finally:
        for server in (internal, redirector):
            server.shutdown()
            server.server_close()


def test_a_v1_file_gone_from_storage_is_recorded_and_its_window_submitted_again(
        sim: Any, service: Service, tmp_path: Path) -> None:
    from insider_source.exceptions import QuotaExceeded

    db = tmp_path / "w.duckdb"
    sim.faults.v1_deliveries = 0
    with pytest.raises(StillWaitingForDelivery):
        run_v1(sim, service, db, max_wait_seconds=0.1)
    [request] = sim.v1_requests
    missing = sim._sign(request["id"], "no-such-file.csv")  # signed, but nothing there: 404
    assert requests.post(request["hook"], json={"url": missing}, timeout=10).status_code == 200
    with pytest.raises(QuotaExceeded):  # today's request is used; the window waits for tomorrow
        run_v1(sim, service, db)
    assert [(r[1], r[2]) for r in exports(db)] == [("v1", "gone")]
    assert service.inbox.pending() == [], "the useless delivery is archived"
    sim.faults.v1_deliveries = 1
    result = run_v1(sim, service, db, now=DAY1 + dt.timedelta(days=1))
    assert result.status == "loaded"
    assert [(r[1], r[2]) for r in exports(db)] == [("v1", "gone"), ("v1", "loaded")]
