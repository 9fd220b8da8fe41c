"""Hostile and slow HTTP clients against the real `monitor run`: slowloris heads, a flood past
the connection cap, readers that never read. Normal requests must still be answered in time,
and the scans must go on. Every client here is on loopback and bounded in count and time."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import drop_file, seed, validate_atom
from servicekit import Service, wait_for

from monitor.server import HEAD_TIMEOUT, SWEEP_INTERVAL, max_connections

SLOW_CLIENTS = 200
SLOW_LINE_EVERY = 4.0  # seconds between header lines: under any per-read socket timeout


@dataclass
class Slowloris:
    """`count` connections, each sending a request head one header line every `interval` seconds
    and never finishing it; a connection the server closes is opened again (`reopen`), as an
    attacker holding its share of the server would."""

    port: int
    count: int
    interval: float = SLOW_LINE_EVERY
    reopen: bool = True
    opened: int = 0
    ended: list[tuple[float, bytes]] = field(default_factory=list)  # (lifetime, what the server sent)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Slowloris:
        self._selector = selectors.DefaultSelector()
        self._born: dict[socket.socket, float] = {}
        for _ in range(self.count):
            self._open()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)
        for s in list(self._born):
            self._drop(s)
        self._selector.close()

    @property
    def open_now(self) -> int:
        return len(self._born)

    def _open(self) -> None:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(b"GET /feed.atom HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        s.setblocking(False)
        self._born[s] = time.monotonic()
        self._selector.register(s, selectors.EVENT_READ)
        self.opened += 1

    def _drop(self, s: socket.socket) -> None:
        self._selector.unregister(s)
        self._born.pop(s, None)
        s.close()

    def _run(self) -> None:
        next_line = time.monotonic() + self.interval
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    reply = s.recv(4096)
                except OSError:
                    reply = b""
                self.ended.append((time.monotonic() - self._born[s], reply))
                self._drop(s)
                if self.reopen and not self._stop.is_set():
                    self._open()
            if time.monotonic() >= next_line:
                next_line += self.interval
                for s in list(self._born):
                    with contextlib.suppress(OSError):  # the server closed it: the selector reports it next
                        s.send(b"X-Slow: 1\r\n")


def timed_requests(svc: Service, seconds: float, paths: list[tuple[str, dict[str, str]]],
                   step: float = 0.1) -> list[float | None]:
    """Normal requests, each on a new connection, for `seconds`: the time each took, None if it failed."""
    took: list[float | None] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        path, headers = paths[i % len(paths)]
        i += 1
        t0 = time.monotonic()
        try:
            r = svc.request(path, headers=headers, timeout=5)
            took.append(time.monotonic() - t0 if r.status in (200, 304) else None)
        except OSError:
            took.append(None)
        time.sleep(step)
    return took


def within(took: list[float | None], limit: float) -> float:
    return sum(1 for t in took if t is not None and t <= limit) / len(took)


@pytest.fixture
def svc(tmp_path: Path, exe: str) -> Iterator[Service]:
    service = Service(exe, tmp_path, scan_seconds=2)
    try:
        service.wait_ready()
        drop_file(service.drop, "004.txt", seed("004"))
        wait_for(lambda: entries(service), 15, "a first story in the feed")
        yield service
    finally:
        service.close()


def entries(svc: Service) -> int:
    return len(validate_atom(svc.get("/feed.atom").body))


def normal_mix(svc: Service) -> list[tuple[str, dict[str, str]]]:
    etag = svc.get("/feed.atom").headers["etag"]
    return [("/feed.atom", {}), ("/feed.atom", {"Accept-Encoding": "gzip"}), ("/feed.atom", {"If-None-Match": etag}),
            ("/healthz", {}), ("/", {}), ("/metrics", {})]


def test_slowloris_heads_neither_starve_readers_nor_stall_scans(svc: Service) -> None:
    mix = normal_mix(svc)
    with Slowloris(svc.port, SLOW_CLIENTS) as slow:
        time.sleep(1.0)
        assert slow.open_now == SLOW_CLIENTS and slow.ended == []  # all held open by the server
        before = entries(svc)
        drop_file(svc.drop, "000.txt", seed("000"), age=0)
        # Long enough for the head deadline to close the first wave and for it to reconnect.
        took = timed_requests(svc, HEAD_TIMEOUT + 2, mix)
        wait_for(lambda: entries(svc) > before, 15, "the scan, while they wait")
        assert slow.open_now == SLOW_CLIENTS
    assert len(took) >= 50
    assert within(took, 1.0) >= 0.95, sorted(t for t in took if t is not None)[-10:]
    # Each line came well inside any read timeout; the deadline for the whole head closed them.
    first_wave = [(life, reply) for life, reply in slow.ended if life > 1]
    assert len(first_wave) >= SLOW_CLIENTS * 0.9, len(first_wave)
    for life, reply in first_wave:
        assert HEAD_TIMEOUT - 0.5 < life < HEAD_TIMEOUT + SWEEP_INTERVAL + 2.5, life
        assert reply.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in reply
    svc.check_alive()


def wrapped_exe(tmp_path: Path, exe: str, nofile: int) -> str:
    """`monitor` under a lower descriptor limit, so that its connection cap (half of it) is small."""
    script = tmp_path / "monitor-limited"
    script.write_text(f'#!/bin/sh\nulimit -n {nofile}\nexec "{exe}" "$@"\n')
    script.chmod(0o755)
    return str(script)


def test_a_flood_past_the_connection_cap_closes_the_oldest_waiting_ones(tmp_path: Path, exe: str) -> None:
    svc = Service(wrapped_exe(tmp_path, exe, 512), tmp_path)
    assert max_connections(512) == 128
    try:
        svc.wait_ready()
        mix = normal_mix(svc)
        with Slowloris(svc.port, 300, reopen=False) as slow:
            took = timed_requests(svc, 4, mix)
            # The first 172 were closed as the later ones came, long before their head deadline.
            assert slow.open_now <= 128 and len(slow.ended) >= 172
            assert all(life < HEAD_TIMEOUT and reply == b"" for life, reply in slow.ended)
        assert within(took, 1.0) >= 0.95
        assert "connections open, closing the oldest one waiting for a request" in svc.log()
    finally:
        code, _ = svc.stop()
    assert code == 0


def vm_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_readers_that_never_read_hold_no_more_than_a_buffer_each(svc: Service) -> None:
    mix = normal_mix(svc)
    before = vm_rss_kib(svc.proc.pid)
    pipelined = b"GET /feed.atom HTTP/1.1\r\nHost: x\r\n\r\n" * 200
    stuck: list[socket.socket] = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", svc.port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # the server stopped reading: flow control at work
                s.send(pipelined)
            stuck.append(s)
        took = timed_requests(svc, 3, mix)
        grown = vm_rss_kib(svc.proc.pid) - before
    finally:
        for s in stuck:
            s.close()
    assert within(took, 1.0) >= 0.95
    # 20 x 200 answers of the feed would be 100 MB; flow control keeps about one answer each.
    assert grown < 40_000, f"RSS grew by {grown} KiB"
