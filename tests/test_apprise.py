"""Apprise alerts through a real HTTP receiver on loopback (Apprise's json:// URLs)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Monitor, drop_file, write_config
from httpsink import HttpSink, Request
from ports import free_port
from servicekit import brief_bulletin

from monitor.config import Settings, load_settings
from monitor.digest import delivery_problems, send_pending
from monitor.scan import scan
from monitor.storage import Storage

TOKEN = "T0KEN-9f8e7d6c5b4a"  # what a webhook URL's secret part looks like
ENV = "MONITOR_TEST_DESK_URL"
BRIEFS = [
    "On 12 December, the Secretary General met the delegation of the Monitoring Group in Moscow.",
    "On 13 December, a seminar on information security took place in Yerevan with experts from five states.",
]
REVISED = BRIEFS[0].replace("in Moscow", "in Moscow and agreed on a joint plan for next year")
T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


def subscriber_config(folder: Path, database_url: str | None = None, **digest: Any) -> Path:
    config = write_config(folder, database_url, digest={"enabled": False, "retry_seconds": 60, **digest})
    with config.open("a") as fh:
        fh.write(f'\n[[subscribers]]\nname = "desk"\napprise_env = "{ENV}"\ncadence = "immediate"\n')
    return config


def url(sink: HttpSink | int, **params: str) -> str:
    port = sink if isinstance(sink, int) else sink.port
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"json://127.0.0.1:{port}/hook/{TOKEN}" + (f"?{query}" if query else "")


class Env:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
        monkeypatch.setenv(ENV, target)
        self.settings: Settings = load_settings(subscriber_config(tmp_path))
        self.storage = Storage.open(self.settings.state.database_url)
        self.drop = tmp_path / "drop"
        self.files = 0
        self.now = T0

    def add(self, *texts: str) -> None:
        self.files += 1
        drop_file(self.drop, f"b{self.files:03}.txt", "\n".join(texts).encode() + b"\n")
        assert scan(self.settings, self.storage).rejected == 0

    def deliver(self, after: float = 0.0) -> Any:
        self.now += dt.timedelta(seconds=after)
        return send_pending(self.settings, self.storage, clock=lambda: self.now)

    def retarget(self, target: str) -> None:
        [sub] = self.settings.subscribers
        self.settings = self.settings._replace(subscribers=(sub._replace(apprise_url=target),))


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with HttpSink() as s:
        yield s


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sink: HttpSink) -> Iterator[Env]:
    e = Env(tmp_path, monkeypatch, url(sink))
    yield e
    e.storage.close()


def titles(requests: list[Request]) -> list[str]:
    return [r.json()["title"] for r in requests]


def test_an_alert_per_new_story_and_per_correction(env: Env, sink: HttpSink) -> None:
    env.add(*BRIEFS)
    result = env.deliver()
    assert result.ok and len(result.sent) == 2
    assert all(r.path == f"/hook/{TOKEN}" for r in sink.sink.accepted)
    assert all(t.startswith("New: ") for t in titles(sink.sink.accepted))
    for req, brief in zip(sink.sink.accepted, BRIEFS, strict=True):  # oldest first, as a chat reads
        assert req.json()["message"].startswith(brief[:60])
        assert "\nhttp://127.0.0.1:8080/stories/" in req.json()["message"]
    env.add(REVISED)
    assert env.deliver().ok
    last = sink.sink.accepted[-1].json()
    assert last["title"].startswith("Corrected: ")
    assert "What changed: " in last["message"] and "{+and agreed on a joint plan for next year+}" in last["message"]
    assert env.deliver().sent == () and len(sink.sink.accepted) == 3  # nothing twice


def test_many_in_one_pass_make_one_short_batch(env: Env, sink: HttpSink) -> None:
    rng = random.Random(7)
    env.add(*(brief_bulletin(i, rng).decode().strip() for i in range(12)))
    assert env.deliver().ok
    [batch] = sink.sink.accepted
    body = batch.json()
    assert body["title"] == "12 new stories"
    lines = body["message"].splitlines()
    assert len(lines) == 11 and lines[-1] == "…and 2 more: http://127.0.0.1:8080/feed.atom"
    assert all(line.startswith("New: ") and "/stories/" in line for line in lines[:10])


@pytest.mark.parametrize("failure", ["refused", "500", "dropped", "timeout"])
def test_a_failure_is_retried_with_backoff_and_nothing_is_lost_or_doubled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sink: HttpSink, failure: str) -> None:
    plan: dict[str, list[Any]] = {"500": [500], "dropped": ["drop"], "timeout": [("stall", 2.5)]}
    env = Env(tmp_path, monkeypatch, url(free_port()) if failure == "refused" else url(sink, rto="1", cto="1"))
    sink.sink.plan = plan.get(failure, [])
    env.add(BRIEFS[0])
    first = env.deliver()
    assert first.pending == 1 and not first.sent and first.error
    assert TOKEN not in first.error
    assert env.deliver(after=30).sent == ()  # backing off: 60 s after the first failure
    env.retarget(url(sink))
    env.add(BRIEFS[1])  # arrives meanwhile: an alert of its own
    later = env.deliver(after=31)
    assert later.ok and len(later.sent) == 2
    if failure == "timeout":
        time.sleep(2)  # the stalled request ends (with a 200 the client never saw: at-least-once)
    delivered = [r.json()["message"] for r in sink.sink.accepted]
    for brief in BRIEFS:
        got = [m for m in delivered if brief[:40] in m]
        assert len(got) == (2 if failure == "timeout" and brief == BRIEFS[0] else 1), (brief, delivered)
    assert env.deliver(after=3600).sent == ()
    env.storage.close()


def test_refused_for_good_is_reported_and_the_url_never_shown(
        env: Env, sink: HttpSink, caplog: pytest.LogCaptureFixture, exe: str) -> None:
    sink.sink.plan = [404]
    with caplog.at_level(logging.DEBUG):
        env.add(BRIEFS[0])
        result = env.deliver()
    assert result.refused == (("desk (json://…)", "HTTP 404"),) and result.pending == 0
    assert env.deliver(after=7200).sent == () and len(sink.sink.requests) == 1  # not retried
    problems = delivery_problems(env.settings, env.storage)
    assert problems == ["apprise to desk (json://…) refused for good: HTTP 404"]
    status = Monitor(exe, Path(env.settings.source), env={ENV: url(sink)})("status").stdout
    assert "apprise to desk (json://…) refused for good: HTTP 404" in status
    # Ours only: this pytest also hooks Apprise's own logger, which does not reach ours
    # (the console script at DEBUG level is checked in the next test).
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("monitor"))
    for text in (ours, status, repr(env.settings), *problems):
        assert TOKEN not in text
    env.add(BRIEFS[1])
    assert env.deliver().ok and delivery_problems(env.settings, env.storage) == []  # through again


def test_the_url_comes_from_the_environment_or_a_file_and_never_from_the_config(
        tmp_path: Path, exe: str, sink: HttpSink) -> None:
    config = subscriber_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != ENV}
    missing = Monitor(exe, config, env=env)("status", check=False)
    assert missing.returncode == 2 and f"${ENV}" in missing.stderr and str(config) in missing.stderr
    secret_file = tmp_path / "desk.url"
    secret_file.write_text(url(sink) + "\n")
    from_file = Monitor(exe, config, env={f"{ENV}_FILE": str(secret_file)})
    from_file.drop_file("a.txt", (BRIEFS[0] + "\n").encode())
    from_file("scan")
    done = from_file("--log-level", "DEBUG", "digest")
    assert "to desk" in done.stdout and "sent" in done.stderr
    assert TOKEN not in done.stdout + done.stderr  # not even at DEBUG (Apprise and urllib3 log URLs)
    assert len(sink.sink.accepted) == 1
    with config.open("a") as fh:
        fh.write(f'apprise_url = "{url(sink)}"\n')
    literal = Monitor(exe, config, env={ENV: url(sink)})("status", check=False)
    assert literal.returncode == 2 and "apprise_url" in literal.stderr and "environment" in literal.stderr
    assert TOKEN not in literal.stderr


def test_sigkill_between_send_and_mark_repeats_that_alert_once_only(tmp_path: Path, exe: str,
                                                                    sink: HttpSink) -> None:
    """The receiver has the alert and the client dies before it can record that: at-least-once."""
    victim: list[subprocess.Popen[str]] = []

    def kill_client(req: Request) -> None:
        deadline = time.monotonic() + 10
        while not victim and time.monotonic() < deadline:
            time.sleep(0.01)
        sink.sink.on_accept = None
        os.kill(victim[0].pid, signal.SIGKILL)
        victim[0].wait(10)  # dead: it can never mark the alert sent

    monitor = Monitor(exe, subscriber_config(tmp_path), env={ENV: url(sink)})
    monitor.drop_file("a.txt", ("\n".join(BRIEFS) + "\n").encode())
    monitor("scan")
    sink.sink.on_accept = kill_client
    victim.append(subprocess.Popen([exe, "--config", str(monitor.config), "digest"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=monitor.env))
    assert victim[0].wait(30) == -signal.SIGKILL
    assert len(sink.sink.accepted) == 1
    monitor("digest")
    assert monitor("digest").stdout.strip() == "digest: nothing to send"
    bodies = [r.body for r in sink.sink.accepted]
    assert len(bodies) == 3 and bodies[1] == bodies[0]  # the one in flight, again; the other once
    for brief in BRIEFS:
        assert sum(brief[:40] in r.json()["message"] for r in sink.sink.accepted) == (2 if brief[:40] in
                                                                                         bodies[0].decode() else 1)


def test_two_runners_at_once_alert_once(tmp_path: Path, exe: str, store_url: str, sink: HttpSink) -> None:
    sink.sink.plan = [("stall", 1.0)]  # hold the first runner inside the send while the other starts
    monitor = Monitor(exe, subscriber_config(tmp_path, store_url), env={ENV: url(sink)})
    monitor.drop_file("a.txt", ("\n".join(BRIEFS) + "\n").encode())
    monitor("scan")
    runners = [subprocess.Popen([exe, "--config", str(monitor.config), "digest"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=monitor.env) for _ in range(2)]
    outputs = [r.communicate(timeout=60) for r in runners]
    assert [r.returncode for r in runners] == [0, 0], outputs
    assert len(sink.sink.accepted) == 2  # one alert per story, none twice
    assert {r.json()["message"][:40] for r in sink.sink.accepted} == {b[:40] for b in BRIEFS}
