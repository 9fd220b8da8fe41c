"""A real HTTP server on loopback that records what is POSTed to it: the receiver behind an
Apprise json:// URL and the WebSub hub in the tests. Each request can be answered by plan."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from ports import free_port


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode())


@dataclass
class Sink:
    """`plan` answers the next requests in turn: an HTTP status, "drop" (close without an
    answer), ("stall", seconds) or a callable; once it is empty, every request gets `default`."""

    requests: list[Request] = field(default_factory=list)  # every request that arrived
    accepted: list[Request] = field(default_factory=list)  # the ones answered 2xx
    plan: list[Any] = field(default_factory=list)
    default: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_accept: Callable[[Request], None] | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        req = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        sink = self.server.sink
        with sink.lock:
            sink.requests.append(req)
            step = sink.plan.pop(0) if sink.plan else sink.default
        if step == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if isinstance(step, tuple) and step[0] == "stall":
            time.sleep(step[1])
            step = 200
        if 200 <= step < 300:
            with sink.lock:
                sink.accepted.append(req)
            if sink.on_accept is not None:
                sink.on_accept(req)
        self.send_response(step)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: Sink


class HttpSink:
    def __init__(self) -> None:
        self.sink = Sink()
        self.port = free_port()
        self.server = _Server(("127.0.0.1", self.port), _Handler)
        self.server.sink = self.sink
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> HttpSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"
