"""HTTP benchmark: requests per second for /feed.atom (200, 304, gzip) on a full feed.

Starts the real `monitor run` on a free loopback port over a temporary store holding
`max_entries` (100) stories, then puts a bounded-time load on it with wrk when it is
installed (apt-get install wrk), else with a small threaded Python client, and prints a
table. Everything lives in a temporary folder, removed at the end.

    .venv/bin/python bench/http_bench.py [--seconds 5] [--connections 16] [--tool auto|wrk|python]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

STORIES = 100


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


def run_wrk(url: str, headers: dict[str, str], seconds: float, connections: int, threads: int) -> dict[str, float]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
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

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="load per case (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    tool = args.tool if args.tool != "auto" else ("wrk" if shutil.which("wrk") else "python")
    load = run_wrk if tool == "wrk" else run_python

    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as tmp:
        folder = Path(tmp)
        (folder / "drop").mkdir()
        make_stories(folder / "drop", STORIES)
        port = free_port()
        base = f"http://127.0.0.1:{port}/"
        config = write_config(folder, port)
        with (folder / "service.log").open("wb") as log:
            proc = subprocess.Popen([monitor_exe(), "--config", str(config), "--log-level", "WARNING", "run"],
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_ready(base, proc)
                with urllib.request.urlopen(base + "feed.atom") as r:
                    body, etag = r.read(), r.headers["ETag"]
                gz = urllib.request.Request(base + "feed.atom", headers={"Accept-Encoding": "gzip"})
                with urllib.request.urlopen(gz) as r:
                    gz_size = len(r.read())
                cases = [
                    ("200 identity", {}, len(body)),
                    ("200 gzip", {"Accept-Encoding": "gzip"}, gz_size),
                    ("304 If-None-Match", {"If-None-Match": etag}, 0),
                ]
                print(f"monitor run on {base}, feed of {body.count(b'<entry>')} entries; tool {tool}, "
                      f"{args.connections} connections, {args.seconds:g} s per case")
                print()
                print("| request | body bytes | requests/s | p50 ms | p99 ms | errors |")
                print("|---|---:|---:|---:|---:|---:|")
                for name, headers, size in cases:
                    r = load(base + "feed.atom", headers, args.seconds, args.connections, args.threads)
                    print(f"| {name} | {size:,} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
                          f"| {r['errors']:.0f} |")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
