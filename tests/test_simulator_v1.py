"""Raw Export v1 in the simulator over real HTTP: validation, quota, the single file, webhooks."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import requests

from insider_source.simulator import CATALOG, Simulator

PARTNER, TOKEN = "acme", "tok-v1-5e2b"
HEADERS = {"X-PARTNER-NAME": PARTNER, "X-REQUEST-TOKEN": TOKEN}
NOW = dt.datetime(2026, 3, 5, 6, 0, tzinfo=dt.UTC)
D = 86_400
MAR1 = 1772323200  # 2026-03-01 00:00 UTC
USERS = 90
WANTED: list[dict[str, Any]] = [
    {"event_name": "purchase",
     "params": ["product_id", "unit_price", "quantity", "c_gift_wrap", "timestamp", "source"]},
    {"event_name": "email_open", "params": ["campaign_id", "custom.campaign_variant",
                                            "timestamp", "source"]},
    {"event_name": "session_start", "params": ["device_type", "timestamp", "source"]},
]
V1_BODY: dict[str, Any] = {
    "segment": {"segment_id": 4242},
    "attributes": ["email", "age", "email_optin", "created_date", "last_purchase_date",
                   "c_loyalty_tier", "custom.lifetime_value"],
    "events": {"start_date": MAR1, "end_date": MAR1 + 3 * D, "wanted": WANTED},
    "format": "csv",
    "hook": "https://example.com/hook",
}


# -- fixtures and helpers ---------------------------------------------------------------------


class Receiver:
    """A tiny webhook receiver on 127.0.0.1 that records every POST."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 200
        self._cond = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._cond:
                    owner.posts.append({"path": self.path, "headers": dict(self.headers),
                                        "raw": raw})
                    owner._cond.notify_all()
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def wait(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.posts) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.posts)} of {n} webhook POSTs arrived"
                self._cond.wait(left)
            return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(partner_name=PARTNER, request_token=TOKEN, seed=5, users=USERS,
                  events_per_user_day=0.7, hook_delay_seconds=0.05)
    s.set_now(NOW)
    with s:
        yield s


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def body(**changes: Any) -> dict[str, Any]:
    b = copy.deepcopy(V1_BODY)
    for k, v in changes.items():
        if v is None:
            b.pop(k, None)
        else:
            b[k] = v
    return b


def events(**changes: Any) -> dict[str, Any]:
    ev: dict[str, Any] = copy.deepcopy(V1_BODY["events"])
    ev.update(changes)
    return ev


def wanted(**entry: Any) -> dict[str, Any]:
    return events(wanted=[{"event_name": "purchase", "params": ["product_id"], **entry}])


def submit(sim: Simulator, data: Any, headers: dict[str, str] | None = None) -> requests.Response:
    hdrs = HEADERS if headers is None else headers
    url = f"{sim.base_url}/api/raw/v1/export"
    if isinstance(data, bytes | str):
        return requests.post(url, data=data, headers={**hdrs, "Content-Type": "application/json"},
                             timeout=10)
    return requests.post(url, json=data, headers=hdrs, timeout=10)


def accepted(sim: Simulator, data: dict[str, Any]) -> str:
    """Submit a v1 request that must be accepted; return its internal id."""
    n = len(sim.v1_requests)
    r = submit(sim, data)
    assert (r.status_code, r.json()) == (200, {"message": "export request accepted"}), r.text
    assert len(sim.v1_requests) == n + 1
    return str(sim.v1_requests[-1]["id"])


def v1_name(prefix: str, public: str) -> str:
    if public.startswith("custom."):
        return f"{prefix}_c_{public[len('custom.'):]}"
    return f"{prefix}_{public}"


def expected_types(truth: dict[str, pa.Table]) -> dict[str, pa.DataType]:
    """The type of every v1 column, derived from the v2-shaped truth."""
    types: dict[str, pa.DataType] = {"event_name": pa.string(), "iid": pa.string()}
    for f in truth["attributes"].schema:
        if f.name != "insider_id":
            types[v1_name("a", f.name)] = f.type
    for f in truth["events"].schema:
        if f.name not in ("insider_id", "event_name"):
            types[v1_name("e", f.name)] = f.type
    return types


def parse_file(content: bytes, fmt: str, truth: dict[str, pa.Table], ts_format: str) -> pa.Table:
    """Read a downloaded v1 file back into typed Arrow with v1 column names."""
    types = expected_types(truth)
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(content))
        if "e_timestamp" in table.column_names and ts_format != "iso":
            i = table.column_names.index("e_timestamp")
            col = table.column(i)
            assert pa.types.is_integer(col.type)
            factor = 1_000_000 if ts_format == "epoch_s" else 1_000
            table = table.set_column(i, "e_timestamp", pc.multiply(col, factor).cast(
                pa.timestamp("us", tz="UTC")))
    elif fmt == "csv":
        header = content.split(b"\n", 1)[0].decode().split(",")
        table = pacsv.read_csv(io.BytesIO(content), convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in header}, strings_can_be_null=True,
            null_values=["\\N"]))
    else:
        lines = content.decode("utf-8").splitlines()
        rows = [json.loads(line) for line in lines]
        assert all(isinstance(r, dict) for r in rows)
        table = pa.Table.from_pylist(rows)
    cols = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        typ = types[name]
        if pa.types.is_timestamp(typ) and not pa.types.is_timestamp(col.type):
            assert pc.all(pc.ends_with(col, "Z")).as_py() is not False, name
        cols.append(col.cast(typ))
    return pa.table(cols, names=table.column_names)


def as_truth(table: pa.Table, truth: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Split a parsed v1 file into the v2 shape of ``v1_ground_truth``."""
    out: dict[str, pa.Table] = {}
    ev_schema = truth["events"].schema
    if "event_name" in table.column_names:
        ev = table.filter(pc.is_valid(table.column("event_name")))
        cols = []
        for f in ev_schema:
            src = {"insider_id": "iid"}.get(f.name, f.name if f.name == "event_name"
                                            else v1_name("e", f.name))
            cols.append(ev.column(src) if src in ev.column_names
                        else pa.nulls(ev.num_rows, f.type))
        out["events"] = pa.table(cols, schema=ev_schema)
    a_schema = truth["attributes"].schema
    attrs = table.select(["iid"] + [v1_name("a", n) for n in a_schema.names[1:]])
    distinct = attrs.group_by(attrs.column_names).aggregate([])
    out["attributes"] = pa.table(distinct.select(attrs.column_names).columns,
                                 schema=a_schema).sort_by("insider_id")
    return out


# -- auth and validation ----------------------------------------------------------------------


@pytest.mark.parametrize("headers,code,message", [
    ({"X-REQUEST-TOKEN": TOKEN}, 400, "partner name is required"),
    ({"X-PARTNER-NAME": "", "X-REQUEST-TOKEN": TOKEN}, 400, "partner name is required"),
    ({"X-PARTNER-NAME": PARTNER, "X-REQUEST-TOKEN": ""}, 400, "request token is required"),
    ({"X-PARTNER-NAME": PARTNER, "X-REQUEST-TOKEN": "wrong"}, 403, "authentication failed"),
    ({"X-PARTNER-NAME": "other", "X-REQUEST-TOKEN": TOKEN}, 403, "authentication failed"),
])
def test_auth_errors(sim: Simulator, headers: dict[str, str], code: int, message: str) -> None:
    r = submit(sim, V1_BODY, headers)
    assert (r.status_code, r.json()) == (code, {"error": message})
    assert sim.v1_requests == []
    assert submit(sim, V1_BODY).status_code == 200  # auth failures used no quota


BAD_REQUESTS: list[tuple[Any, str]] = [
    (b"{not json", "invalid JSON body"),
    (b"[1, 2]", "invalid JSON body"),
    (body(segment=None), "segment is required"),
    (body(segment={"segment_id": 0}), "segment_id must be a positive integer"),
    (body(segment={"segment_id": "12"}), "segment_id must be a positive integer"),
    (body(segment=123), "segment_id must be a positive integer"),
    (body(attributes=None, events=None), "at least one of attributes or events is required"),
    (body(attributes=[], events=None), "at least one of attributes or events is required"),
    (body(attributes="email"), "attributes must be a list of strings"),
    (body(attributes=["email", 3]), "attributes must be a list of strings"),
    (body(attributes=["*", "email"]), "invalid attribute *"),
    (body(events=[]), "events must be an object"),
    (body(events=events(start_date=None)), "start_date is required"),
    (body(events=events(end_date="tomorrow")), "end_date must be a number of epoch seconds"),
    (body(events=events(end_date=MAR1)), "end_date must be greater than start_date"),
    (body(events=events(start_date=MAR1 * 1000, end_date=MAR1 * 1001)),
     "start_date must be epoch seconds, not milliseconds"),
    (body(events=events(wanted=None)), "wanted is required"),
    (body(events=events(wanted=[])), "wanted must be a non-empty list"),
    (body(events=events(wanted=["purchase"])), "each wanted entry must be an object"),
    (body(events=events(wanted=[{"params": ["product_id"]}])), "event_name is required"),
    (body(events=events(wanted=[{"event_name": 7, "params": []}])),
     "event_name must be a string"),
    (body(events=events(wanted=[{"event_name": "purchase"}])), "params is required"),
    (body(events=wanted(params="product_id")), "params must be a list of strings"),
    (body(events=wanted(filters={"key": "currency"})), "filters must be a list"),
    (body(events=wanted(filters=[{"key": "currency", "operator": "eq", "values": ["USD"]},
                                 {"key": "quantity", "operator": "gt", "values": [1]}])),
     "at most one filter per event"),
    (body(events=wanted(filters=[{"operator": "eq", "values": ["USD"]}])),
     "filter key is required"),
    (body(events=wanted(filters=[{"key": "currency", "values": ["USD"]}])),
     "filter operator is required"),
    (body(events=wanted(filters=[{"key": "currency", "operator": "in", "values": ["USD"]}])),
     "invalid filter operator in"),
    (body(events=wanted(filters=[{"key": "currency", "operator": "eq", "values": ["USD"],
                                  "values_url": "https://example.com/v.csv"}])),
     "provide either values or values_url, not both"),
    (body(events=wanted(filters=[{"key": "currency", "operator": "eq"}])),
     "values or values_url is required"),
    (body(events=wanted(filters=[{"key": "currency", "operator": "eq", "values": []}])),
     "values must be a non-empty list"),
    (body(format=None), "format is required"),
    (body(format="xlsx"), "format must be csv, parquet or json"),
    (body(hook=None), "hook is required"),
    (body(hook="example.com/hook"), "invalid hook"),
    (body(hook="ftp://example.com/hook"), "invalid hook"),
]


def test_validation_errors_and_they_do_not_use_the_quota(sim: Simulator) -> None:
    messages = set()
    for data, message in BAD_REQUESTS:
        r = submit(sim, data)
        assert (r.status_code, r.json()) == (400, {"error": message}), data
        messages.add(message)
    assert len(messages) >= 25
    assert sim.v1_requests == []
    accepted(sim, V1_BODY)  # no 400 consumed the day's quota


def test_quota_one_v1_request_per_utc_day_separate_from_v2(sim: Simulator) -> None:
    first = accepted(sim, V1_BODY)
    again = submit(sim, V1_BODY)
    assert (again.status_code, again.json()) == (429, {"error": "rejected: too many requests"})
    sim.set_now(NOW.replace(hour=23, minute=59, second=59))
    assert submit(sim, body(format="json")).status_code == 429
    # v2 has its own quota: the v1 request did not use it
    v2 = requests.post(f"{sim.base_url}/api/raw/v2/export", headers=HEADERS, timeout=10, json={
        "format": "csv", "segment": {"segment_id": 1}, "attributes": ["email"],
        "hook": "https://example.com/hook"})
    assert v2.status_code == 200 and "export_id" in v2.json()
    sim.set_now(NOW + dt.timedelta(days=1))  # 00:00 UTC resets the quota
    second = accepted(sim, body(format="json"))
    assert second != first and len(second) == 16 and re.fullmatch(r"[0-9a-f]{16}", second)
    reqs = sim.v1_requests
    assert [r["file"] for r in reqs] == ["acme-20260305-1.csv", "acme-20260306-2.json"]
    assert reqs[0]["body"] == V1_BODY and reqs[0]["at"] == NOW
    assert reqs[0]["hook"] == V1_BODY["hook"]
    assert submit(sim, V1_BODY).status_code == 429


def test_submit_errors_fault_uses_no_quota(sim: Simulator) -> None:
    sim.faults.submit_errors = 1
    r = submit(sim, V1_BODY)
    assert r.status_code == 500 and sim.v1_requests == []
    accepted(sim, V1_BODY)


# -- delivery ---------------------------------------------------------------------------------


def test_delivery_posts_the_signed_url_to_the_hook_as_given(
    sim: Simulator, receiver: Receiver
) -> None:
    hook = f"{receiver.url}/insider/hook?ref=nightly&x=1"
    vid = accepted(sim, body(hook=hook))
    posts = receiver.wait(1)
    assert len(posts) == 1
    post = posts[0]
    assert post["path"] == "/insider/hook?ref=nightly&x=1"  # query string kept
    assert post["headers"]["Content-Type"] == "application/json"
    delivered = json.loads(post["raw"])
    assert set(delivered) == {"url"}
    url = delivered["url"]
    assert urlsplit(url).path == f"/storage/{vid}/acme-20260305-1.csv"
    assert set(re.findall(r"(X-Amz-\w+)=", url)) == {"X-Amz-Date", "X-Amz-Expires",
                                                     "X-Amz-Signature"}
    got = requests.get(url, timeout=10)
    assert got.status_code == 200 and got.content == sim.v1_file_bytes(vid)
    assert got.headers["Content-Type"].startswith("text/csv")
    rec = sim.wait_for_deliveries(1)
    assert rec == [{"kind": "v1", "hook": hook, "body": delivered, "status": 200,
                    "error": None}]
    # the link expires after url_ttl_seconds, like v2's
    sim.set_now(NOW + dt.timedelta(seconds=sim.url_ttl_seconds + 1))
    expired = requests.get(url, timeout=10)
    assert expired.status_code == 403 and "Request has expired" in expired.text
    # no v2 export, no v2 delivery
    time.sleep(0.2)
    assert len(sim.deliveries) == 1 and len(receiver.posts) == 1


def test_duplicated_delivery_fault(sim: Simulator, receiver: Receiver) -> None:
    sim.faults.v1_deliveries = 2
    vid = accepted(sim, body(hook=f"{receiver.url}/hook", format="json"))
    posts = receiver.wait(2)
    urls = [json.loads(p["raw"])["url"] for p in posts]
    assert len(urls) == 2
    assert {urlsplit(u).path for u in urls} == {f"/storage/{vid}/acme-20260305-1.json"}
    for u in urls:
        assert requests.get(u, timeout=10).content == sim.v1_file_bytes(vid)
    recs = sim.wait_for_deliveries(2)
    assert [(r["kind"], r["status"], r["error"]) for r in recs] == [("v1", 200, None)] * 2
    time.sleep(0.3)
    assert len(receiver.posts) == 2  # exactly two, never retried


def test_lost_delivery_fault(sim: Simulator, receiver: Receiver) -> None:
    sim.faults.v1_deliveries = 0
    vid = accepted(sim, body(hook=f"{receiver.url}/hook"))
    assert sim.v1_file_bytes(vid).startswith(b"a_email,")  # the file exists...
    time.sleep(sim.hook_delay_seconds + 0.5)
    assert receiver.posts == [] and sim.deliveries == []  # ...but nobody is told


def test_hook_failures_drop_deliveries_without_sending(
    sim: Simulator, receiver: Receiver
) -> None:
    sim.faults.v1_deliveries = 2
    sim.faults.hook_failures = 1
    vid = accepted(sim, body(hook=f"{receiver.url}/hook"))
    recs = sim.wait_for_deliveries(2)
    assert [(r["status"], r["error"]) for r in recs] == [(None, "dropped"), (200, None)]
    assert sim.faults.hook_failures == 0
    posts = receiver.wait(1)
    time.sleep(0.2)
    assert len(receiver.posts) == 1
    assert requests.get(json.loads(posts[0]["raw"])["url"], timeout=10).content == (
        sim.v1_file_bytes(vid))


def test_failing_receiver_is_recorded_and_not_retried(
    sim: Simulator, receiver: Receiver
) -> None:
    receiver.status = 500
    accepted(sim, body(hook=f"{receiver.url}/hook"))
    recs = sim.wait_for_deliveries(1)
    assert (recs[0]["status"], recs[0]["error"]) == (500, "HTTP 500")
    time.sleep(0.3)
    assert len(receiver.posts) == 1 and len(sim.deliveries) == 1


@pytest.mark.parametrize("hook", ["https://example.com/hook?ref=1", "http://10.1.2.3:8080/h"])
def test_non_loopback_hook_is_not_delivered(sim: Simulator, hook: str) -> None:
    vid = accepted(sim, body(hook=hook))
    recs = sim.wait_for_deliveries(1)
    assert len(recs) == 1
    rec = recs[0]
    assert (rec["kind"], rec["hook"], rec["status"]) == ("v1", hook, None)
    assert rec["error"] and "loopback" in rec["error"]
    assert urlsplit(rec["body"]["url"]).path == f"/storage/{vid}/acme-20260305-1.csv"


def test_v2_hook_delivery_equals_the_status_body(receiver: Receiver) -> None:
    s = Simulator(partner_name=PARTNER, request_token=TOKEN, seed=5, users=60,
                  attribute_chunk_rows=25, processing_polls=1, hook_delay_seconds=0.01,
                  deliver_v2_hooks=True)
    s.set_now(NOW)
    v2_body = {"format": "parquet", "segment": {"segment_id": 1}, "attributes": ["email"],
               "events": {"start_date": MAR1, "end_date": MAR1 + 2 * D,
                          "wanted": [{"event_name": "purchase", "params": ["quantity"]}]},
               "hook": f"{receiver.url}/v2hook?ref=abc"}

    def strip(b: dict[str, Any]) -> dict[str, Any]:
        b = copy.deepcopy(b)
        for files in b.get("files", {}).values():
            for f in files:
                f["url"] = f["url"].split("?", 1)[0]
        return b

    with s:
        for day, outcome in enumerate(["completed", "failed"]):
            s.set_now(NOW + dt.timedelta(days=day))
            s.faults.outcome = outcome
            r = requests.post(f"{s.base_url}/api/raw/v2/export", json=v2_body, headers=HEADERS,
                              timeout=10)
            eid = r.json()["export_id"]
            post = receiver.wait(day + 1)[day]
            assert post["path"] == "/v2hook?ref=abc"
            assert post["headers"]["Content-Type"] == "application/json"
            delivered = json.loads(post["raw"])
            assert delivered["export_id"] == eid and delivered["status"] == outcome
            final = requests.get(f"{s.base_url}/api/raw/v2/export/{eid}", headers=HEADERS,
                                 timeout=30).json()
            assert strip(delivered) == strip(final)
            rec = s.wait_for_deliveries(day + 1)[day]
            assert (rec["kind"], rec["status"], rec["body"]) == ("v2", 200, delivered)
            if outcome == "completed":
                assert delivered["files"]["attributes"] and delivered["files"]["events"]
                for f in delivered["files"]["attributes"] + delivered["files"]["events"]:
                    got = requests.get(f["url"], timeout=10)
                    assert got.content == s.file_bytes(eid, f["name"])
            else:
                assert set(delivered) == {"export_id", "status", "error"}


# -- the file ---------------------------------------------------------------------------------


def test_csv_layout_and_nulls(sim: Simulator) -> None:
    vid = accepted(sim, V1_BODY)
    text = sim.v1_file_bytes(vid).decode("utf-8")
    lines = text.splitlines()
    assert lines[0].split(",") == [
        "a_email", "a_age", "a_email_optin", "a_created_date", "a_last_purchase_date",
        "a_c_loyalty_tier", "a_c_lifetime_value",
        "event_name",
        "e_product_id", "e_unit_price", "e_quantity", "e_c_gift_wrap", "e_timestamp",
        "e_source", "e_campaign_id", "e_c_campaign_variant", "e_device_type",
        "iid"]
    rows = list(pacsv.read_csv(io.BytesIO(text.encode()), convert_options=pacsv.ConvertOptions(
        column_types={n: pa.string() for n in lines[0].split(",")},
        strings_can_be_null=False)).to_pylist())
    assert len(rows) == len(lines) - 1
    assert any(r["a_last_purchase_date"] == "\\N" for r in rows)  # NULL is \N, never empty
    assert not any(v == "" for r in rows for v in r.values())
    purchases = [r for r in rows if r["event_name"] == "purchase"]
    sessions = [r for r in rows if r["event_name"] == "session_start"]
    idle = [r for r in rows if r["event_name"] == "\\N"]
    assert purchases and sessions and idle
    # an event row holds only its own params; the others are NULL
    assert all(r["e_device_type"] == "\\N" and r["e_product_id"] != "\\N" for r in purchases)
    assert all(r["e_product_id"] == "\\N" for r in sessions)
    assert {r["e_c_gift_wrap"] for r in purchases} <= {"true", "false", "\\N"}
    assert {r["a_email_optin"] for r in rows} <= {"true", "false", "\\N"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["e_timestamp"])
               for r in purchases + sessions)
    assert all(r["a_created_date"].endswith("Z") for r in rows)
    # users without an event: one row each, all event columns NULL, attributes present
    assert all(all(v == "\\N" for k, v in r.items() if k.startswith("e_")) for r in idle)
    assert len({r["iid"] for r in idle}) == len(idle)
    assert {r["iid"] for r in rows} == {r["iid"] for r in idle} | {
        r["iid"] for r in rows if r["event_name"] != "\\N"}
    assert len({r["iid"] for r in rows}) == USERS
    # the user's current attributes repeat on each of their rows
    by_user: dict[str, set[tuple[str, ...]]] = {}
    for r in rows:
        by_user.setdefault(r["iid"], set()).add(tuple(v for k, v in r.items()
                                                      if k.startswith("a_")))
    assert all(len(v) == 1 for v in by_user.values())


@pytest.mark.parametrize("fmt,ts_format", [
    ("csv", "iso"), ("json", "iso"), ("parquet", "iso"), ("parquet", "epoch_ms"),
    ("csv", "epoch_s"),
])
def test_file_rows_equal_ground_truth(sim: Simulator, fmt: str, ts_format: str) -> None:
    sim.timestamp_format = ts_format
    vid = accepted(sim, body(format=fmt))
    content = sim.v1_file_bytes(vid)
    truth = sim.v1_ground_truth(vid)
    table = parse_file(content, fmt, truth, ts_format)
    assert table.column_names[-1] == "iid" and table.column_names.index("event_name") == 7
    got = as_truth(table, truth)
    ev = truth["events"]
    assert ev.num_rows > 0 and got["events"].num_rows == ev.num_rows
    assert got["events"].equals(ev)
    n_users = pc.count_distinct(table.column("iid")).as_py()
    assert n_users == truth["attributes"].num_rows == USERS
    assert got["attributes"].num_rows == n_users  # the same attributes on every row of a user
    assert got["attributes"].equals(truth["attributes"].sort_by("insider_id"))
    idle = table.num_rows - ev.num_rows
    assert idle == USERS - pc.count_distinct(ev.column("insider_id")).as_py() > 0
    if fmt == "parquet":
        schema = pq.read_schema(io.BytesIO(content))
        assert schema.field("a_created_date").type == pa.timestamp("us", tz="UTC")
        assert schema.field("a_c_lifetime_value").type == pa.float64()
        assert schema.field("e_quantity").type == pa.int64()
        assert schema.field("e_c_gift_wrap").type == pa.bool_()
        assert schema.field("e_timestamp").type == (
            pa.string() if ts_format == "iso" else pa.int64())
    if fmt == "json":
        lines = content.decode("utf-8").splitlines()
        assert len(lines) == table.num_rows
        first = json.loads(lines[0])
        assert list(first) == table.column_names
        assert first["e_timestamp"].endswith("Z") and first["a_created_date"].endswith("Z")
        assert any(json.loads(line)["event_name"] is None for line in lines)


def test_v1_and_v2_of_the_same_request_serve_the_same_values(sim: Simulator) -> None:
    vid = accepted(sim, body(format="parquet"))
    v2_wanted = [{"event_name": w["event_name"],
                  "params": [("custom." + p[2:]) if p.startswith("c_") else p
                             for p in w["params"] if p not in ("timestamp", "source")]}
                 for w in WANTED]
    v2 = requests.post(f"{sim.base_url}/api/raw/v2/export", headers=HEADERS, timeout=10, json={
        "format": "parquet", "segment": {"segment_id": 4242},
        "attributes": ["email", "age", "email_optin", "created_date", "last_purchase_date",
                       "custom.loyalty_tier", "custom.lifetime_value"],
        "events": {**V1_BODY["events"], "wanted": v2_wanted}, "hook": "https://example.com/h"})
    assert v2.status_code == 200, v2.text
    eid = v2.json()["export_id"]
    assert sim.manifest(eid)["status"] == "completed"
    t1, t2 = sim.v1_ground_truth(vid), sim.ground_truth(eid)
    assert t1["attributes"].equals(t2["attributes"])
    assert t1["events"].equals(t2["events"])


def test_loose_selectors_partial_requests_and_filters(sim: Simulator) -> None:
    loose = [
        {"event_name": "purchase", "params": ["c_gift_wrap", "currency", "nope", "currency",
                                              "custom.nothing", "timestamp"],
         "filters": [{"key": "currency", "operator": "eq", "values": ["USD", 5]}]},
        {"event_name": "email_click", "params": ["email_campaign_id", "timestamp"]},
        {"event_name": "email_open", "params": ["campaign_id"],
         "filters": [{"key": "campaign_id", "operator": "eq",
                      "values_url": "https://example.com/ids.csv"}]},
        {"event_name": "item_added_to_cart", "params": ["unit_price"],
         "filters": [{"key": "unit_price", "operator": "gteq", "values": ["100"]}]},
    ]
    vid = accepted(sim, body(attributes=["email", "bogus", "c_pet_count", "email",
                                         "custom.nope"], events=events(wanted=loose)))
    header = sim.v1_file_bytes(vid).split(b"\n", 1)[0].decode().split(",")
    assert header == ["a_email", "a_c_pet_count", "event_name", "e_c_gift_wrap", "e_currency",
                      "e_timestamp", "e_campaign_id", "e_unit_price", "iid"]
    ev = sim.v1_ground_truth(vid)["events"]
    assert ev.column_names == ["insider_id", "event_name", "timestamp", "source",
                               "custom.gift_wrap", "currency", "campaign_id", "unit_price"]
    names = set(ev.column("event_name").to_pylist())
    assert names == {"purchase", "email_open", "item_added_to_cart"}  # email_click: unknown
    purchases = ev.filter(pc.equal(ev.column("event_name"), "purchase"))
    assert set(purchases.column("currency").to_pylist()) == {"USD"}
    assert purchases.column("timestamp").null_count == 0
    others = ev.filter(pc.not_equal(ev.column("event_name"), "purchase"))
    assert others.column("timestamp").null_count == others.num_rows  # not asked for
    assert ev.column("source").null_count == ev.num_rows
    carts = ev.filter(pc.equal(ev.column("event_name"), "item_added_to_cart"))
    assert carts.num_rows and pc.min(carts.column("unit_price")).as_py() >= 100

    sim.set_now(NOW + dt.timedelta(days=1))
    only_attrs = accepted(sim, body(events=None, attributes=["*"], format="json"))
    lines = sim.v1_file_bytes(only_attrs).decode().splitlines()
    first = json.loads(lines[0])
    assert list(first) == [v1_name("a", a) for a in CATALOG.attribute_names] + ["iid"]
    assert len(lines) == USERS
    truth = sim.v1_ground_truth(only_attrs)
    assert truth["attributes"].num_rows == USERS and truth["events"].num_rows == 0

    sim.set_now(NOW + dt.timedelta(days=2))
    only_events = accepted(sim, body(attributes=None, events=events(
        wanted=[{"event_name": "session_start", "params": ["device_type", "timestamp"]}])))
    text = sim.v1_file_bytes(only_events).decode()
    assert text.split("\n", 1)[0] == "event_name,e_device_type,e_timestamp,iid"
    truth = sim.v1_ground_truth(only_events)
    assert truth["attributes"].column_names == ["insider_id"]
    assert truth["attributes"].num_rows == USERS
    assert len(text.splitlines()) - 1 == truth["events"].num_rows + USERS - pc.count_distinct(
        truth["events"].column("insider_id")).as_py()
