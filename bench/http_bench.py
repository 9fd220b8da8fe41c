"""HTTP benchmark: /feed.atom from `monitor run` against nginx serving the same bytes, in one run.

Starts the real `monitor run` on a free loopback port over a temporary store holding
`max_entries` (100) stories, copies the feed's identity and gzip bytes into a folder that
nginx (Debian's `nginx`, started here as a child with its own config on another free
port: `gzip_static`, `etag`, sendfile, an open-file cache) serves, then loads both with
wrk (apt-get install wrk) or, without it, a small threaded Python client. Each round
runs every case on both servers back to back, the order alternating between rounds, so
the machine's drift hits both alike; the ratio is monitor's median requests/s over
nginx's. The last case repeats the gzip one while 200 slow clients (a header line every
4 s, never a whole head) are held open against the server under test. Without nginx the
comparison is skipped with one line and monitor alone is measured.

    .venv/bin/python bench/http_bench.py [--seconds 3] [--rounds 3] [--connections 32]
        [--threads 2] [--nginx-workers 1] [--slow-clients 200] [--tool auto|wrk|python]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STORIES = 100
Load = Callable[[str, dict[str, str], float, int, int], dict[str, float]]
Results = dict[tuple[str, str], list[dict[str, float]]]  # (server, case): one load result per round


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def monitor_exe() -> str:
    here = Path(sys.executable).with_name("monitor")
    found = str(here) if here.exists() else shutil.which("monitor")
    if not found:
        sys.exit("the `monitor` console script is not installed (pip install -e .)")
    return found


def make_stories(drop: Path, count: int) -> None:
    """`count` distinct one-brief bulletins, old enough to count as settled."""
    rng = random.Random(42)
    then = time.time() - 60
    for i in range(count):
        words = " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
                         for _ in range(60))
        path = drop / f"bulletin-{i:03d}.txt"
        path.write_text(f"On {1 + i % 28} March 2025, the {words}.\n", encoding="utf-8")
        os.utime(path, (then, then))


def write_config(folder: Path, port: int) -> Path:
    config = folder / "bench.toml"
    config.write_text(f"""
[drop]
folder = "drop"
settle_seconds = 1
[state]
database_url = "sqlite:///state/monitor.db"
[feed]
base_url = "http://127.0.0.1:{port}/"
path = "state/feed.atom"
max_entries = {STORIES}
[http]
host = "127.0.0.1"
port = {port}
[schedule]
scan_seconds = 3600
""", encoding="utf-8")
    return config


def nginx_config(root: Path, port: int, workers: int) -> str:
    return f"""
worker_processes {workers};
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 15s;
    keepalive_requests 1000000;
    open_file_cache max=16 inactive=60s;
    open_file_cache_valid 60s;
    types {{ application/atom+xml atom; }}
    charset utf-8;
    charset_types application/atom+xml;
    client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        etag on;
        gzip_static on;
        gzip_vary on;
        add_header Cache-Control no-cache;
    }}
}}
"""


def start_nginx(folder: Path, body: bytes, gzipped: bytes, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """nginx on a free port serving `body` as /feed.atom and `gzipped` as its .gz twin."""
    root = folder / "nginx"
    (root / "www").mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "www" / "feed.atom").write_bytes(body)
    (root / "www" / "feed.atom.gz").write_bytes(gzipped)
    for path in (folder, root, root / "www", root / "www" / "feed.atom", root / "www" / "feed.atom.gz"):
        path.chmod(0o755)  # nginx's workers run as nobody when started by root
    port = free_port()
    (root / "nginx.conf").write_text(nginx_config(root, port, workers), encoding="utf-8")
    with (root / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(["nginx", "-p", str(root), "-c", str(root / "nginx.conf")],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"nginx exited with {proc.returncode}: {(root / 'stderr.log').read_text().strip()}")
        try:
            with urllib.request.urlopen(base + "feed.atom", timeout=2) as r:
                if r.read() == body:
                    return proc, base
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit("nginx did not answer in time")


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"monitor run exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "healthz", timeout=2) as r:
                if json.load(r)["store"]["stories"] >= STORIES:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("the service did not get ready in time")


def fetch(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.request.urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("GET", parts.path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def run_wrk(url: str, headers: dict[str, str], seconds: float, connections: int, threads: int) -> dict[str, float]:
    # wrk takes whole seconds only (-d0.5s is an error).
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True,
                         timeout=seconds + 30).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def latency(label: str) -> float:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": latency("50%"), "p99": latency("99%"),
        "errors": (float(errors.group(1)) if errors else 0.0)
        + (sum(float(n) for n in socket_errors.groups()) if socket_errors else 0.0),
    }


def run_python(url: str, headers: dict[str, str], seconds: float, connections: int, _threads: int) -> dict[str, float]:
    parts = urllib.request.urlparse(url)
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        mine = []
        bad = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            conn.request("GET", parts.path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            mine.append((time.perf_counter() - t0) * 1000)
            bad += resp.status not in (200, 304)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    workers = [threading.Thread(target=worker) for _ in range(connections)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    latencies.sort()
    pick = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies else (lambda q: 0.0)
    return {"rps": len(latencies) / elapsed, "p50": pick(0.5), "p99": pick(0.99),
            "errors": float(errors[0])}


class SlowClients:
    """`count` connections that each send a request head one header line every 4 s and never
    finish it (reopened when the server closes them): the slow-client load of the operations issue."""

    def __init__(self, base: str, count: int) -> None:
        parts = urllib.request.urlparse(base)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.count = count
        self.socks: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket:
        s = socket.create_connection(self.address, timeout=5)
        s.sendall(b"GET /feed.atom HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        return s

    def _run(self) -> None:
        while not self.stop.wait(4.0):
            for i, s in enumerate(self.socks):
                try:
                    s.send(b"X-Slow: 1\r\n")
                except OSError:
                    s.close()
                    self.socks[i] = self._open()

    def __enter__(self) -> SlowClients:
        self.socks = [self._open() for _ in range(self.count)]
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        for s in self.socks:
            s.close()


def cases_for(base: str) -> list[tuple[str, dict[str, str], int]]:
    """The three requests, each with this server's own validator, and the body size it answers."""
    status, headers, body = fetch(base + "feed.atom", {})
    _, _, gz = fetch(base + "feed.atom", {"Accept-Encoding": "gzip"})
    not_modified, _, _ = fetch(base + "feed.atom", {"If-None-Match": headers["etag"]})
    assert (status, not_modified) == (200, 304), (base, status, not_modified)
    return [("200 identity", {}, len(body)), ("200 gzip", {"Accept-Encoding": "gzip"}, len(gz)),
            ("304 If-None-Match", {"If-None-Match": headers["etag"]}, 0),
            ("200 gzip, slow clients held", {"Accept-Encoding": "gzip"}, len(gz))]


@dataclass(frozen=True)
class Options:
    seconds: float = 3.0  # load per case and server
    rounds: int = 3  # alternating rounds
    connections: int = 32  # concurrent keep-alive connections
    threads: int = 2  # wrk threads
    nginx_workers: int = 1  # one event loop, like monitor's
    slow_clients: int = 200  # slow connections held open during the last case
    tool: str = "auto"  # wrk, or the Python client without it


@dataclass(frozen=True)
class Case:
    """One request's figures over the rounds: medians, and monitor/nginx per round."""

    name: str
    body_bytes: int
    rps: dict[str, float]  # median requests/s by server
    p99_ms: float  # monitor's
    errors: int
    ratios: list[float]  # monitor/nginx, round by round (empty without nginx)


def measure(servers: dict[str, str], load: Load, options: Options) -> Results:
    cases = {name: cases_for(base) for name, base in servers.items()}
    results: Results = {}
    for round_no in range(options.rounds):
        order = list(servers) if round_no % 2 == 0 else list(reversed(servers))
        for index in range(len(cases["monitor"])):
            for name in order:
                case, headers, _ = cases[name][index]
                with SlowClients(servers[name], options.slow_clients if "slow" in case else 0):
                    r = load(servers[name] + "feed.atom", headers, options.seconds, options.connections,
                             options.threads)
                results.setdefault((name, case), []).append(r)
    return results


def summarize(results: Results, sizes: dict[str, int]) -> list[Case]:
    names = sorted({name for name, _ in results}, key=["monitor", "nginx"].index)
    found = []
    for case, size in sizes.items():
        runs = {n: results[(n, case)] for n in names}
        ratios = ([m["rps"] / g["rps"] for m, g in zip(runs["monitor"], runs["nginx"], strict=True) if g["rps"]]
                  if "nginx" in runs else [])
        found.append(Case(case, size, {n: statistics.median(r["rps"] for r in runs[n]) for n in names},
                          statistics.median(r["p99"] for r in runs["monitor"]),
                          int(sum(r["errors"] for n in names for r in runs[n])), ratios))
    return found


def report(cases: list[Case]) -> None:
    names = list(cases[0].rps)
    nginx = "nginx" in names
    print("| request | body bytes | " + " | ".join(f"{n} requests/s" for n in names)
          + " | monitor p99 ms | errors |" + (" monitor/nginx (rounds) |" if nginx else ""))
    print("|---|---:|" + "---:|" * len(names) + "---:|---:|" + ("---:|" if nginx else ""))
    for c in cases:
        row = (f"| {c.name} | {c.body_bytes:,} | " + " | ".join(f"{c.rps[n]:,.0f}" for n in names)
               + f" | {c.p99_ms:.2f} | {c.errors} |")
        if nginx:
            spread = f"{min(c.ratios):.0%}–{max(c.ratios):.0%}" if c.ratios else "n/a"
            row += f" {c.rps['monitor'] / c.rps['nginx']:.0%} ({spread}) |"
        print(row)


def run(options: Options) -> tuple[str, list[Case]]:
    """Start both servers, load them, stop them: the run's description and its cases.
    Without nginx, the description says the comparison was skipped, and why."""
    tool = options.tool if options.tool != "auto" else ("wrk" if shutil.which("wrk") else "python")
    load: Load = run_wrk if tool == "wrk" else run_python
    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as tmp:
        folder = Path(tmp)
        (folder / "drop").mkdir()
        make_stories(folder / "drop", STORIES)
        port = free_port()
        base = f"http://127.0.0.1:{port}/"
        config = write_config(folder, port)
        nginx = None
        with (folder / "service.log").open("wb") as log:
            proc = subprocess.Popen([monitor_exe(), "--config", str(config), "--log-level", "WARNING", "run"],
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_ready(base, proc)
                _, _, body = fetch(base + "feed.atom", {})
                _, _, gz = fetch(base + "feed.atom", {"Accept-Encoding": "gzip"})
                assert gzip.decompress(gz) == body
                servers = {"monitor": base}
                if shutil.which("nginx"):
                    nginx, servers["nginx"] = start_nginx(folder, body, gz, options.nginx_workers)
                    workers = f"{options.nginx_workers} worker" + ("s" if options.nginx_workers > 1 else "")
                    against = f"nginx ({workers}) on the same bytes"
                else:
                    against = "nginx not found (apt-get install nginx): comparison skipped, monitor alone"
                described = (f"monitor run on {base}, feed of {body.count(b'<entry>')} entries, against {against}; "
                             f"tool {tool}, {options.threads} threads, {options.connections} connections, "
                             f"{options.rounds} rounds of {options.seconds:g} s per case and server; "
                             f"{os.cpu_count()} cores")
                results = measure(servers, load, options)
                return described, summarize(results, {case: size for case, _, size in cases_for(base)})
            finally:
                for child in (proc, nginx):
                    if child is not None:
                        child.send_signal(signal.SIGTERM)
                        child.wait(timeout=15)


def main() -> int:
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="load per case and server (default 3)")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="alternating rounds (default 3)")
    parser.add_argument("--connections", type=int, default=defaults.connections,
                        help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="wrk threads (default 2)")
    parser.add_argument("--nginx-workers", type=int, default=defaults.nginx_workers,
                        help="nginx worker processes (default 1: one event loop, like monitor's)")
    parser.add_argument("--slow-clients", type=int, default=defaults.slow_clients,
                        help="slow connections held open during the last case (default 200)")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default=defaults.tool)
    described, cases = run(Options(**vars(parser.parse_args())))
    print(described)
    print()
    report(cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
