"""The real `monitor run` in a subprocess on a free port, and a small HTTP client for it."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import string
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from conftest import write_config
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")




def wait_for(probe: Callable[[], T | None], timeout: float, what: str, step: float = 0.05) -> T:
    """Poll until `probe` returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def brief_bulletin(i: int, rng: random.Random) -> bytes:
    """A bulletin with one brief whose words are random: a distinct story per call."""
    words = " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
                     for _ in range(40))
    return f"On {1 + i % 28} March 2025, the {words}.\n".encode()


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Service:
    """`monitor run` on a free port with a temporary config in `folder`."""

    def __init__(self, exe: str, folder: Path, *, scan_seconds: float = 60, settle_seconds: float = 1,
                 env: Mapping[str, str] | None = None, extra: str = "", **sections: dict[str, object]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        sections = {
            "http": {"enabled": True, "host": "127.0.0.1", "port": self.port},
            "feed": {"base_url": self.base, **sections.pop("feed", {})},
            "schedule": {"scan_seconds": scan_seconds, "misfire_grace_seconds": 5},
            "drop": {"settle_seconds": settle_seconds},
            **sections,
        }
        self.config = write_config(folder, **sections)
        if extra:  # TOML the section keywords cannot say, e.g. [[subscribers]]
            with self.config.open("a") as fh:
                fh.write(extra)
        self.folder = folder
        self.drop = folder / "drop"
        self.log_path = folder / "service.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([exe, "--config", str(self.config), "run"], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def request(self, path: str, method: str = "GET", headers: Mapping[str, str] | None = None,
                timeout: float = 5) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, headers=dict(headers or {}))
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Response:
        return self.request(path, headers={k.replace("_", "-"): v for k, v in headers.items()})

    def try_get(self, path: str) -> Response | None:
        try:
            return self.request(path, timeout=2)
        except OSError:
            return None

    def wait_ready(self, timeout: float = 20) -> dict[str, Any]:
        """Until /healthz answers 200 after a first scan."""
        def probe() -> dict[str, Any] | None:
            self.check_alive()
            r = self.try_get("/healthz")
            return r.json() if r is not None and r.status == 200 and r.json()["last_scan"] else None

        return wait_for(probe, timeout, "the service to answer /healthz")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"monitor run exited {self.proc.returncode}:\n{self.log()}")

    def metrics(self) -> dict[str, float]:
        """Samples by name with labels, e.g. 'monitor_scans_total{result="ok"}'."""
        text = self.get("/metrics").body.decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples

    def scans(self) -> float:
        m = self.metrics()
        return sum(v for k, v in m.items() if k.startswith("monitor_scans_total"))

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> tuple[int, float]:
        """Send `sig`; the exit status and the seconds it took to exit."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.close()
        return code, time.monotonic() - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()
