"""`monitor run` as an operator sees it: instant pickup, bursts, health, a clean stop."""

from __future__ import annotations

import datetime as dt
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from conftest import drop_file, seed, validate_atom, write_config
from servicekit import Service, brief_bulletin, wait_for

from monitor.config import load_settings
from monitor.crontab import crontab_trigger, crontab_weekdays
from monitor.service import Service as MonitorService
from monitor.service import health_status
from monitor.storage import Storage


def entries(svc: Service) -> int:
    return len(validate_atom(svc.get("/feed.atom").body))


def test_pickup_burst_and_clean_stop(tmp_path: Path, exe: str) -> None:
    settle = 1.0
    # The interval (60 s) never fires during this test: every pickup comes from the watcher.
    svc = Service(exe, tmp_path, scan_seconds=60, settle_seconds=settle)
    try:
        svc.wait_ready()
        assert entries(svc) == 0
        t0 = time.monotonic()
        drop_file(svc.drop, "000.txt", seed("000"), age=0)  # fresh files: they must settle first
        drop_file(svc.drop, "004.txt", seed("004"), age=0)
        wait_for(lambda: entries(svc) == 6, settle + 3, "the seeds' 6 stories")
        took = time.monotonic() - t0
        assert took >= settle, f"picked up after {took:.2f}s, before the files settled"

        scans_before = svc.scans()
        rng = random.Random(4)
        count = 400
        for i in range(count):
            drop_file(svc.drop, f"burst-{i:04d}.txt", brief_bulletin(i, rng), age=0)
        drop_file(svc.drop, "broken.bin", b"\x00\x01binary\x00" * 10, age=0)
        wait_for(lambda: svc.metrics()["monitor_stories_stored"] == 6 + count, 30, "the burst", step=0.2)
        time.sleep(settle + 1)  # any follow-up pickup has had its chance to run
        metrics = svc.metrics()
        burst_scans = svc.scans() - scans_before
        assert 1 <= burst_scans <= 4, f"{count} files cost {burst_scans} scans"
        assert metrics["monitor_stories_new_total"] == 6 + count
        assert metrics["monitor_files_rejected_total"] == 1
        assert metrics['monitor_scans_total{result="error"}'] == 0
        assert entries(svc) == 50  # the test config's max_entries
    finally:
        code, seconds = svc.stop()
    assert code == 0 and seconds < 10, (code, seconds)
    log = svc.log()
    # One INFO line per pass that did something, with its counts and duration (idle passes
    # are DEBUG: the first one, over the empty folder); a warning per rejected file.
    scan_lines = re.findall(r"INFO monitor\.service: scan: files read (\d+), .* in [\d.]+s", log)
    assert 2 <= len(scan_lines) < metrics["monitor_scan_duration_seconds_count"]
    assert all(int(read) > 0 for read in scan_lines)
    assert re.search(r"WARNING monitor\.scan: broken\.bin: rejected: binary data", log)
    assert "SIGTERM received" in log and "stopped" in log


def test_sigterm_stops_a_long_scan_at_a_file_boundary(tmp_path: Path, exe: str) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    rng = random.Random(7)
    count = 400
    for i in range(count):
        drop_file(drop, f"b{i:04d}.txt", brief_bulletin(i, rng))
    svc = Service(exe, tmp_path, scan_seconds=60)
    try:
        wait_for(lambda: (r := svc.try_get("/healthz")) and r.json()["scan_running"], 20, "the first scan")
    finally:
        code, seconds = svc.stop()
    assert code == 0 and seconds < 10, (code, seconds)
    status = subprocess.run([exe, "--config", str(svc.config), "status"], capture_output=True, text=True, check=True)
    stored = int(re.search(r"stories stored: (\d+)", status.stdout).group(1))
    assert 0 <= stored < count, "the scan should have been interrupted"
    # What was left is exactly what the next pass finds: no file half-ingested, none lost.
    done = subprocess.run([exe, "--config", str(svc.config), "scan"], capture_output=True, text=True, check=True)
    assert f"stories new {count - stored}," in done.stdout
    assert len(validate_atom((tmp_path / "feed.atom").read_bytes())) == 50


def test_healthz_turns_503_when_scans_fail(tmp_path: Path, exe: str) -> None:
    svc = Service(exe, tmp_path, scan_seconds=0.5)
    try:
        svc.wait_ready()
        hidden = tmp_path / "elsewhere"
        svc.drop.rename(hidden)  # every scan fails now
        r = wait_for(lambda: (r := svc.get("/healthz")).status == 503 and r, 10, "503 from /healthz")
        data = r.json()
        assert data["status"] == "unhealthy" and data["store"]["ok"] is True
        assert any(p.startswith("no successful scan for") for p in data["problems"])
        assert data["last_scan"]["ok"] is False and "drop" in data["last_scan"]["error"]
        assert svc.metrics()['monitor_scans_total{result="error"}'] >= 3
        hidden.rename(svc.drop)
        wait_for(lambda: svc.get("/healthz").status == 200, 10, "200 again")
        assert "scan failed" in svc.log()
    finally:
        code, seconds = svc.stop(signal.SIGINT)
    assert code == 0 and seconds < 10


def test_on_postgresql_healthz_turns_503_when_the_database_is_gone(tmp_path: Path, exe: str,
                                                                    postgres_server: Any) -> None:
    import psycopg
    from pgserver import PASSWORD

    url = postgres_server.create_database("svc")
    svc = Service(exe, tmp_path, env={"MONITOR_DATABASE_URL": url})
    try:
        svc.wait_ready()
        drop_file(svc.drop, "000.txt", seed("000"), age=0)
        drop_file(svc.drop, "004.txt", seed("004"), age=0)
        wait_for(lambda: entries(svc) == 6, 6, "the seeds' 6 stories")
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql").rsplit("/", 1)[0] + "/postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        r = svc.get("/healthz")
        assert r.status == 503 and r.json()["store"]["ok"] is False
        assert any(p.startswith("store: database unreachable") for p in r.json()["problems"])
        assert PASSWORD not in r.body.decode()
        feed = svc.get("/feed.atom")  # served from memory: the readers keep their feed
        assert feed.status == 200 and len(validate_atom(feed.body)) == 6
    finally:
        code, seconds = svc.stop()
    assert code == 0 and seconds < 10
    assert PASSWORD not in svc.log()


@pytest.mark.parametrize(("store_error", "age", "status"), [
    (None, 10, 200), (None, 89, 200), (None, 91, 503), ("connection refused", 1, 503), ("gone", 500, 503),
])
def test_health_status(store_error: str | None, age: float, status: int) -> None:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    code, problems = health_status(now, now - dt.timedelta(seconds=age), store_error, 30)
    assert code == status and bool(problems) == (status == 503)
    if store_error:
        assert any(store_error in p for p in problems)


def test_jobs_are_wired_as_configured(tmp_path: Path) -> None:
    config = write_config(tmp_path, schedule={"scan_seconds": 45, "misfire_grace_seconds": 120},
                          digest={"enabled": True, "schedule": "30 7 * * 1-5", "timezone": "Europe/Berlin"})
    settings = load_settings(config)
    storage = Storage.open(settings.state.database_url)
    try:
        service = MonitorService(settings, storage)
        jobs = {job.id: job for job in service.scheduler.get_jobs()}
        assert set(jobs) == {"scan", "digest"}
        scan, digest = jobs["scan"], jobs["digest"]
        assert isinstance(scan.trigger, IntervalTrigger) and scan.trigger.interval_length == 45
        assert str(scan.trigger.timezone) == "UTC"
        assert (scan.max_instances, scan.coalesce, scan.misfire_grace_time) == (1, True, 120)
        assert isinstance(digest.trigger, CronTrigger) and str(digest.trigger.timezone) == "Europe/Berlin"
        assert (digest.max_instances, digest.coalesce) == (1, True)
        # Across the spring DST change in Berlin, 07:30 local stays 07:30 local.
        before = dt.datetime(2025, 3, 28, 8, 0, tzinfo=dt.UTC)
        fire = digest.trigger.get_next_fire_time(None, before)
        assert fire.isoformat() == "2025-03-31T07:30:00+02:00"
        settings_off = load_settings(write_config(tmp_path, digest={"enabled": False}))
        assert {j.id for j in MonitorService(settings_off, storage).scheduler.get_jobs()} == {"scan"}
    finally:
        storage.close()


@pytest.mark.parametrize(("field", "names"), [
    ("*", "*"), ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"), ("mon-fri", "mon,tue,wed,thu,fri"),
    ("5-7", "sun,fri,sat"), ("*/2", "sun,tue,thu,sat"), ("1-5/2", "mon,wed,fri"), ("6,0", "sun,sat"),
    ("SAT,sun", "sun,sat"),
])
def test_crontab_weekdays_count_from_sunday(field: str, names: str) -> None:
    assert crontab_weekdays(field) == names


@pytest.mark.parametrize("expr", ["0 8 * *", "0 8 * * 8", "0 8 * * 5-1", "0 8 * * */0", "0 8 * * funday",
                                  "61 8 * * *", "0 8 * * * *"])
def test_bad_crontab_lines(expr: str) -> None:
    with pytest.raises(ValueError):
        crontab_trigger(expr, dt.UTC)


def fire_times(expr: str, zone: str, start: dt.datetime, count: int) -> list[str]:
    trigger = crontab_trigger(expr, ZoneInfo(zone))
    previous, now, out = None, start, []
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        now = previous + dt.timedelta(seconds=1)
        out.append(previous.astimezone(dt.UTC).strftime("%m-%d %H:%M"))
    return out


def test_daily_digest_fires_once_a_day_across_dst_changes() -> None:
    # Berlin: the clocks go forward on 30 March 2025 and back on 26 October 2025.
    start = dt.datetime(2025, 3, 29, tzinfo=dt.UTC)
    assert fire_times("0 8 * * *", "Europe/Berlin", start, 3) == ["03-29 07:00", "03-30 06:00", "03-31 06:00"]
    start = dt.datetime(2025, 10, 25, tzinfo=dt.UTC)
    assert fire_times("0 8 * * *", "Europe/Berlin", start, 3) == ["10-25 06:00", "10-26 07:00", "10-27 07:00"]
    # 02:30 happens twice on 26 October; the digest goes out once (APScheduler 3.11 alone: twice).
    assert fire_times("30 2 * * *", "Europe/Berlin", start, 3) == ["10-25 00:30", "10-26 00:30", "10-27 01:30"]
    # 02:30 does not exist on 30 March; the digest still goes out that day, an hour later.
    start = dt.datetime(2025, 3, 29, tzinfo=dt.UTC)
    assert fire_times("30 2 * * *", "Europe/Berlin", start, 3) == ["03-29 01:30", "03-30 01:30", "03-31 00:30"]


def test_bad_crontab_is_a_config_error(tmp_path: Path, exe: str) -> None:
    config = write_config(tmp_path, digest={"enabled": True, "schedule": "0 8 * *"})
    proc = subprocess.run([exe, "--config", str(config), "run"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "[digest] schedule" in proc.stderr and str(config) in proc.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path, exe: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, http={"enabled": True, "port": port})
        proc = subprocess.run([exe, "--config", str(config), "run"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def test_a_failed_digest_is_retried_soon_not_at_the_next_daily_run(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from mailserver import Recorder, free_port

    from monitor.scan import scan

    port = free_port()  # nothing listens there yet: the first send fails
    config = write_config(tmp_path, digest={"enabled": True, "recipients": ["desk@example.org"], "retry_seconds": 1},
                          smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5})
    drop_file(tmp_path / "drop", "first.txt", seed("000"))
    settings = load_settings(config)
    storage = Storage.open(settings.state.database_url)
    service = MonitorService(settings, storage)
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    try:
        scan(settings, storage)
        service.scheduler.start(paused=True)
        service.digest_job()
        retry = service.scheduler.get_job("digest-retry")
        assert retry is not None, "a failed digest must schedule a retry"
        assert not recorder.messages
        controller.start()
        service.scheduler.resume()
        wait_for(lambda: recorder.messages, timeout=15, what="the retried digest")
        assert recorder.messages[0].rcpt_tos == ["desk@example.org"]
        assert "5 new" in recorder.messages[0].message["Subject"]
    finally:
        service.scheduler.shutdown(wait=True)
        controller.stop()
        storage.close()
