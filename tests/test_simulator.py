"""The Raw Export v2 simulator over real HTTP: contract, data, storage and faults."""

from __future__ import annotations

import copy
import datetime as dt
import io
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import requests

from insider_source.simulator import CATALOG, Faults, Simulator

PARTNER, TOKEN = "acme", "tok-sim-7f3a"
HEADERS = {"X-PARTNER-NAME": PARTNER, "X-REQUEST-TOKEN": TOKEN}
NOW = dt.datetime(2026, 3, 5, 6, 0, tzinfo=dt.UTC)
D = 86_400
MAR1 = 1772323200  # 2026-03-01 00:00 UTC
ALL_EVENTS = [
    {"event_name": name, "params": list(params)} for name, params in CATALOG.events.items()
]
BODY: dict[str, Any] = {
    "format": "csv",
    "user_source": "segment",
    "segment": {"segment_id": 12345},
    "attributes": ["*"],
    "events": {"start_date": MAR1, "end_date": MAR1 + 4 * D, "wanted": ALL_EVENTS},
    "get_tags": True,
    "hook": "https://example.com/hook",
}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(partner_name=PARTNER, request_token=TOKEN, seed=3, users=120,
                  events_per_user_day=0.8, attribute_chunk_rows=50, event_chunk_days=2,
                  processing_polls=2)
    s.set_now(NOW)
    with s:
        yield s


def body(**changes: Any) -> dict[str, Any]:
    b = copy.deepcopy(BODY)
    for k, v in changes.items():
        if v is None:
            b.pop(k, None)
        else:
            b[k] = v
    return b


def submit(sim: Simulator, data: Any, headers: dict[str, str] | None = None) -> requests.Response:
    hdrs = HEADERS if headers is None else headers
    if isinstance(data, bytes | str):
        return requests.post(f"{sim.base_url}/api/raw/v2/export", data=data,
                             headers={**hdrs, "Content-Type": "application/json"}, timeout=10)
    return requests.post(f"{sim.base_url}/api/raw/v2/export", json=data, headers=hdrs,
                         timeout=10)


def status(sim: Simulator, export_id: str,
           headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(f"{sim.base_url}/api/raw/v2/export/{export_id}",
                        headers=HEADERS if headers is None else headers, timeout=30)


def export(sim: Simulator, data: dict[str, Any]) -> dict[str, Any]:
    """Submit and poll until the export is no longer processing; return the final body."""
    r = submit(sim, data)
    assert r.status_code == 200, r.text
    eid = r.json()["export_id"]
    for _ in range(sim.processing_polls + 5):
        got = status(sim, eid)
        assert got.status_code == 200, got.text
        final: dict[str, Any] = got.json()
        if final["status"] != "processing":
            return final
    raise AssertionError("export never finished")


def read_file(content: bytes, fmt: str, truth_schema: pa.Schema, ts_format: str) -> pa.Table:
    """Parse one downloaded file back into typed Arrow, the way a careful client would."""
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(content))
    else:
        header = content.split(b"\n", 1)[0].decode().split(",")
        types = {n: truth_schema.field(n).type for n in header}
        if "timestamp" in types:
            types["timestamp"] = pa.string() if ts_format == "iso" else pa.int64()
        table = pacsv.read_csv(io.BytesIO(content), convert_options=pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, null_values=[""]))
    if "timestamp" in table.column_names:
        col = table.column("timestamp")
        if ts_format == "iso":
            assert pc.all(pc.ends_with(col, "Z")).as_py()
            col = pc.cast(col, pa.timestamp("us", tz="UTC"))
        else:
            per_second = 1 if ts_format == "epoch_s" else 1000
            assert pa.types.is_integer(col.type)
            col = pc.multiply(col, 1_000_000 // per_second).cast(pa.timestamp("us", tz="UTC"))
        table = table.set_column(table.column_names.index("timestamp"), "timestamp", col)
    return table


def download_all(manifest: dict[str, Any], truth: dict[str, pa.Table],
                 ts_format: str) -> dict[str, pa.Table]:
    out = {}
    for kind in ("attributes", "events"):
        parts = []
        for f in manifest["files"][kind]:
            r = requests.get(f["url"], timeout=30)
            assert r.status_code == 200, r.text
            assert int(r.headers["Content-Length"]) == len(r.content)
            table = read_file(r.content, manifest["format"], truth[kind].schema, ts_format)
            assert table.num_rows == f["rows"] > 0, f["name"]
            parts.append(table)
        if parts:
            got = pa.concat_tables(parts, promote_options="default")
            out[kind] = got.select(truth[kind].column_names).cast(truth[kind].schema)
    return out


# -- auth and validation ----------------------------------------------------------------------


@pytest.mark.parametrize("headers,code,message", [
    ({"X-REQUEST-TOKEN": TOKEN}, 400, "partner name is required"),
    ({"X-PARTNER-NAME": "", "X-REQUEST-TOKEN": TOKEN}, 400, "partner name is required"),
    ({"X-PARTNER-NAME": "Acme", "X-REQUEST-TOKEN": TOKEN}, 400,
     "partner name should be lowercase"),
    ({"X-PARTNER-NAME": PARTNER}, 400, "request token is required"),
    ({"X-PARTNER-NAME": PARTNER, "X-REQUEST-TOKEN": "wrong"}, 403, "authentication failed"),
    ({"X-PARTNER-NAME": "other", "X-REQUEST-TOKEN": TOKEN}, 403, "authentication failed"),
])
def test_auth_errors(sim: Simulator, headers: dict[str, str], code: int, message: str) -> None:
    r = submit(sim, BODY, headers)
    assert (r.status_code, r.json()) == (code, {"error": message})
    r = status(sim, "abc", headers)
    assert (r.status_code, r.json()) == (code, {"error": message})
    assert sim.submissions == []


def _events(**changes: Any) -> dict[str, Any]:
    ev: dict[str, Any] = copy.deepcopy(BODY["events"])
    ev.update(changes)
    return ev


def _wanted(**entry: Any) -> dict[str, Any]:
    return _events(wanted=[{"event_name": "purchase", "params": ["product_id"], **entry}])


BAD_REQUESTS: list[tuple[Any, str]] = [
    (b"{not json", "invalid JSON body"),
    (body(format=None), "format is required"),
    (body(format="json"), "format must be csv or parquet"),
    (body(attributes=None, events=None), "at least one of attributes or events is required"),
    (body(segment=None), "segment or vertical is required when user_source is segment"),
    (body(user_source="events"), "segment and user_source=events are mutually exclusive"),
    (body(user_source="events", segment=None, events=None),
     "events is required when user_source is events"),
    (body(user_source="everyone"), "user_source must be segment or events"),
    (body(attributes=["email", "Email"]), "invalid attribute Email"),
    (body(attributes=["em"]), "invalid attribute em"),
    (body(attributes=["c_loyalty_tier"]), "invalid attribute c_loyalty_tier"),
    (body(attributes=["a.b"]), "invalid attribute a.b"),
    (body(attributes=["custom.no_such_thing"]), "unknown attribute custom.no_such_thing"),
    (body(attributes=["*", "email"]), "invalid attribute *"),
    (body(events=_wanted(params=["pid"])), "invalid event parameter pid"),
    (body(events=_wanted(params=["custom.c_gift"])), "invalid event parameter custom.c_gift"),
    (body(events=_wanted(params=["campaign_id"])), "unknown event parameter campaign_id"),
    (body(events=_events(wanted=[{"event_name": "Purchase", "params": []}])),
     "invalid event name Purchase"),
    (body(events=_events(wanted=[{"event_name": "refund", "params": []}])),
     "unknown event name refund"),
    (body(events=_events(start_date=MAR1 * 1000)),
     "start_date must be epoch seconds, not milliseconds"),
    (body(events=_events(end_date=(MAR1 + D) * 1000)),
     "end_date must be epoch seconds, not milliseconds"),
    (body(events=_events(end_date=MAR1)), "end_date must be greater than start_date"),
    (body(events=_wanted(filters=[{"key": "currency", "operator": "eq", "values": ["USD"]},
                                  {"key": "quantity", "operator": "gt", "values": [1]}])),
     "at most one filter per event"),
    (body(events=_wanted(filters=[{"key": "currency", "operator": "like", "values": ["U"]}])),
     "invalid filter operator like"),
    (body(events=_wanted(filters=[{"key": "currency", "operator": "eq", "values": ["USD"],
                                   "values_url": "https://example.com/v.csv"}])),
     "provide either values or values_url, not both"),
    (body(events=_wanted(filters=[{"key": "currency", "operator": "eq"}])),
     "values or values_url is required"),
    (body(events=_wanted(filters=[{"key": "em", "operator": "eq", "values": ["x"]}])),
     "invalid event parameter em"),
    (body(hook="not a url"), "invalid hook"),
    (body(hook="example.com/hook"), "invalid hook"),
]


def test_validation_errors_and_they_do_not_use_the_quota(sim: Simulator) -> None:
    messages = set()
    for data, message in BAD_REQUESTS:
        r = submit(sim, data)
        assert (r.status_code, r.json()) == (400, {"error": message}), data
        messages.add(message)
    assert len(messages) >= 10
    assert sim.submissions == []
    assert submit(sim, BODY).status_code == 200  # no 400 consumed the day's quota


def test_quota_one_export_per_utc_day(sim: Simulator) -> None:
    first = submit(sim, BODY)
    assert first.status_code == 200
    assert len(first.json()["export_id"]) == 16
    again = submit(sim, BODY)
    assert (again.status_code, again.json()) == (429, {"error": "rejected: too many requests"})
    sim.set_now(NOW.replace(hour=23, minute=59))
    assert submit(sim, BODY).status_code == 429
    sim.set_now(NOW + dt.timedelta(days=1))  # 00:00 UTC resets the quota
    second = submit(sim, BODY)
    assert second.status_code == 200
    assert second.json()["export_id"] != first.json()["export_id"]
    assert [s["export_id"] for s in sim.submissions] == [
        first.json()["export_id"], second.json()["export_id"]]
    assert sim.submissions[0]["body"] == BODY and sim.submissions[0]["at"] == NOW


# -- status and manifest ----------------------------------------------------------------------


def test_processing_then_completed_manifest(sim: Simulator) -> None:
    eid = submit(sim, BODY).json()["export_id"]
    for _ in range(sim.processing_polls):
        assert status(sim, eid).json() == {"export_id": eid, "status": "processing"}
    done = status(sim, eid).json()
    assert done["status"] == "completed" and done["export_id"] == eid
    assert done["format"] == "csv"
    attrs, events = done["files"]["attributes"], done["files"]["events"]
    assert done["totals"] == {"attribute_files": len(attrs), "event_files": len(events),
                              "total_files": len(attrs) + len(events)}
    # 120 users in chunks of 50; 4 events x 4 days in 2-day chunks
    assert [f["name"] for f in attrs] == ["attrs-0.csv", "attrs-1.csv", "attrs-2.csv"]
    assert [f["rows"] for f in attrs] == [50, 50, 20]
    names = [f["name"] for f in events]
    assert {n.rsplit("-", 1)[0] for n in names} == {f"event-{e}" for e in CATALOG.events}
    assert "event-purchase-0.csv" in names and "event-purchase-1.csv" in names
    for f in attrs + events:
        assert set(f) == {"name", "url", "rows"} and f["rows"] > 0
        query = parse_qs(urlsplit(f["url"]).query)
        assert set(query) == {"X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature"}
        assert urlsplit(f["url"]).path == f"/storage/{eid}/{f['name']}"
    assert status(sim, eid).json()["files"].keys() == {"attributes", "events"}  # stays done
    manifest = sim.manifest(eid)
    assert {k: v for k, v in manifest.items() if k != "files"} == {
        k: v for k, v in done.items() if k != "files"}
    truth = sim.ground_truth(eid)
    assert sum(f["rows"] for f in attrs) == truth["attributes"].num_rows == 120
    assert sum(f["rows"] for f in events) == truth["events"].num_rows
    r = status(sim, "0123456789abcdef")
    assert (r.status_code, r.json()) == (404, {"error": "export not found"})


@pytest.mark.parametrize("fmt,ts_format", [
    ("csv", "iso"), ("parquet", "iso"), ("csv", "epoch_s"), ("parquet", "epoch_ms"),
])
def test_downloaded_files_equal_manifest_and_ground_truth(
    sim: Simulator, fmt: str, ts_format: str
) -> None:
    sim.timestamp_format = ts_format
    done = export(sim, body(format=fmt))
    assert done["status"] == "completed" and done["format"] == fmt
    truth = sim.ground_truth(done["export_id"])
    got = download_all(done, truth, ts_format)
    for kind in ("attributes", "events"):
        assert got[kind].equals(truth[kind]), kind
    attrs = truth["attributes"]
    assert attrs.column_names == ["insider_id", *CATALOG.attribute_names]
    assert attrs.schema.field("custom.lifetime_value").type == pa.float64()
    assert attrs.schema.field("created_date").type == pa.timestamp("us", tz="UTC")
    assert 0 < attrs.column("phone_number").null_count < attrs.num_rows
    assert pc.count_distinct(attrs.column("insider_id")).as_py() == attrs.num_rows
    events = truth["events"]
    assert events.column_names[:4] == ["insider_id", "event_name", "timestamp", "source"]
    assert events.column_names[-1] == "tags"
    ts = events.column("timestamp")
    assert pc.min(ts).as_py() >= NOW.replace(day=1, hour=0)
    assert pc.max(ts).as_py() < NOW.replace(hour=0)
    assert set(pc.unique(events.column("insider_id")).to_pylist()) <= set(
        attrs.column("insider_id").to_pylist())


def test_csv_wire_format(sim: Simulator) -> None:
    done = export(sim, body(events=_events(wanted=ALL_EVENTS[:1])))
    url = done["files"]["events"][0]["url"]
    text = requests.get(url, timeout=10).content.decode("utf-8")
    lines = text.splitlines()
    assert lines[0] == ("insider_id,event_name,timestamp,source,product_id,product_name,"
                        "unit_price,currency,quantity,custom.gift_wrap,custom.coupon_code,tags")
    assert any('""' in line for line in lines[1:])  # RFC 4180 escaped quotes (tags, names)
    truth = sim.ground_truth(done["export_id"])["events"]
    first = dict(zip(truth.column_names, truth.slice(0, 1).to_pylist()[0].values(),
                     strict=True))
    fields = next(iter(pacsv.read_csv(io.BytesIO(text.encode()), convert_options=pacsv.
                                      ConvertOptions(column_types={
                                          n: pa.string() for n in truth.column_names},
                                          strings_can_be_null=True)).to_batches())
                  ).slice(0, 1).to_pylist()[0]
    assert fields["timestamp"] == first["timestamp"].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "." in fields["unit_price"]
    assert fields["custom.gift_wrap"] in ("true", "false", None)
    prices = [line for line in lines if ".0," in line]
    assert prices, "whole prices keep their decimal point"
    attrs_url = done["files"]["attributes"][0]["url"]
    attrs = requests.get(attrs_url, timeout=10).content.decode("utf-8").splitlines()
    assert ",," in "\n".join(attrs)  # NULL is an empty field
    assert any(line.endswith("Z") or "Z," in line for line in attrs[1:])


# -- data semantics ---------------------------------------------------------------------------


def test_overlapping_windows_serve_identical_events_and_late_events(sim: Simulator) -> None:
    first = export(sim, body(format="parquet"))
    sim.add_late_events(dt.date(2026, 3, 4), 25)
    sim.set_now(NOW + dt.timedelta(days=1))
    second = export(sim, body(events=_events(start_date=MAR1 + 2 * D, end_date=MAR1 + 5 * D)))
    t1 = sim.ground_truth(first["export_id"])["events"]
    t2 = sim.ground_truth(second["export_id"])["events"]
    day1, day2 = (pc.cast(t.column("timestamp"), pa.date32()) for t in (t1, t2))

    def on(t: pa.Table, days: pa.Array, d: dt.date) -> pa.Table:
        return t.filter(pc.equal(days, pa.scalar(d)))

    mar3 = dt.date(2026, 3, 3)
    assert on(t1, day1, mar3).num_rows > 0
    assert on(t1, day1, mar3).equals(on(t2, day2, mar3))  # shared day: identical rows
    mar4 = dt.date(2026, 3, 4)
    old, new = on(t1, day1, mar4), on(t2, day2, mar4)
    assert new.num_rows == old.num_rows + 25  # late arrivals
    late = new.filter(pc.invert(pc.is_in(
        pc.binary_join_element_wise(new.column("insider_id"), pc.cast(
            new.column("timestamp"), pa.string()), new.column("event_name"), "|"),
        value_set=pc.binary_join_element_wise(old.column("insider_id"), pc.cast(
            old.column("timestamp"), pa.string()), old.column("event_name"), "|"))))
    assert 0 < late.num_rows <= 25
    assert pc.max(day2).as_py() == dt.date(2026, 3, 5)
    # the same simulator settings give the same data in a fresh process-like instance
    again = Simulator(partner_name=PARTNER, request_token=TOKEN, seed=3, users=120,
                      events_per_user_day=0.8)
    again.set_now(NOW)
    with again:
        third = export(again, body(format="parquet"))
        assert again.ground_truth(third["export_id"])["events"].equals(t1)


def test_user_sources_postfilter_filters_and_partial_requests(sim: Simulator) -> None:
    wanted = [{"event_name": "purchase", "params": ["currency", "quantity"],
               "filters": [{"key": "currency", "operator": "eq", "values": ["USD", "EUR"]}]},
              {"event_name": "email_open", "params": ["campaign_id"],
               "filters": [{"key": "campaign_id", "operator": "eq",
                            "values_url": "https://example.com/ids.csv"}]}]
    done = export(sim, body(user_source="events", segment=None, get_tags=False,
                            attributes=["email", "custom.pet_count"],
                            events=_events(wanted=wanted)))
    truth = sim.ground_truth(done["export_id"])
    ev, attrs = truth["events"], truth["attributes"]
    assert "tags" not in ev.column_names
    assert ev.column_names == ["insider_id", "event_name", "timestamp", "source", "currency",
                               "quantity", "campaign_id"]
    purchases = ev.filter(pc.equal(ev.column("event_name"), "purchase"))
    assert set(purchases.column("currency").to_pylist()) == {"USD", "EUR"}
    assert pc.sum(pc.equal(ev.column("event_name"), "email_open")).as_py() > 0  # url: ignored
    # user_source=events: exactly the users seen in the exported events
    assert sorted(attrs.column("insider_id").to_pylist()) == sorted(
        pc.unique(ev.column("insider_id")).to_pylist())
    assert attrs.column_names == ["insider_id", "email", "custom.pet_count"]

    sim.set_now(NOW + dt.timedelta(days=1))
    gt = [{"event_name": "purchase", "params": ["quantity"],
           "filters": [{"key": "quantity", "operator": "gteq", "values": [3]}]}]
    post = export(sim, body(segment={"segment_id": 1, "postfilter": {"postfilter_id": 678}},
                            events=_events(wanted=gt)))
    t = sim.ground_truth(post["export_id"])
    assert 0.6 * 120 < t["attributes"].num_rows < 120  # the post-filter trims the segment
    assert pc.min(t["events"].column("quantity")).as_py() >= 3
    assert set(t["events"].column("insider_id").to_pylist()) <= set(
        t["attributes"].column("insider_id").to_pylist())

    sim.set_now(NOW + dt.timedelta(days=2))
    only_events = export(sim, body(attributes=None))
    assert only_events["files"]["attributes"] == [] and only_events["files"]["events"]
    assert only_events["totals"]["attribute_files"] == 0
    sim.set_now(NOW + dt.timedelta(days=3))
    only_attrs = export(sim, body(events=None, attributes=["age"]))
    assert only_attrs["files"]["events"] == [] and only_attrs["totals"]["total_files"] == 3


# -- storage ----------------------------------------------------------------------------------


def test_signed_urls_signature_expiry_and_range(sim: Simulator) -> None:
    done = export(sim, BODY)
    f = done["files"]["attributes"][0]
    full = requests.get(f["url"], timeout=10)
    assert full.status_code == 200 and full.headers["Accept-Ranges"] == "bytes"
    assert int(full.headers["Content-Length"]) == len(full.content)

    part = requests.get(f["url"], headers={"Range": "bytes=100-"}, timeout=10)
    assert part.status_code == 206
    assert part.content == full.content[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{len(full.content) - 1}/{len(full.content)}"
    assert int(part.headers["Content-Length"]) == len(full.content) - 100

    tampered = f["url"][:-4] + ("0000" if not f["url"].endswith("0000") else "1111")
    r = requests.get(tampered, timeout=10)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
    r = requests.get(f["url"].replace("attrs-0", "attrs-1"), timeout=10)
    assert r.status_code == 403  # the signature covers the path
    r = requests.get(f["url"].split("?")[0], timeout=10)
    assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text

    sim.set_now(NOW + dt.timedelta(seconds=sim.url_ttl_seconds + 1))
    r = requests.get(f["url"], timeout=10)
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in r.text
    fresh = status(sim, done["export_id"]).json()["files"]["attributes"][0]["url"]
    assert requests.get(fresh, timeout=10).content == full.content  # new URLs work again

    storage = [e for e in sim.request_log if e["path"].startswith("/storage/")]
    assert storage and all("X-REQUEST-TOKEN" not in {h.upper() for h in e["headers"]}
                           for e in storage)
    api = [e for e in sim.request_log if e["path"].startswith("/api/")]
    assert all(e["headers"].get("X-REQUEST-TOKEN") == TOKEN for e in api)
    assert {e["status"] for e in storage} >= {200, 206, 403}


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["failed", "rejected"])
def test_fault_outcome(sim: Simulator, outcome: str) -> None:
    sim.faults.outcome = outcome
    done = export(sim, BODY)
    assert done["status"] == outcome and done["error"]
    assert set(done) == {"export_id", "status", "error"}
    assert sim.manifest(done["export_id"])["status"] == outcome
    assert sim.ground_truth(done["export_id"])["events"].num_rows == 0


def test_faults_on_the_api(sim: Simulator) -> None:
    assert isinstance(sim.faults, Faults)
    sim.faults.submit_errors = 1
    r = submit(sim, BODY)
    assert (r.status_code, sim.faults.submit_errors, sim.submissions) == (500, 0, [])
    eid = submit(sim, BODY).json()["export_id"]  # the 500 used no quota
    sim.faults.status_errors = 1
    assert status(sim, eid).status_code == 503
    sim.faults.status_429 = 1
    r = status(sim, eid)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert status(sim, eid).json()["status"] == "processing"  # faulted polls do not count


def test_faults_on_storage(sim: Simulator) -> None:
    done = export(sim, BODY)
    f = done["files"]["events"][0]
    full = requests.get(f["url"], timeout=10).content
    assert len(full) > 1000

    sim.faults.download_errors = 1
    assert requests.get(f["url"], timeout=10).status_code == 500
    assert requests.get(f["url"], timeout=10).status_code == 200

    sim.faults.download_drop_after_bytes, sim.faults.download_drops = 300, 1
    with requests.get(f["url"], stream=True, timeout=10) as r:
        assert int(r.headers["Content-Length"]) == len(full)
        got = b""
        with pytest.raises(requests.exceptions.RequestException):
            for chunk in r.iter_content(100):
                got += chunk
        assert got == full[:300]
    assert sim.faults.download_drops == 0
    assert requests.get(f["url"], timeout=10).content == full

    sim.faults.download_delay_seconds = 0.3
    t0 = time.monotonic()
    assert requests.get(f["url"], timeout=10).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    sim.faults.download_delay_seconds = 0.0

    sim.faults.expire_urls = True
    r = requests.get(f["url"], timeout=10)
    assert r.status_code == 403 and "Request has expired" in r.text
    sim.faults.expire_urls = False

    sim.faults.truncate_file = f["name"]
    r = requests.get(f["url"], timeout=10)
    assert r.status_code == 200 and r.content == full[:len(full) // 2]
    assert int(r.headers["Content-Length"]) == len(full) // 2
    sim.faults.reset()
    assert requests.get(f["url"], timeout=10).content == full


def test_nothing_secret_is_printed(capfd: pytest.CaptureFixture[str]) -> None:
    s = Simulator(partner_name=PARTNER, request_token=TOKEN, users=20)
    s.set_now(NOW)
    with s:
        export(s, BODY)
        assert submit(s, BODY).status_code == 429
    out, err = capfd.readouterr()
    assert TOKEN not in out + err
