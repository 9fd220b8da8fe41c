"""HTTP: the feed, health, metrics and the pages. The only module that talks HTTP.

The standard library's ThreadingHTTPServer is enough here: five read-only routes
answered from bytes prepared in memory, a thread per connection so a slow reader never
holds up another (or the scans, which run in the scheduler's threads), and socket
timeouts plus a cap on connections to bound what a slow or hostile client can hold.
It adds no dependency and no event loop to the process, and it serves thousands of
requests per second on loopback (see bench/http_bench.py), far beyond what feed
readers polling every few minutes need.

No route maps to the filesystem: every answer is built from memory (the feed, the
front page), from the metrics registry, or for an old story's page from the store.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import gzip
import hashlib
import json
import logging
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from monitor import __version__, page
from monitor.errors import StorageError
from monitor.metrics import CONTENT_TYPE as METRICS_TYPE
from monitor.metrics import Metrics
from monitor.models import Story

log = logging.getLogger(__name__)

ATOM_TYPE = "application/atom+xml; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
# Pages carry only escaped text and inline CSS; the policy makes any markup that
# slipped through inert as well (no script, no plugin, no remote fetch).
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
UNSUBSCRIBE_PATH = re.compile(r"/unsubscribe/([A-Za-z0-9_-]{1,400}\.[A-Za-z0-9_-]{1,100})")
# The one POST route takes a one-line form (RFC 8058's "List-Unsubscribe=One-Click"): a
# longer body is refused unread.
MAX_POST_BODY = 4096
STORY_PATH = re.compile(r"/stories/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
# A reader that sends nothing for this long is dropped, and at most this many
# connections are served at once; more are closed at once instead of queueing threads.
SOCKET_TIMEOUT = 10.0
MAX_CONNECTIONS = 64


@dataclass(frozen=True)
class FeedDocument:
    """The feed bytes with everything a conditional or compressed GET needs, computed once."""

    body: bytes
    gzipped: bytes
    etag: str
    gzip_etag: str
    modified: dt.datetime  # the newest `updated`, to the second (HTTP dates have no fraction)

    @classmethod
    def build(cls, body: bytes, newest: dt.datetime) -> FeedDocument:
        digest = hashlib.sha256(body).hexdigest()
        return cls(
            body=body,
            gzipped=gzip.compress(body, compresslevel=6, mtime=0),
            # A different content-coding is a different representation, so a different strong tag.
            etag=f'"{digest}"',
            gzip_etag=f'"{digest}-gzip"',
            modified=newest.astimezone(dt.UTC).replace(microsecond=0),
        )

    @property
    def last_modified(self) -> str:
        return email.utils.format_datetime(self.modified, usegmt=True)


@dataclass(frozen=True)
class Snapshot:
    """What the service publishes after a scan; swapped as a whole, never edited."""

    feed: FeedDocument
    index_html: bytes
    feed_title: str
    stories: Mapping[str, Story] = field(default_factory=dict)  # by the uuid in the story's URL


class Site(Protocol):
    """What the server needs from the service."""

    metrics: Metrics

    def snapshot(self) -> Snapshot: ...

    def health(self) -> tuple[int, dict[str, Any]]: ...

    def story(self, uid: str) -> Story | None: ...

    def unsubscribe(self, token: str, confirm: bool) -> str | None: ...


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding value allows gzip (RFC 9110 12.5.3, q=0 means no)."""
    if not header:
        return False
    qualities: dict[str, float] = {}
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        qualities[coding.strip().lower()] = q
    for coding in ("gzip", "x-gzip"):
        if coding in qualities:
            return qualities[coding] > 0
    return qualities.get("*", 0.0) > 0


def not_modified(doc: FeedDocument, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """RFC 9110 13.1: If-None-Match decides when present (weak comparison), else If-Modified-Since."""
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or doc.etag in tags or doc.gzip_etag in tags
    if if_modified_since:
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False  # an unparseable date is ignored, as the RFC says
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        return doc.modified <= since
    return False


class Handler(BaseHTTPRequestHandler):
    server_version = f"monitor/{__version__}"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    timeout = SOCKET_TIMEOUT
    # Headers and body leave in two writes; with Nagle's algorithm the body's last segment
    # then waits for the client's delayed ACK (40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True
    server: Server

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_POST(self) -> None:
        try:
            match = UNSUBSCRIBE_PATH.fullmatch(urlsplit(self.path).path)
            if match is None:
                self.send_error(501)  # as for any method the other routes do not take
                return
            if not self._discard_body():
                return
            self._unsubscribe(self.server.site, match.group(1), head=False, confirm=True)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("error answering POST %r", self.path)
            self.close_connection = True
            self._send(500, TEXT_TYPE, b"internal error\n", False)

    def _discard_body(self) -> bool:
        """Read and drop the (small) form body; False after answering 411 or 413."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_POST_BODY or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(413 if length > MAX_POST_BODY else 411, TEXT_TYPE, b"body not accepted\n", False)
            return False
        self.rfile.read(length)
        return True

    def _dispatch(self, head: bool) -> None:
        try:
            self._route(urlsplit(self.path).path, head)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to answer
        except Exception:
            log.exception("error answering %r", self.path)
            self.close_connection = True
            self._send(500, TEXT_TYPE, b"internal error\n", head)

    def _route(self, path: str, head: bool) -> None:
        site = self.server.site
        if path == "/feed.atom":
            self._feed(site, head)
        elif path == "/healthz":
            status, data = site.health()
            body = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
            self._send(status, JSON_TYPE, body, head, {"Cache-Control": "no-store"})
        elif path == "/metrics":
            self._send(200, METRICS_TYPE, site.metrics.render(), head, {"Cache-Control": "no-store"})
        elif path == "/":
            self._send(200, HTML_TYPE, site.snapshot().index_html, head, {**HTML_HEADERS, "Cache-Control": "no-cache"})
        elif match := STORY_PATH.fullmatch(path):
            self._story(site, match.group(1), head)
        elif match := UNSUBSCRIBE_PATH.fullmatch(path):
            self._unsubscribe(site, match.group(1), head, confirm=False)
        else:
            self._send(404, TEXT_TYPE, b"not found\n", head)

    def _feed(self, site: Site, head: bool) -> None:
        doc = site.snapshot().feed
        zipped = accepts_gzip(self.headers.get("Accept-Encoding"))
        headers = {
            "ETag": doc.gzip_etag if zipped else doc.etag,
            "Last-Modified": doc.last_modified,
            "Cache-Control": "no-cache",
            "Vary": "Accept-Encoding",
        }
        if not_modified(doc, self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")):
            site.metrics.feed_requests.labels("304").inc()
            self._send(304, None, b"", True, headers)
            return
        if zipped:
            headers["Content-Encoding"] = "gzip"
        site.metrics.feed_requests.labels("200").inc()
        self._send(200, ATOM_TYPE, doc.gzipped if zipped else doc.body, head, headers)

    def _story(self, site: Site, key: str, head: bool) -> None:
        snap = site.snapshot()
        story = snap.stories.get(key)
        if story is None:
            try:
                story = site.story(f"urn:uuid:{key}")  # older than the feed's window
            except StorageError as exc:
                log.warning("story page %s: %s", key, exc)
                self._send(503, TEXT_TYPE, b"store unavailable\n", head)
                return
        if story is None:
            self._send(404, TEXT_TYPE, b"not found\n", head)
            return
        body = page.story_page(snap.feed_title, story).encode()
        self._send(200, HTML_TYPE, body, head, {**HTML_HEADERS, "Cache-Control": "no-cache"})

    def _unsubscribe(self, site: Site, token: str, head: bool, confirm: bool) -> None:
        """GET: the confirmation page with its button; POST: unsubscribe (RFC 8058 one-click)."""
        try:
            name = site.unsubscribe(token, confirm)
        except StorageError as exc:
            log.warning("unsubscribe: %s", exc)
            self._send(503, TEXT_TYPE, b"store unavailable, try again later\n", head)
            return
        body = page.unsubscribe_page(site.snapshot().feed_title, name, done=confirm).encode()
        # The confirmation page's button posts back here: the one form this site has.
        csp = HTML_HEADERS["Content-Security-Policy"].replace("form-action 'none'", "form-action 'self'")
        headers = {**HTML_HEADERS, "Content-Security-Policy": csp, "Cache-Control": "no-store"}
        self._send(200 if name else 403, HTML_TYPE, body, head, headers)

    def _send(self, status: int, ctype: str | None, body: bytes, head: bool,
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and status != 304:
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests and unknown methods: a short plain answer, and no keep-alive.
        self.close_connection = True
        try:
            text = f"{code} {HTTPStatus(code).phrase}\n".encode()
        except ValueError:
            text = f"{code}\n".encode()
        self.send_response(code, message)
        self.send_header("Content-Type", TEXT_TYPE)
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a reader stuck on a timeout never delays the shutdown
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of new connections then loses
    # SYNs and each retry costs the client a second.
    request_queue_size = 128

    def __init__(self, host: str, port: int, site: Site) -> None:
        self.site = site
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread: threading.Thread | None = None
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("HTTP: %s connections open, closing a new one from %s", MAX_CONNECTIONS, client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP connection from %s ended with an error", client_address[0], exc_info=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        self.server_close()
