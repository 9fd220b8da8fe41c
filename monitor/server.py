"""HTTP: the connection layer. The only module that talks HTTP on a socket.

Design: one asyncio event loop in a thread of its own, with a small thread pool beside it.

- A connection costs a few hundred bytes of state and a file descriptor, not a thread,
  so hundreds of slow or idle clients cannot take the slots that readers need. The
  thread-per-connection server this replaces (64 threads) was filled by 64 clients that
  each sent a header line every 4 s: the feed answered 0 of 40 requests for 20 s.
- Every connection has a deadline for what it is doing: the whole request head must
  arrive within HEAD_TIMEOUT of the connection's start, or on a kept-alive connection of
  the head's first byte (not of the last byte, which is what a socket timeout measures
  and what a slowloris client resets forever), a body within
  BODY_TIMEOUT, an idle keep-alive connection lives IDLE_TIMEOUT, and a response the
  client stops reading is dropped after WRITE_TIMEOUT without progress. One sweep a
  second enforces them all. At the cap (`max_connections`, from the descriptor limit)
  the oldest connection still waiting for a request is closed to make room, so a flood
  of slow clients cannot lock readers out.
- Documents (the feed, the front page, any path in `Snapshot.documents`) are answered on
  the loop from pre-built heads and bytes: parse, compare a validator, one send. This is
  the fast path, within reach of nginx serving the same bytes (bench/http_bench.py).
- Dynamic routes (`monitor.routes`: health, metrics, the publisher's documents made on
  request: story histories, older pages, feed archives) may read the store, so
  they run in the pool and never block the loop; at most MAX_PENDING wait there, more get
  a 503 at once.

Why not a framework: the stdlib's asyncio Protocol gives exactly this with no new
dependency, and the routes are few; aiohttp or uvicorn would put their own request
objects and routing on the fast path. uvloop was tried as the loop: CPU per request
within the noise of the stdlib loop here, not worth a compiled dependency.

No route maps to the filesystem: every answer comes from memory or from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import re
import resource
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast
from urllib.parse import urlsplit

from monitor import routes
from monitor.documents import (
    FEED_PATH,
    TEXT_TYPE,
    Document,
    Variant,
    accepts_gzip,
    content_headers,
    not_modified,
    response_head,
)
from monitor.routes import Request, Response, Route, Site

log = logging.getLogger(__name__)

HEAD_TIMEOUT = 10.0  # the whole request head, from the accept or (kept alive) its first byte
BODY_TIMEOUT = 10.0
IDLE_TIMEOUT = 15.0  # a keep-alive connection between requests
WRITE_TIMEOUT = 30.0  # a response the client does not read, without any progress
SWEEP_INTERVAL = 1.0
MAX_HEAD = 16 * 1024
MAX_BODY = 16 * 1024  # forms only; nothing here takes an upload
MAX_PENDING = 64  # dynamic requests waiting for a worker
WORKERS = 4
# The kernel's accept queue, and how many connections asyncio accepts in one go before
# any of them is counted against the cap, so descriptors are kept for that many more.
BACKLOG = 128
METHODS = frozenset({"GET", "HEAD", "POST"})
# What a connection is doing, and so which deadline applies.
IDLE, HEAD, BODY, WORKING = "idle", "head", "body", "working"
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def max_connections(nofile: int) -> int:
    """Half the descriptors the process may open, less an accept batch: the store and the drop folder keep theirs."""
    return max(64, min(4096, nofile // 2 - BACKLOG))


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Method, target, version and headers (lower-case names, repeats joined) of a request head."""
    text = head.decode("latin-1")
    lines = text.split("\r\n") if "\r" in text else text.split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[1] or (parts[0] not in METHODS and not TOKEN.fullmatch(parts[0])):
        raise BadRequest(400, "bad request line")
    method, target, version = parts
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        raise BadRequest(505 if version.startswith("HTTP/") else 400, "unsupported HTTP version")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        # Whitespace around a name (obsolete line folding among it) is how requests get smuggled.
        if not colon or not name or name[0] in " \t" or name[-1] in " \t":
            raise BadRequest(400, "bad header line")
        name = name.lower()
        value = value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return method, target, version, headers


def split_target(target: str) -> tuple[str, str]:
    """Path and query of an origin-form or absolute-form target; anything else stays as it is (a 404)."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        return parts.path or "/", parts.query
    return target, ""


CLOSE = b"Connection: close\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"


def connection_line(version: str, connection: str | None) -> bytes:
    """The Connection line an answer needs: none for HTTP/1.1 keep-alive (the default), else close or keep-alive."""
    if connection is None:
        return b"" if version == "HTTP/1.1" else CLOSE
    tokens = {t.strip().lower() for t in connection.split(",")}
    if version == "HTTP/1.0":
        return KEEP_ALIVE if "keep-alive" in tokens else CLOSE
    return CLOSE if "close" in tokens else b""


def body_length(headers: Mapping[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise BadRequest(411, "a body needs a Content-Length")
    value = headers.get("content-length")
    if value is None:
        return 0
    if not value.isdigit():  # also a repeated header with two values
        raise BadRequest(400, "bad Content-Length")
    if int(value) > MAX_BODY:
        raise BadRequest(413, "body too large")
    return int(value)


def dynamic_head(response: Response) -> bytes:
    headers = {**content_headers(response.ctype), **response.headers}
    if response.status != 304:
        headers["Content-Length"] = str(len(response.body))
    return response_head(response.status, headers)


def run_route(route: Route, site: Site, request: Request, match: re.Match[str]) -> Response:
    """In a worker thread: the route's handler; any failure becomes a 500 and one log entry."""
    try:
        return route.handler(site, request, match)
    except Exception:
        log.exception("error answering %s %r", request.method, request.path)
        return routes.text(500, "internal error")


class Connection(asyncio.Protocol):
    """One client connection: reads request heads, answers them in order, keeps its deadline."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""  # bytes received and not yet answered
        self.phase = HEAD
        self.deadline = server.loop.time() + HEAD_TIMEOUT
        self.received = False  # any byte yet: a silent connection is closed without a 408
        self.write_paused = False
        self.unsent = 0  # the write buffer at the last sweep, to see progress
        self.closed = False
        self.pending: tuple[str, str, str, dict[str, str], int] | None = None  # a head waiting for its body

    # -- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.pop(self, None)

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        self.received = True
        if self.phase == IDLE:
            self.phase = HEAD
            self.deadline = self.server.loop.time() + HEAD_TIMEOUT
        self.process()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.unsent = self.transport.get_write_buffer_size() if self.transport else 0
        self.deadline = self.server.loop.time() + WRITE_TIMEOUT
        if self.transport:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport and not self.closed:
            self.transport.resume_reading()
            self._after_response()

    # -- requests --------------------------------------------------------------------

    def process(self) -> None:
        """Answer every complete request in the buffer, in order, until one must wait."""
        while self.buf and not (self.closed or self.write_paused or self.phase == WORKING):
            try:
                request = self._next_request()
            except BadRequest as exc:
                self.fail(exc.status, str(exc))
                return
            if request is None:
                return
            self.dispatch(*request)

    def _next_request(self) -> tuple[Request, bytes] | None:
        """The next complete request and the Connection line its answer carries, or None for more bytes."""
        if self.pending is None:
            buf = self.buf
            end, size = buf.find(b"\r\n\r\n"), 4
            if end < 0:
                end, size = buf.find(b"\n\n"), 2
            if end < 0 or end > MAX_HEAD:
                if len(buf) > MAX_HEAD:
                    raise BadRequest(431, "request head too large")
                return None
            method, target, version, headers = parse_head(buf[:end])
            self.buf = buf[end + size:]
            length = body_length(headers)
            self.pending = (method, target, version, headers, length)
            if length > len(self.buf):
                self.phase, self.deadline = BODY, self.server.loop.time() + BODY_TIMEOUT
                if headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        method, target, version, headers, length = self.pending
        body = b""
        if length:
            if len(self.buf) < length:
                return None
            body, self.buf = self.buf[:length], self.buf[length:]
        self.pending = None
        path, query = split_target(target)
        return Request(method, path, query, headers, body), connection_line(version, headers.get("connection"))

    def dispatch(self, request: Request, connection: bytes) -> None:
        """Documents from memory, here; other known routes in the pool; 404 for the rest."""
        method = request.method
        if method not in METHODS:
            self.fail(501, "not implemented")
            return
        head_only = method == "HEAD"
        doc = self.server.site.snapshot().documents.get(request.path)
        if doc is not None:
            if method == "POST":
                self.respond(Response(405, TEXT_TYPE, b"method not allowed\n", {"Allow": "GET, HEAD"}),
                             connection, False)
            else:
                self.document(doc, request, connection, head_only)
            return
        found = routes.find(request.path)
        if found is None:
            self.respond(routes.text(404, "not found"), connection, head_only)
            return
        route, match = found
        if method not in route.methods:
            allow = ", ".join(sorted(route.methods))
            self.respond(Response(405, TEXT_TYPE, b"method not allowed\n", {"Allow": allow}), connection, False)
            return
        self.server.submit(self, route, request, match, connection, head_only)

    def document(self, doc: Document, request: Request, connection: bytes, head_only: bool) -> None:
        """The fast path: pick the variant, compare the validators, one send of pre-built bytes."""
        headers = request.headers
        variant = doc.gzipped if accepts_gzip(headers.get("accept-encoding")) else doc.identity
        inm, ims = headers.get("if-none-match"), headers.get("if-modified-since")
        status = 304 if (inm is not None or ims) and not_modified(doc, inm, ims) else 200
        if request.path == FEED_PATH:
            self.server.count_feed(status)
        if self.closed or self.transport is None:
            return
        if connection:
            head = variant.ok_head if status == 200 else variant.not_modified_head
            self.send(head, variant.body if status == 200 and not head_only else b"", connection)
            return
        self.transport.write(self.server.prebuilt(variant, status, head_only))
        self._idle()

    def respond(self, response: Response, connection: bytes, head_only: bool) -> None:
        body = b"" if head_only or response.status == 304 else response.body
        self.send(dynamic_head(response), body, connection)

    def send(self, head: bytes, body: bytes, connection: bytes) -> None:
        if self.closed or self.transport is None:
            return
        # One buffer, one send: a head and a body in two segments cost a second syscall.
        self.transport.write(b"".join((head, self.server.date_line(), connection, b"\r\n", body)))
        if connection != CLOSE:
            self._idle()
        else:
            self.closed = True
            self.deadline = self.server.loop.time() + WRITE_TIMEOUT
            self.transport.close()  # after the buffer is flushed

    def _idle(self) -> None:
        if self.write_paused:
            return  # the write deadline set in pause_writing stands
        self.phase = IDLE if not self.buf else HEAD
        self.deadline = self.server.loop.time() + (IDLE_TIMEOUT if not self.buf else HEAD_TIMEOUT)

    def _after_response(self) -> None:
        if self.buf and not self.closed:
            self.process()

    def worked(self, future: Future[Response], connection: bytes, head_only: bool) -> None:
        """On the loop: a pooled handler finished."""
        self.phase = IDLE
        if self.closed or self.transport is None or future.cancelled():
            return
        self.respond(future.result(), connection, head_only)
        if not self.closed:
            self.transport.resume_reading()
            self._after_response()

    def fail(self, status: int, message: str) -> None:
        """A request we cannot frame or serve: a short answer, then close (the stream may be out of step)."""
        log.debug("HTTP %s from %s: %s", status, self.peer(), message)
        self.respond(routes.text(status, message), CLOSE, False)

    def expire(self, now: float) -> None:
        if self.write_paused and self.transport is not None:
            unsent = self.transport.get_write_buffer_size()
            if unsent < self.unsent:  # the client is reading, slowly
                self.unsent, self.deadline = unsent, now + WRITE_TIMEOUT
                return
            self.close()
        elif self.closed:  # closing, and the client does not take the rest
            self.close()
        elif self.phase in (HEAD, BODY) and self.received:
            self.fail(408, "request timeout")
        elif self.phase != WORKING:
            self.close()

    def close(self) -> None:
        self.closed = True
        self.server.connections.pop(self, None)  # counts no more, though asyncio closes it a moment later
        if self.transport is not None:
            self.transport.abort()

    def peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if peer else "?"


def _one_line(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's own errors (out of descriptors, say) as one log line, not a traceback."""
    exc = context.get("exception")
    log.warning("HTTP: %s%s", context.get("message", "event loop error"), f": {exc}" if exc else "")


class Server:
    """The event loop thread, the worker pool, and the connections between them."""

    def __init__(self, host: str, port: int, site: Site) -> None:
        self.site = site
        self.loop = asyncio.new_event_loop()
        self.connections: dict[Connection, None] = {}  # insertion order: the oldest first
        self.max_connections = max_connections(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="http-worker")
        self._pending = 0
        self._date_at = -1
        self._date = b""
        self._prebuilt: dict[tuple[Variant, int, bool], bytes] = {}  # this second's answers
        self._last_eviction_log = 0.0
        self._feed_counters = {status: site.metrics.feed_requests.labels(str(status)) for status in (200, 304)}
        self._stopped = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(BACKLOG)
        except OSError:
            self._sock.close()
            self.loop.close()
            raise
        self._sock.setblocking(False)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=5)
        else:
            self._sock.close()
            self.loop.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(_one_line)
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        listener = await self.loop.create_server(lambda: Connection(self), sock=self._sock, backlog=BACKLOG)
        sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        await self._stopped.wait()
        sweeper.cancel()
        listener.close()
        for conn in list(self.connections):
            conn.close()
        await asyncio.sleep(0)  # let the aborted transports run connection_lost

    # -- on the loop -------------------------------------------------------------------

    def admit(self, conn: Connection) -> None:
        self.connections[conn] = None
        if len(self.connections) <= self.max_connections:
            return
        oldest = next((c for c in self.connections if c.phase in (IDLE, HEAD) and not c.write_paused), conn)
        now = time.monotonic()
        if now - self._last_eviction_log > 60:
            self._last_eviction_log = now
            log.warning("HTTP: %s connections open, closing the oldest one waiting for a request",
                        self.max_connections)
        oldest.close()

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.expire(now)
        self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def submit(self, conn: Connection, route: Route, request: Request, match: re.Match[str],
               connection: bytes, head_only: bool) -> None:
        if self._pending >= MAX_PENDING:
            conn.respond(routes.text(503, "busy, try again"), connection, head_only)
            return
        self._pending += 1
        conn.phase = WORKING
        assert conn.transport is not None
        conn.transport.pause_reading()
        future = self._pool.submit(run_route, route, self.site, request, match)

        def done(f: Future[Response]) -> None:
            self._pending -= 1
            conn.worked(f, connection, head_only)

        future.add_done_callback(lambda f: self._call_soon(done, f))

    def _call_soon(self, callback: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has stopped: nobody waits for the answer
            self.loop.call_soon_threadsafe(callback, *args)

    def date_line(self) -> bytes:
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n".encode()
            self._prebuilt.clear()
        return self._date

    def prebuilt(self, variant: Variant, status: int, head_only: bool) -> bytes:
        """A whole keep-alive answer, head and body, built once a second (the Date line changes)."""
        date = self.date_line()
        key = (variant, status, head_only)
        data = self._prebuilt.get(key)
        if data is None:
            head = variant.ok_head if status == 200 else variant.not_modified_head
            body = variant.body if status == 200 and not head_only else b""
            data = self._prebuilt[key] = b"".join((head, date, b"\r\n", body))
        return data

    def count_feed(self, status: int) -> None:
        self._feed_counters[status].inc()
