"""HTTP semantics of the running service: the feed with its validators, gzip and HEAD,
/healthz, /metrics, the pages, and 404 for everything else."""

from __future__ import annotations

import datetime as dt
import email.utils
import gzip
import hashlib
import http.client
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import drop_file, seed, validate_atom
from lxml import etree
from servicekit import Service, brief_bulletin, wait_for

from monitor.documents import ATOM_TYPE, Document, accepts_gzip, not_modified
from monitor.server import MAX_BODY, BadRequest, body_length, connection_line, parse_head, split_target

HOSTILE = (
    b"<script>alert('brief')</script> On 12 December 2024, a brief & a <b>tag</b>.\n"
    b"<img src=x onerror=alert(1)> Meeting \"quoted\" & co\n"
    b"12.12.2024\n"
    b"The article body with <script>document.title='owned'</script> inside.\n"
)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, exe: str) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("http")
    service = Service(exe, folder)
    try:
        service.wait_ready()
        drop_file(service.drop, "000.txt", seed("000"))
        drop_file(service.drop, "004.txt", seed("004"))
        drop_file(service.drop, "hostile.txt", HOSTILE)
        wait_for(lambda: len(validate_atom(service.get("/feed.atom").body)) == 8, 15, "8 entries in the feed")
        yield service
    finally:
        service.close()


def test_feed_is_valid_atom_with_strong_etag_and_last_modified(svc: Service) -> None:
    r = svc.get("/feed.atom")
    assert r.status == 200
    assert r.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert r.headers["etag"] == f'"{hashlib.sha256(r.body).hexdigest()}"'
    assert int(r.headers["content-length"]) == len(r.body)
    assert "accept-encoding" in r.headers["vary"].lower()
    entries = validate_atom(r.body)
    assert len(entries) == 8
    newest = max(dt.datetime.fromisoformat(e["updated"]) for e in entries)
    assert email.utils.parsedate_to_datetime(r.headers["last-modified"]) == newest.replace(microsecond=0)
    for e in entries:
        assert re.fullmatch(re.escape(svc.base) + r"stories/[0-9a-f-]{36}", e["link"]), e["link"]
    # The served bytes are the feed file's bytes: one rendering for both.
    assert r.body == (svc.folder / "feed.atom").read_bytes()


def test_conditional_get_answers_304(svc: Service) -> None:
    first = svc.get("/feed.atom")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for headers in ({"If-None-Match": etag}, {"If-None-Match": f'"nope", W/{etag}'}, {"If-None-Match": "*"},
                    {"If-Modified-Since": modified}, {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}):
        r = svc.request("/feed.atom", headers=headers)
        assert (r.status, r.body) == (304, b""), headers
        assert r.headers["etag"] == etag and r.headers["last-modified"] == modified
    earlier = email.utils.format_datetime(
        email.utils.parsedate_to_datetime(modified) - dt.timedelta(seconds=1), usegmt=True)
    for headers in ({"If-Modified-Since": earlier}, {"If-None-Match": '"stale"'},
                    # If-None-Match decides when both are sent (RFC 9110 13.2.2).
                    {"If-None-Match": '"stale"', "If-Modified-Since": modified},
                    {"If-Modified-Since": "not a date"}):
        r = svc.request("/feed.atom", headers=headers)
        assert r.status == 200 and r.body == first.body, headers


def test_gzip_when_accepted(svc: Service) -> None:
    plain = svc.get("/feed.atom")
    r = svc.get("/feed.atom", Accept_Encoding="br, gzip;q=0.8")
    assert r.status == 200 and r.headers["content-encoding"] == "gzip"
    assert gzip.decompress(r.body) == plain.body
    assert len(r.body) < len(plain.body) / 2
    assert r.headers["etag"] not in (plain.headers["etag"], "") and int(r.headers["content-length"]) == len(r.body)
    again = svc.request("/feed.atom", headers={"Accept-Encoding": "gzip", "If-None-Match": r.headers["etag"]})
    assert again.status == 304
    for refused in ("gzip;q=0", "identity", "br"):
        r = svc.get("/feed.atom", Accept_Encoding=refused)
        assert "content-encoding" not in r.headers and r.body == plain.body, refused


def test_head_has_the_get_headers_and_no_body(svc: Service) -> None:
    get = svc.get("/feed.atom")
    head = svc.request("/feed.atom", method="HEAD")
    assert head.status == 200 and head.body == b""
    for name in ("content-type", "content-length", "etag", "last-modified"):
        assert head.headers[name] == get.headers[name]
    for path in ("/", "/healthz", "/metrics"):
        r = svc.request(path, method="HEAD")
        assert r.status == 200 and r.body == b"" and int(r.headers["content-length"]) > 0, path


def test_healthz(svc: Service) -> None:
    r = svc.get("/healthz")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    data = r.json()
    assert data["status"] == "ok" and data["problems"] == []
    assert data["store"] == {"ok": True, "error": None, "stories": 8, "notice": None}
    assert data["last_scan"]["ok"] is True and data["last_scan"]["error"] is None
    now = dt.datetime.now(dt.UTC)
    assert now - dt.datetime.fromisoformat(data["last_successful_scan"]) < dt.timedelta(seconds=60)
    next_scan = dt.datetime.fromisoformat(data["next_scan"])
    assert now < next_scan <= now + dt.timedelta(seconds=61)


def test_metrics(svc: Service) -> None:
    before = svc.metrics()
    assert before["monitor_stories_stored"] == 8
    assert before["monitor_stories_new_total"] == 8 and before["monitor_stories_revised_total"] == 0
    assert before["monitor_files_rejected_total"] == 0
    scans = sum(v for k, v in before.items() if k.startswith("monitor_scans_total"))
    assert scans >= 2 and before["monitor_scan_duration_seconds_count"] == scans
    etag = svc.get("/feed.atom").headers["etag"]
    svc.request("/feed.atom", headers={"If-None-Match": etag})
    svc.request("/feed.atom", headers={"If-None-Match": etag})
    after = svc.metrics()
    assert after['monitor_feed_requests_total{status="200"}'] == before['monitor_feed_requests_total{status="200"}'] + 1
    assert after['monitor_feed_requests_total{status="304"}'] == before['monitor_feed_requests_total{status="304"}'] + 2
    assert svc.get("/metrics").headers["content-type"].startswith("text/plain; version=")


@pytest.mark.parametrize("path", [
    "/feed.atom/", "/feed.xml", "/index.html", "/feed.atom/../feed.atom", "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd", "/stories/../../etc/passwd", "/stories/%2e%2e%2fmonitor.db", "/monitor.db",
    "/feed.atom%00", "/state/feed.atom", "/drop/000.txt", "/stories/", "/stories/not-a-uuid",
    f"/stories/{uuid.uuid4()}", "/stories/0F8FAD5B-D9CB-469F-A165-70867728950E",
])
def test_everything_else_is_404(svc: Service, path: str) -> None:
    r = svc.get(path)
    assert r.status == 404 and r.body == b"not found\n"


def test_raw_requests_never_reach_files(svc: Service, tmp_path: Path) -> None:
    def raw(line: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", svc.port), timeout=5) as s:
            s.sendall(line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    assert raw(b"GET /../../etc/passwd HTTP/1.1").startswith(b"HTTP/1.1 404")
    assert raw(b"GET ../feed.atom HTTP/1.1").startswith(b"HTTP/1.1 404")
    assert raw(b"GET http://evil/../../etc/passwd HTTP/1.1").startswith(b"HTTP/1.1 404")
    assert b"root:" not in raw(b"GET /%2e%2e/%2e%2e/%2e%2e/etc/passwd HTTP/1.1")


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send `data` as it is and read until the server closes (every case here ends in a close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def statuses(reply: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"^HTTP/1\.1 (\d{3}) ", reply, re.MULTILINE)]


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST /feed.atom HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 405),
    (b"PUT /feed.atom HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 501),
    (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    (b"GET /feed.atom\r\n\r\n", 400),
    (b"GET /feed.atom HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /feed.atom HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n", 400),
    (b"GET /feed.atom HTTP/2.0\r\n\r\n", 505),
    (b"GET /feed.atom HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    (b"POST /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 411),
    (b"POST /healthz HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"POST /healthz HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", 400),
])
def test_requests_the_server_refuses(svc: Service, request_bytes: bytes, status: int) -> None:
    reply = raw_exchange(svc.port, request_bytes + b"GET /feed.atom HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert statuses(reply)[0] == status, reply[:200]
    if status == 405:
        assert b"\r\nAllow: GET, HEAD\r\n" in reply
        assert statuses(reply) == [405, 200]  # the body was read past: the next request is in step
    else:
        assert statuses(reply) == [status] and b"\r\nConnection: close\r\n" in reply


def test_pipelined_requests_are_answered_in_order(svc: Service) -> None:
    feed = svc.get("/feed.atom").body
    reply = raw_exchange(svc.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /feed.atom HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /feed.atom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(reply) == [200, 200, 404, 200, 200]
    assert reply.count(feed) == 2 and reply.index(b'"status": "ok"') < reply.index(feed)
    assert reply.endswith(feed) and b"monitor_feed_requests_total" in reply


def test_http_1_0_and_bare_newlines(svc: Service) -> None:
    reply = raw_exchange(svc.port, b"GET /feed.atom HTTP/1.0\r\n\r\n")  # closes after one answer
    assert statuses(reply) == [200] and b"\r\nConnection: close\r\n" in reply
    reply = raw_exchange(svc.port, b"HEAD /feed.atom HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                         b"GET /healthz HTTP/1.0\r\n\r\n")
    assert statuses(reply) == [200, 200] and b"\r\nConnection: keep-alive\r\n" in reply
    reply = raw_exchange(svc.port, b"GET /feed.atom HTTP/1.1\nHost: x\nConnection: close\n\n")
    assert statuses(reply) == [200] and reply.endswith(svc.get("/feed.atom").body)


def test_every_answer_has_a_date_and_html_has_the_security_headers(svc: Service) -> None:
    for path in ("/feed.atom", "/", "/healthz", "/nope"):
        r = svc.get(path)
        assert email.utils.parsedate_to_datetime(r.headers["date"]) - dt.datetime.now(dt.UTC) < dt.timedelta(seconds=5)
        html = r.headers.get("content-type", "").startswith("text/html")
        assert ("content-security-policy" in r.headers) == html, path
    story = re.search(r'href="(stories/[0-9a-f-]{36})"', svc.get("/").body.decode()).group(1)
    r = svc.get("/" + story)
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"


def test_front_page_is_a_document_with_validators(svc: Service) -> None:
    first = svc.get("/", Accept_Encoding="gzip")
    assert first.headers["content-encoding"] == "gzip" and b"<title>" in gzip.decompress(first.body)
    again = svc.request("/", headers={"Accept-Encoding": "gzip", "If-None-Match": first.headers["etag"]})
    assert (again.status, again.body, again.headers["etag"]) == (304, b"", first.headers["etag"])


def test_front_page_and_story_pages_escape_bulletin_text(svc: Service) -> None:
    r = svc.get("/")
    assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in r.headers["content-security-policy"]  # no script may run at all
    html = r.body.decode()
    assert "<title>Test bulletins</title>" in html and 'href="feed.atom"' in html
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;alert(&#x27;brief&#x27;)&lt;/script&gt;" in html
    links = re.findall(r'href="(stories/[0-9a-f-]{36})"', html)
    assert len(links) == 8
    for link in links:
        page = svc.get("/" + link)
        assert page.status == 200, link
        text = page.body.decode()
        assert "<script" not in text.lower() and "<img" not in text.lower()
    entries = validate_atom(svc.get("/feed.atom").body)
    hostile = next(e for e in entries if "onerror" in e["title"])
    story = svc.get(hostile["link"].removeprefix(svc.base.rstrip("/"))).body.decode()
    assert "&lt;img src=x onerror=alert(1)&gt; Meeting &quot;quoted&quot; &amp; co" in story
    assert "document.title=&#x27;owned&#x27;" in story


def test_every_document_has_validators_and_unknown_pages_are_404(svc: Service) -> None:
    corrections = svc.get("/corrections.atom")
    assert corrections.status == 200 and corrections.headers["content-type"].startswith("application/atom+xml")
    assert validate_atom(corrections.body) == []  # nothing corrected in this store
    assert corrections.body == (svc.folder / "corrections.atom").read_bytes()
    again = svc.request("/corrections.atom", headers={"If-None-Match": corrections.headers["etag"]})
    assert again.status == 304
    story = validate_atom(svc.get("/feed.atom").body)[0]["link"].removeprefix(svc.base.rstrip("/"))
    page = svc.get(story, Accept_Encoding="gzip")
    assert page.status == 200 and page.headers["content-encoding"] == "gzip"
    assert page.headers["etag"].endswith('-gzip"') and "default-src 'none'" in page.headers["content-security-policy"]
    assert b"<h1>" in gzip.decompress(page.body)
    assert svc.request(story, headers={"If-None-Match": page.headers["etag"]}).status == 304
    # 8 stories: one page, and no archive is full yet (50 entries each: [feed] max_entries)
    for path in ("/pages/2", "/pages/1", "/pages/0", "/archive/1-50.atom", "/archive/1.atom", "/archive/x.atom",
                 f"/stories/{uuid.uuid4()}", "/stories/not-a-uuid"):
        assert svc.get(path).status == 404, path


# -- the pure parts, table-driven ---------------------------------------------------------


@pytest.mark.parametrize(("header", "expected"), [
    (None, False), ("", False), ("gzip", True), ("GZIP", True), ("deflate, gzip;q=0.5", True),
    ("gzip;q=0", False), ("gzip; q=0.0", False), ("*", True), ("*;q=0", False), ("gzip;q=0, *", False),
    ("x-gzip", True), ("br", False), ("gzip;q=bogus", False), ("identity;q=1, *;q=0.1", True),
])
def test_accepts_gzip(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_not_modified_rules() -> None:
    doc = Document.build(b"<feed/>", ATOM_TYPE, dt.datetime(2024, 12, 11, 10, 0, 0, 750_000, tzinfo=dt.UTC))
    assert doc.last_modified == "Wed, 11 Dec 2024 10:00:00 GMT"
    assert not_modified(doc, doc.identity.etag, None) and not_modified(doc, doc.gzipped.etag, None)
    assert not not_modified(doc, '"other"', doc.last_modified)
    assert not_modified(doc, None, "Wed, 11 Dec 2024 10:00:00 GMT")
    assert not_modified(doc, None, "Wed, 11 Dec 2024 11:00:00 +0100")  # same instant, another zone
    assert not not_modified(doc, None, "Wed, 11 Dec 2024 09:59:59 GMT")
    assert not not_modified(doc, None, None) and not not_modified(doc, None, "garbage")


def test_keep_alive_requests_do_not_wait_for_delayed_acks(svc: Service) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=5)
    try:
        t0 = time.perf_counter()
        for _ in range(40):
            conn.request("GET", "/feed.atom", headers={"Accept-Encoding": "gzip"})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
        took = time.perf_counter() - t0
    finally:
        conn.close()
    # With Nagle's algorithm on, each response's tail waits ~40 ms for the client's ACK.
    assert took < 1.0, f"40 keep-alive requests took {took:.2f}s"


@pytest.mark.parametrize(("head", "expected"), [
    (b"GET /feed.atom HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\naccept-encoding:  br ",
     ("GET", "/feed.atom", "HTTP/1.1", {"host": "x", "accept-encoding": "gzip, br"})),
    (b"HEAD / HTTP/1.0", ("HEAD", "/", "HTTP/1.0", {})),
    (b"GET / HTTP/1.1\nHost: x", ("GET", "/", "HTTP/1.1", {"host": "x"})),
    (b"GET /  HTTP/1.1", 400), (b"G@T / HTTP/1.1", 400), (b"GET / HTTP/1.1\r\nHost : x", 400),
    (b"GET / HTTP/1.1\r\n\tfolded", 400), (b"GET / HTTP/3", 505), (b"GET / FTP/1.0", 400),
])
def test_parse_head(head: bytes, expected: tuple[object, ...] | int) -> None:
    if isinstance(expected, int):
        with pytest.raises(BadRequest) as caught:
            parse_head(head)
        assert caught.value.status == expected
    else:
        assert parse_head(head) == expected


@pytest.mark.parametrize(("version", "header", "line"), [
    ("HTTP/1.1", None, b""), ("HTTP/1.1", "keep-alive", b""), ("HTTP/1.1", "Upgrade, Close", b"Connection: close\r\n"),
    ("HTTP/1.0", None, b"Connection: close\r\n"), ("HTTP/1.0", "Keep-Alive", b"Connection: keep-alive\r\n"),
])
def test_connection_line(version: str, header: str | None, line: bytes) -> None:
    assert connection_line(version, header) == line


def test_targets_and_body_lengths() -> None:
    assert split_target("/search?q=a%20b") == ("/search", "q=a%20b")
    assert split_target("http://evil/../etc/passwd?x") == ("/../etc/passwd", "x")
    assert split_target("../feed.atom") == ("../feed.atom", "")
    assert body_length({}) == 0 and body_length({"content-length": "12"}) == 12
    for headers, status in (({"content-length": "-1"}, 400), ({"content-length": "1, 1"}, 400),
                            ({"content-length": str(MAX_BODY + 1)}, 413), ({"transfer-encoding": "chunked"}, 411)):
        with pytest.raises(BadRequest) as caught:
            body_length(headers)
        assert caught.value.status == status


def rel_links(data: bytes) -> dict[str, str]:
    return {a.get("rel"): a.get("href") for a in etree.fromstring(data).findall("{http://www.w3.org/2005/Atom}link")}


def test_every_one_of_166_stories_is_reachable_through_the_feed_and_the_pages(tmp_path: Path, exe: str) -> None:
    """Only the newest `max_entries` (50 here) are in /feed.atom and on /; the rest through the
    RFC 5005 archives the feed links to, and the listing's older pages."""
    rng = random.Random(166)
    service = Service(exe, tmp_path)
    try:
        service.wait_ready()
        briefs = b"".join(brief_bulletin(i, rng) for i in range(166))
        drop_file(service.drop, "many.txt", briefs)
        wait_for(lambda: service.metrics()["monitor_stories_stored"] == 166, 20, "166 stories")
        feed = service.get("/feed.atom")
        ids = {e["id"] for e in validate_atom(feed.body)}
        assert len(ids) == 50  # [feed] max_entries in the tests' config
        document, archives = feed.body, []
        while (link := rel_links(document).get("prev-archive")) is not None:
            archive = service.get(link.removeprefix(service.base.rstrip("/")))
            assert archive.status == 200 and archive.headers["cache-control"].startswith("public")
            assert b"<fh:archive" in archive.body
            archives.append(link.removeprefix(service.base))
            ids |= {e["id"] for e in validate_atom(archive.body)}
            document = archive.body
        assert archives == ["archive/101-150.atom", "archive/51-100.atom", "archive/1-50.atom"]
        assert len(ids) == 166
        for wrong in ("/archive/151-200.atom", "/archive/2-51.atom", "/archive/1-100.atom"):
            assert service.get(wrong).status == 404, wrong  # not full yet, or not a range this config cuts
        pages = [service.get(p).body.decode() for p in ("/", "/pages/2", "/pages/3", "/pages/4")]
        listed = {link for text in pages for link in re.findall(r'href="(?:\.\./)?(stories/[0-9a-f-]{36})"', text)}
        assert len(listed) == 166 and service.get("/pages/5").status == 404
    finally:
        service.close()
