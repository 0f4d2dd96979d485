"""The webhook inbox over real sockets: waitress on port 0, a counting "file host", requests.

Every refused delivery asserts its HTTP code, that nothing was stored and that nothing was fetched
from the file host. DNS is replaced by a fixed table (``policy._resolve``) so the tests run
offline; one test uses the real resolver on ``localhost``.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import waitress

from insider_source.exceptions import ConfigError, ConfigErrors
from insider_source.inbox import (
    DEFAULT_ALLOWED_HOSTS,
    Delivery,
    Inbox,
    InboxConfig,
    UrlPolicy,
    delivery_key,
    inbox_dir,
    load_service_config,
    make_app,
    make_server,
    url_policy,
)
from insider_source.inbox import policy as policy_module

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-Qw7pZx2LmN4vB8rT6yU1"  # searched for in outputs: it must never appear
SIG = "sig-9d8c7b6a5f4e"  # the signature of delivered URLs: it must never appear in logs
INSIDER = "insider-data-export.useinsider.com"
REF = "v1-20260301-ab12cd"
DNS = {
    INSIDER: ["52.95.110.1"],
    "bucket.s3.amazonaws.com": ["52.216.8.1"],
    "s3.eu-west-1.amazonaws.com": ["52.218.1.1"],
    "internal.s3.amazonaws.com": ["10.0.0.5"],
    "mixed.s3.amazonaws.com": ["52.216.8.2", "192.168.1.9"],
    "localhost": ["127.0.0.1"],
}


def v1_url(sig: str = SIG, name: str = "export-1.csv.gz") -> str:
    return f"https://{INSIDER}/acme/p/{name}?X-Amz-Signature={sig}&X-Amz-Expires=86400"


def manifest(export_id: str = "exp-1", status: str = "completed", **changes: Any) -> dict:
    body: dict[str, Any] = {"export_id": export_id, "status": status}
    if status == "completed":
        body.update(format="csv", files={
            "attributes": [{"name": "attributes_0.csv", "rows": 10,
                            "url": f"https://bucket.s3.amazonaws.com/a0.csv?X-Amz-Signature={SIG}"}],
            "events": [{"name": "events_0.csv", "rows": 5,
                        "url": f"https://s3.eu-west-1.amazonaws.com/b/e0.csv?Signature={SIG}"}],
        }, totals={"attributes": 10, "events": 5})
    elif status in ("failed", "rejected"):
        body["error"] = "estimated volume too large"
    body.update(changes)
    return body


@pytest.fixture(autouse=True)
def no_inbox_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("INSIDER_INBOX__"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    table = dict(DNS)

    def resolve(host: str, port: int) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in table[host]]

    monkeypatch.setattr(policy_module, "_resolve", resolve)
    return table


@dataclass
class FileHost:
    """A local HTTP server that only counts requests: the service must never fetch."""

    server: ThreadingHTTPServer
    hits: list[str]

    @property
    def port(self) -> int:
        return self.server.server_address[1]


@pytest.fixture(scope="module")
def file_host_server() -> Iterator[FileHost]:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FileHost(server, hits)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def file_host(file_host_server: FileHost) -> FileHost:
    file_host_server.hits.clear()
    return file_host_server


@dataclass
class Service:
    base: str
    cfg: InboxConfig
    inbox: Inbox

    @property
    def hook(self) -> str:
        return f"{self.base}{self.cfg.path_prefix}/{SECRET}"

    def post(self, body: Any, *, path: str | None = None, query: str = "",
             headers: dict[str, str] | None = None) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        url = (self.base + path if path is not None else self.hook) + query
        return requests.post(url, data=data, timeout=10,
                             headers={"Content-Type": "application/json", **(headers or {})})

    def stored(self) -> list[Path]:
        return sorted(self.cfg.directory.rglob("*.json*"))


def run_until_closed(server: Any) -> None:
    try:
        server.run()
    except (OSError, ValueError):  # select() on sockets closed at teardown
        if not getattr(server, "stopping", False):
            raise


@pytest.fixture
def start(tmp_path: Path, fake_dns: Any) -> Iterator[Callable[..., Service]]:
    servers: list[Any] = []

    def _start(*, raw_waitress: bool = False, trusted_proxy: str | None = None,
               inbox: Inbox | None = None, **changes: Any) -> Service:
        cfg = InboxConfig(
            directory=tmp_path / "inbox", secret=SECRET,
            url_policy=UrlPolicy(allowed_hosts=(*DEFAULT_ALLOWED_HOSTS, "10.1.2.3", "127.0.0.1",
                                                "localhost", "::1")),
        )
        cfg = replace(cfg, **changes)
        if raw_waitress:  # no waitress body limit: the app's own 413 answers
            server = waitress.create_server(make_app(cfg, inbox), host="127.0.0.1", port=0,
                                            threads=4)
        else:
            server = make_server(cfg, host="127.0.0.1", port=0, trusted_proxy=trusted_proxy,
                                 threads=4, inbox=inbox)
        servers.append(server)
        threading.Thread(target=run_until_closed, args=(server,), daemon=True).start()
        return Service(f"http://127.0.0.1:{server.effective_port}", cfg,
                       inbox or Inbox(cfg.directory))

    try:
        yield _start
    finally:
        for server in servers:
            server.stopping = True
            server.close()
            server.task_dispatcher.shutdown()
            # the loop thread (a daemon) notices within asyncore_loop_timeout; no need to wait


@pytest.fixture
def service(start: Callable[..., Service]) -> Service:
    return start()


def assert_refused(svc: Service, resp: requests.Response, status: int, host: FileHost) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/json" or status == 413
    if status != 413 or "json" in resp.headers.get("Content-Type", ""):
        assert set(resp.json()) == {"error"}
        assert SECRET not in resp.text and SIG not in resp.text
    assert svc.inbox.pending() == []
    assert svc.stored() == []
    assert host.hits == []


# -- refused deliveries --------------------------------------------------------------------------


def refused_cases(fport: int) -> list[tuple[str, dict[str, Any], int]]:
    local = f"127.0.0.1:{fport}"
    return [
        ("missing secret", {"body": {"url": v1_url()}, "path": "/insider-hook"}, 403),
        ("missing secret, slash", {"body": {"url": v1_url()}, "path": "/insider-hook/"}, 403),
        ("wrong secret, same length",
         {"body": {"url": v1_url()}, "path": "/insider-hook/" + SECRET[:-1] + "X"}, 403),
        ("wrong secret, shorter",
         {"body": {"url": v1_url()}, "path": "/insider-hook/" + SECRET[:-3]}, 403),
        ("wrong secret, longer",
         {"body": {"url": v1_url()}, "path": "/insider-hook/" + SECRET + "x"}, 403),
        ("secret plus a segment",
         {"body": {"url": v1_url()}, "path": f"/insider-hook/{SECRET}/x"}, 403),
        ("other path", {"body": {"url": v1_url()}, "path": f"/other/{SECRET}"}, 404),
        ("malformed JSON", {"body": b'{"url": "https://x'}, 400),
        ("bad UTF-8", {"body": b'{"url": "\xff\xfe"}'}, 400),
        ("NaN", {"body": b'{"export_id": "e", "status": NaN}'}, 400),
        ("deep nesting", {"body": b"[" * 30000 + b"]" * 30000}, 400),
        ("JSON array", {"body": [{"url": v1_url()}]}, 400),
        ("JSON string", {"body": "https://x"}, 400),
        ("extra key", {"body": {"url": v1_url(), "extra": 1}}, 400),
        ("wrong key", {"body": {"link": v1_url()}}, 400),
        ("empty object", {"body": {}}, 400),
        ("url not a string", {"body": {"url": ["https://x"]}}, 400),
        ("bad ref", {"body": {"url": v1_url()}, "query": "?ref=../../etc"}, 400),
        ("ref twice", {"body": {"url": v1_url()}, "query": f"?ref={REF}&ref={REF}"}, 400),
        ("foreign host",
         {"body": {"url": f"https://evil.example.com/acme/p/f.csv?Signature={SIG}"}}, 422),
        ("lookalike host",
         {"body": {"url": f"https://{INSIDER}.evil.com/p/f.csv?Signature={SIG}"}}, 422),
        ("userinfo", {"body": {"url": f"https://{INSIDER}@evil.example.com/f?Signature={SIG}"}},
         422),
        ("private IP literal", {"body": {"url": f"https://10.1.2.3/x?Signature={SIG}"}}, 422),
        ("loopback IP literal", {"body": {"url": f"https://{local}/x?Signature={SIG}"}}, 422),
        ("IPv6 loopback", {"body": {"url": f"https://[::1]:{fport}/x?Signature={SIG}"}}, 422),
        ("name resolving to loopback",
         {"body": {"url": f"https://localhost:{fport}/x?Signature={SIG}"}}, 422),
        ("S3 name resolving privately",
         {"body": {"url": f"https://internal.s3.amazonaws.com/x?Signature={SIG}"}}, 422),
        ("unresolvable allowed name",
         {"body": {"url": f"https://nope.s3.amazonaws.com/x?Signature={SIG}"}}, 422),
        ("plain http", {"body": {"url": f"http://{INSIDER}/acme/p/f.csv?Signature={SIG}"}}, 422),
        ("plain http to file host", {"body": {"url": f"http://{local}/f.csv"}}, 422),
        ("v2 bad file url", {"body": manifest(files={
            "attributes": [{"name": "a.csv", "rows": 1, "url": f"https://{local}/a.csv"}],
            "events": [{"name": "e.csv", "rows": 1, "url": v1_url()}]})}, 422),
        ("v2 second file bad", {"body": manifest(files={
            "attributes": [{"name": "a.csv", "rows": 1, "url": v1_url()}],
            "events": [{"name": "e.csv", "rows": 1, "url": f"http://{local}/e.csv"}]})}, 422),
        ("v2 processing", {"body": manifest(status="processing")}, 400),
        ("v2 unknown status", {"body": manifest(status="done")}, 400),
        ("v2 completed without files", {"body": {"export_id": "e", "status": "completed",
                                                 "format": "csv"}}, 400),
        ("v2 unsafe file name", {"body": manifest(files={
            "attributes": [{"name": "../a.csv", "rows": 1, "url": v1_url()}]})}, 400),
        ("v2 export_id not a string", {"body": manifest(export_id=["x"])}, 400),
    ]


@pytest.mark.parametrize("index", range(37))
def test_refused_delivery_stores_and_fetches_nothing(
        index: int, service: Service, file_host: FileHost) -> None:
    cases = refused_cases(file_host.port)
    assert len(cases) == 37
    name, request, status = cases[index]
    resp = service.post(**request)
    assert_refused(service, resp, status, file_host)


def test_get_answers_only_healthz(service: Service, file_host: FileHost) -> None:
    resp = requests.get(service.base + "/healthz", timeout=10)
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    for path in ("/", f"/insider-hook/{SECRET}", "/insider-hook"):
        assert_refused(service, requests.get(service.base + path, timeout=10), 404, file_host)
    assert_refused(service, service.post({"url": v1_url()}, path="/healthz"), 404, file_host)
    resp = requests.put(service.hook, json={"url": v1_url()}, timeout=10)
    assert_refused(service, resp, 404, file_host)


def test_foreign_source_network(start: Callable[..., Service], file_host: FileHost) -> None:
    svc = start(allowed_networks=("10.0.0.0/8",))
    resp = svc.post({"url": v1_url()}, query=f"?ref={REF}")
    assert_refused(svc, resp, 403, file_host)
    assert "allowed_networks" in resp.json()["error"]
    # a forged X-Forwarded-For changes nothing without a trusted proxy
    resp = svc.post({"url": v1_url()}, headers={"X-Forwarded-For": "10.1.2.3"})
    assert_refused(svc, resp, 403, file_host)


def test_trusted_proxy_gives_the_real_sender(start: Callable[..., Service],
                                             file_host: FileHost) -> None:
    behind_lb = start(allowed_networks=("10.0.0.0/8",), trusted_proxy="127.0.0.1")
    assert_refused(behind_lb, behind_lb.post({"url": v1_url()}), 403, file_host)
    resp = behind_lb.post({"url": v1_url()}, headers={"X-Forwarded-For": "10.1.2.3"})
    assert resp.status_code == 200, resp.text
    assert behind_lb.inbox.pending()[0].remote == "10.1.2.3"

    other = start(allowed_networks=("10.0.0.0/8",), trusted_proxy="10.9.9.9",
                  directory=behind_lb.cfg.directory.parent / "other")
    resp = other.post({"url": v1_url()}, headers={"X-Forwarded-For": "10.1.2.3"})
    assert_refused(other, resp, 403, file_host)


def test_oversized_body_413(start: Callable[..., Service], file_host: FileHost) -> None:
    big = json.dumps({"url": v1_url() + "&pad=" + "x" * 2000}).encode()
    svc = start(max_body_bytes=1024)
    assert_refused(svc, svc.post(big), 413, file_host)
    app_only = start(max_body_bytes=1024, raw_waitress=True,
                     directory=svc.cfg.directory.parent / "app_only")
    resp = app_only.post(big)
    assert_refused(app_only, resp, 413, file_host)
    assert "1024" in resp.json()["error"]
    assert app_only.post({"url": v1_url()}).status_code == 200  # the limit is not too low


def test_content_length_required(service: Service, file_host: FileHost) -> None:
    port = int(service.base.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", f"/insider-hook/{SECRET}")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 411
    assert "Content-Length" in json.loads(resp.read())["error"]
    assert service.stored() == [] and file_host.hits == []
    # chunked bodies are buffered by waitress, which then sets Content-Length
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"url": v1_url()}).encode()
    conn.request("POST", f"/insider-hook/{SECRET}", body=iter([body[:10], body[10:]]),
                 encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    assert conn.getresponse().status == 200


# -- stored deliveries ---------------------------------------------------------------------------


def test_v1_stored_once_across_signatures(service: Service, file_host: FileHost) -> None:
    resp = service.post({"url": v1_url()}, query=f"?ref={REF}")
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["ok"] is True and answer["duplicate"] is False
    path = service.cfg.directory / f"{answer['key']}.json"
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["kind"] == "v1" and data["ref"] == REF and data["url"] == v1_url()
    assert data["remote"] == "127.0.0.1" and data["received_at"].endswith("+00:00")
    assert "path" not in data
    assert not list(service.cfg.directory.glob("*.tmp"))

    again = service.post({"url": v1_url(sig="sig-fresh-0001")}, query=f"?ref={REF}")
    assert again.status_code == 200
    assert again.json() == {"ok": True, "key": answer["key"], "duplicate": True}
    [found] = service.inbox.pending()
    assert found.url == v1_url() and found.path == path
    assert service.inbox.find_v1(REF) == found
    assert service.inbox.find_v1("other-ref") is None

    # another file, or the same file for another request, is another delivery
    assert service.post({"url": v1_url(name="export-2.csv.gz")},
                        query=f"?ref={REF}").json()["duplicate"] is False
    assert service.post({"url": v1_url()}).json()["duplicate"] is False
    assert len(service.inbox.pending()) == 3
    assert file_host.hits == []


def test_service_never_fetches_an_accepted_url(start: Callable[..., Service],
                                               file_host: FileHost) -> None:
    local_policy = UrlPolicy(allowed_hosts=("127.0.0.1",), allow_http=True, allow_private=True)
    svc = start(url_policy=local_policy)
    url = f"http://127.0.0.1:{file_host.port}/acme/p/f.csv?Signature={SIG}"
    resp = svc.post({"url": url}, query=f"?ref={REF}")
    assert resp.status_code == 200, resp.text
    assert svc.inbox.find_v1(REF).url == url
    time.sleep(0.2)
    assert file_host.hits == []
    requests.get(url, timeout=10)  # the counter works: a real fetch is seen
    assert file_host.hits == ["/acme/p/f.csv?Signature=" + SIG]


def test_v2_manifest_stored_and_found(service: Service, file_host: FileHost) -> None:
    body = manifest()
    resp = service.post(body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["duplicate"] is False
    found = service.inbox.find_v2("exp-1")
    assert found is not None and found.kind == "v2" and found.manifest == body
    assert found.url is None and found.ref is None
    assert service.post(body).json()["duplicate"] is True
    assert service.inbox.find_v2("exp-2") is None

    failed = service.post(manifest("exp-2", status="failed"))
    assert failed.status_code == 200 and failed.json()["duplicate"] is False
    assert service.inbox.find_v2("exp-2").manifest["error"] == "estimated volume too large"
    assert [d.export_id for d in service.inbox.pending()] == ["exp-1", "exp-2"]
    assert file_host.hits == []


def test_archive_and_duplicate_after_archive(service: Service) -> None:
    key = service.post({"url": v1_url()}, query=f"?ref={REF}").json()["key"]
    service.inbox.archive(key)
    assert service.inbox.pending() == [] and service.inbox.find_v1(REF) is None
    assert (service.cfg.directory / "done" / f"{key}.json").is_file()
    assert service.inbox.is_known(key)
    service.inbox.archive(key)  # idempotent
    service.inbox.archive("0" * 64)  # unknown: no-op
    again = service.post({"url": v1_url(sig="sig-later")}, query=f"?ref={REF}")
    assert again.json() == {"ok": True, "key": key, "duplicate": True}
    assert service.inbox.pending() == []
    assert not service.inbox.is_known("0" * 64)
    assert not service.inbox.is_known("../../etc/passwd")
    with pytest.raises(ValueError):
        service.inbox.archive("../x")


def test_concurrent_identical_deliveries_store_once(service: Service) -> None:
    barrier = threading.Barrier(10)
    answers: list[dict[str, Any]] = []

    def post(i: int) -> None:
        barrier.wait()
        resp = service.post({"url": v1_url(sig=f"sig-{i}")}, query=f"?ref={REF}")
        answers.append(resp.json())

    threads = [threading.Thread(target=post, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 10
    assert sorted(a["duplicate"] for a in answers) == [False] + [True] * 9
    assert len({a["key"] for a in answers}) == 1
    assert len(list(service.cfg.directory.glob("*.json"))) == 1
    assert not list(service.cfg.directory.glob("*.tmp"))


def test_concurrent_writers_with_separate_inboxes(tmp_path: Path) -> None:
    """Separate Inbox objects (as separate processes would be) still store once (flock)."""
    barrier = threading.Barrier(12)
    results: list[bool] = []

    def put() -> None:
        inbox = Inbox(tmp_path / "shared")
        barrier.wait()
        results.append(inbox.put("v2", manifest=manifest("exp-9"))[1])

    threads = [threading.Thread(target=put) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 11 + [True]
    assert len(list((tmp_path / "shared").glob("*.json"))) == 1


# -- the store on its own ------------------------------------------------------------------------


def test_store_skips_unreadable_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    inbox = Inbox(tmp_path / "box")
    first, new = inbox.put("v1", url=v1_url(), ref=REF)
    assert new and first.path is not None
    (tmp_path / "box" / "broken.json").write_text("{not json")
    (tmp_path / "box" / "list.json").write_text("[1, 2]")
    (tmp_path / "box" / "nokind.json").write_text('{"key": "k", "received_at": "x"}')
    (tmp_path / "box" / f"{'a' * 64}.json.tmp").write_text("{")  # an interrupted write
    with caplog.at_level(logging.WARNING):
        assert inbox.pending() == [first]
    for name in ("broken.json", "list.json", "nokind.json"):
        assert name in caplog.text
    assert Delivery.from_dict(first.to_dict(), path=first.path) == first


def test_store_orders_oldest_first_and_validates(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "box")
    a, _ = inbox.put("v2", manifest=manifest("exp-a"))
    b, _ = inbox.put("v1", url=v1_url(), ref=REF)
    c, _ = inbox.put("v2", manifest=manifest("exp-a", status="failed"))
    assert [d.key for d in inbox.pending()] == [a.key, b.key, c.key]
    assert inbox.find_v2("exp-a").key == a.key  # oldest first
    assert b.key == delivery_key("v1", url=v1_url(sig="other"), ref=REF)
    assert b.key != delivery_key("v1", url=v1_url(), ref=None)
    with pytest.raises(ValueError):
        inbox.put("v3", url=v1_url())
    with pytest.raises(ValueError):
        inbox.put("v1")
    with pytest.raises(ValueError):
        inbox.put("v2", manifest={"status": "completed"})


# -- logs ----------------------------------------------------------------------------------------


def test_logs_hold_neither_secret_nor_signature(start: Callable[..., Service],
                                                caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(Inbox):
        def put(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"disk on fire for {kwargs.get('url')} at /x/{SECRET}")

    caplog.set_level(logging.INFO)
    svc = start()
    assert svc.post({"url": v1_url()}, query=f"?ref={REF}").status_code == 200
    assert svc.post({"url": v1_url(sig=SIG + "2")}).status_code == 200
    assert svc.post(manifest()).status_code == 200
    assert svc.post({"url": f"https://evil.example.com/f?Signature={SIG}"}).status_code == 422
    assert svc.post({"url": v1_url()}, path=f"/insider-hook/{SECRET[:-1]}").status_code == 403
    assert svc.post({"url": v1_url()}, path=f"/not-the-prefix/{SECRET}").status_code == 404
    broken = start(inbox=Exploding(svc.cfg.directory.parent / "broken"))
    resp = broken.post({"url": v1_url()})
    assert resp.status_code == 500 and resp.json() == {"error": "internal error"}
    time.sleep(0.1)

    records = [r for r in caplog.records if r.name.startswith("insider_source.inbox")]
    text = "\n".join(r.getMessage() for r in records)
    assert SECRET not in text and SECRET[:-1] not in text
    assert SIG not in text and "Signature" not in text
    assert sum(r.levelno == logging.INFO and r.getMessage().startswith("inbox: stored ")
               for r in records) == 3
    assert sum(r.levelno == logging.WARNING for r in records) == 3
    assert any(r.levelno == logging.ERROR and "RuntimeError" in r.getMessage() for r in records)
    assert f"https://{INSIDER}/acme/p/export-1.csv.gz" in text  # redacted, yet useful
    assert "/insider-hook/***" in text


# -- the URL policy ------------------------------------------------------------------------------


@pytest.mark.parametrize("url, ok", [
    (f"https://{INSIDER}/acme/p/f.csv?X-Amz-Signature=abc", True),
    ("https://INSIDER-DATA-EXPORT.useinsider.com/acme/p/f.csv", True),
    ("https://bucket.s3.amazonaws.com/a.csv", True),
    ("https://s3.eu-west-1.amazonaws.com/bucket/a.csv", True),
    (f"https://{INSIDER}:443/acme/p/f.csv", True),
    ("https://amazonaws.com/a.csv", False),
    ("https://s3.amazonaws.com.evil.com/a.csv", False),
    (f"https://{INSIDER}.evil.com/a.csv", False),
    ("https://evil.com/insider-data-export.useinsider.com/a.csv", False),
    (f"https://user:pass@{INSIDER}/a.csv", False),
    (f"https://{INSIDER}@evil.com/a.csv", False),
    (f"https://{INSIDER}:99999/a.csv", False),
    (f"http://{INSIDER}/a.csv", False),
    (f"ftp://{INSIDER}/a.csv", False),
    ("file:///etc/passwd", False),
    (f"https://{INSIDER} /a.csv", False),
    ("https:///a.csv", False),
    ("", False),
    ("https://internal.s3.amazonaws.com/a.csv", False),
    ("https://mixed.s3.amazonaws.com/a.csv", False),
    ("https://unknown.s3.amazonaws.com/a.csv", False),
])
def test_policy_default(fake_dns: Any, url: str, ok: bool) -> None:
    reason = UrlPolicy().check(url)
    assert (reason is None) == ok, reason
    if reason:
        assert "abc" not in reason and "user:pass@" not in reason


@pytest.mark.parametrize("host, private", [
    ("[::1]", True), ("[::ffff:10.0.0.1]", True), ("[fe80::1]", True), ("[fc00::1]", True),
    ("[::]", True), ("127.0.0.1", True), ("10.1.2.3", True), ("169.254.169.254", True),
    ("100.64.0.1", True), ("0.0.0.0", True), ("224.0.0.1", True), ("240.0.0.1", True),
    ("192.168.0.1", True), ("[2002:a00:1::]", True),
    ("8.8.8.8", False), ("[2606:4700:4700::1111]", False),
])
def test_policy_ip_literals(host: str, private: bool) -> None:
    bare = host.strip("[]")
    policy = UrlPolicy(allowed_hosts=(bare,))
    reason = policy.check(f"https://{host}/x?Signature=abc")
    assert (reason is not None) == private, reason
    if reason:
        assert "not a public address" in reason and "abc" not in reason
    assert replace(policy, allow_private=True).check(f"https://{host}/x") is None
    assert UrlPolicy().check(f"https://{host}/x") is not None  # not an allowed host


def test_policy_real_resolver() -> None:
    policy = UrlPolicy(allowed_hosts=("localhost", "*.invalid"))
    assert "non-public" in (policy.check("https://localhost/x") or "")
    assert "does not resolve" in (policy.check("https://no-such-host.invalid/x") or "")
    assert replace(policy, allow_private=True).check("https://localhost/x") is None


def test_policy_http_only_when_allowed(fake_dns: Any) -> None:
    assert UrlPolicy().check(f"http://{INSIDER}/a.csv") is not None
    assert UrlPolicy(allow_http=True).check(f"http://{INSIDER}/a.csv") is None
    assert UrlPolicy(allow_http=True).check(f"gopher://{INSIDER}/a.csv") is not None


# -- settings ------------------------------------------------------------------------------------


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert inbox_dir() == tmp_path / "insider_inbox"
    monkeypatch.setenv("INSIDER_INBOX__DIR", str(tmp_path / "deliveries"))
    assert inbox_dir() == tmp_path / "deliveries"
    assert url_policy() == UrlPolicy()
    monkeypatch.setenv("INSIDER_INBOX__SECRET", SECRET)
    monkeypatch.setenv("INSIDER_INBOX__PORT", "9000")
    monkeypatch.setenv("INSIDER_INBOX__HOST", "0.0.0.0")
    monkeypatch.setenv("INSIDER_INBOX__ALLOWED_NETWORKS", '["10.0.0.0/8", "2001:db8::/32"]')
    monkeypatch.setenv("INSIDER_INBOX__ALLOWED_HOSTS", '["files.example.com"]')
    monkeypatch.setenv("INSIDER_INBOX__ALLOW_HTTP", "true")
    monkeypatch.setenv("INSIDER_INBOX__PATH_PREFIX", "/hooks/insider/")
    monkeypatch.setenv("INSIDER_INBOX__TRUSTED_PROXY", "10.0.0.5")
    cfg, server = load_service_config()
    assert cfg.directory == tmp_path / "deliveries" and cfg.secret == SECRET
    assert cfg.allowed_networks == ("10.0.0.0/8", "2001:db8::/32")
    assert cfg.url_policy == UrlPolicy(("files.example.com",), allow_http=True)
    assert cfg.path_prefix == "/hooks/insider" and cfg.max_body_bytes == 65536
    assert server == {"host": "0.0.0.0", "port": 9000, "trusted_proxy": "10.0.0.5"}
    assert SECRET not in repr(cfg)
    make_app(cfg)  # a valid configuration builds a valid app
    assert (tmp_path / "deliveries" / "done").is_dir()


@pytest.mark.parametrize("env, field", [
    ({}, "insider_inbox.secret"),
    ({"SECRET": "short-but-secret"}, "insider_inbox.secret"),
    ({"SECRET": "has spaces in it and is long enough"}, "insider_inbox.secret"),
    ({"ALLOWED_NETWORKS": '["10.0.0.1/8"]'}, "insider_inbox.allowed_networks[0]"),
    ({"ALLOWED_NETWORKS": '["not-a-network"]'}, "insider_inbox.allowed_networks[0]"),
    ({"ALLOWED_NETWORKS": "[broken json"}, "insider_inbox.allowed_networks"),
    ({"PORT": "http"}, "insider_inbox.port"),
    ({"PORT": "70000"}, "insider_inbox.port"),
    ({"MAX_BODY_BYTES": "10"}, "insider_inbox.max_body_bytes"),
    ({"ALLOW_PRIVATE_ADDRESSES": "yes"}, "insider_inbox.allow_private_addresses"),
    ({"ALLOWED_HOSTS": "[]"}, "insider_inbox.allowed_hosts"),
    ({"PATH_PREFIX": "no-slash"}, "insider_inbox.path_prefix"),
    ({"TRUSTED_PROXY": "lb.internal"}, "insider_inbox.trusted_proxy"),
    ({"TRUSTED_PROXY": "*", "ALLOWED_NETWORKS": '["10.0.0.0/8"]'}, "insider_inbox.trusted_proxy"),
])
def test_settings_errors(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                         field: str) -> None:
    values = {"SECRET": SECRET, **env} if env else {}
    for key, value in values.items():
        monkeypatch.setenv(f"INSIDER_INBOX__{key}", value)
    with pytest.raises(ConfigError) as info:
        load_service_config()
    assert not isinstance(info.value, ConfigErrors)
    assert info.value.field == field
    assert SECRET not in str(info.value)
    if field.endswith("secret"):
        assert info.value.value == "<hidden>"
        assert "SECRET" not in env or env["SECRET"] not in str(info.value)
    if "10.0.0.1/8" in env.get("ALLOWED_NETWORKS", ""):
        assert "10.0.0.0/8" in str(info.value)


def test_settings_report_every_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSIDER_INBOX__PORT", "0")
    monkeypatch.setenv("INSIDER_INBOX__ALLOWED_NETWORKS", "10.0.0.0/33")
    with pytest.raises(ConfigErrors) as info:
        load_service_config()
    assert [e.field for e in info.value.errors] == [
        "insider_inbox.secret", "insider_inbox.port", "insider_inbox.allowed_networks[0]"]


def test_make_app_refuses_a_short_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_app(InboxConfig(directory=tmp_path, secret="too-short"))


# -- pipelines/webhook.py ------------------------------------------------------------------------


def run_webhook(tmp_path: Path, *args: str, secret: str | None = None,
                **extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["INSIDER_INBOX__DIR"] = str(tmp_path / "cli_inbox")
    env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    if secret is not None:
        env["INSIDER_INBOX__SECRET"] = secret
    env.update({f"INSIDER_INBOX__{k.upper()}": v for k, v in extra.items()})
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "webhook.py"), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_cli_check(tmp_path: Path) -> None:
    missing = run_webhook(tmp_path, "--check")
    assert missing.returncode == 2, missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "insider_inbox.secret" in missing.stderr

    short = run_webhook(tmp_path, "--check", secret="abc123")
    assert short.returncode == 2 and "abc123" not in short.stderr + short.stdout

    good = run_webhook(tmp_path, "--check", secret=SECRET)
    assert good.returncode == 0, good.stderr
    assert SECRET not in good.stdout + good.stderr
    assert "https://<your-public-host>/insider-hook/<secret>" in good.stdout
    assert str(tmp_path / "cli_inbox") in good.stdout

    suggestion = run_webhook(tmp_path, "--print-secret-suggestion")
    token = suggestion.stdout.strip()
    assert suggestion.returncode == 0 and len(token) >= 43
    assert run_webhook(tmp_path, "--check", secret=token).returncode == 0


def test_cli_serves(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, INSIDER_INBOX__DIR=str(tmp_path / "cli_inbox"),
               INSIDER_INBOX__SECRET=SECRET, INSIDER_INBOX__PORT=str(port),
               INSIDER_INBOX__ALLOWED_HOSTS='["127.0.0.1"]', INSIDER_INBOX__ALLOW_HTTP="true",
               INSIDER_INBOX__ALLOW_PRIVATE_ADDRESSES="true", RUNTIME__DLTHUB_TELEMETRY="false")
    proc = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "webhook.py")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail("the service did not start")
        resp = requests.post(f"{base}/insider-hook/{SECRET}?ref={REF}", timeout=10,
                             json={"url": f"https://evil.example.com/f.csv?Signature={SIG}"})
        assert resp.status_code == 422
        assert requests.post(f"{base}/insider-hook/nope", json={}, timeout=10).status_code == 403
        url = f"http://127.0.0.1:9/acme/p/f.csv?Signature={SIG}"  # allowed by the env above
        resp = requests.post(f"{base}/insider-hook/{SECRET}?ref={REF}", json={"url": url},
                             timeout=10)
        assert resp.status_code == 200, resp.text
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert SECRET not in out + err and SIG not in out + err
    assert "refused" in err and "/insider-hook/***" in err
    [stored] = Inbox(tmp_path / "cli_inbox").pending()
    assert stored.url == url and stored.ref == REF
