"""Operator faults, provoked for real: each ends in one line, the documented exit status,
a /healthz that tells the truth, and no story lost.

The console script runs in a subprocess against real SQLite files (damaged by writing
garbage into them), a real PostgreSQL that is not there, real pipes closed early and
/dev/full; the real service runs on a free port (tests/servicekit.py) while its store is
deleted, replaced, damaged, or starved on a tmpfs the test mounts itself.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Monitor, drop_file, seed, write_config
from ports import free_port
from servicekit import Service, brief_bulletin, wait_for

SEEDS = ("000", "004")  # 6 stories together
SEED_STORIES = 6
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
LATE = brief_bulletin(7, random.Random(7))  # one more story, unlike the seeds'
READ_ONLY = (("status",), ("feed",), ("db", "current"), ("digest", "--dry-run"))


def seeded(tmp_path: Path, exe: str, **sections: dict[str, object]) -> Monitor:
    """A monitor whose store holds the seeds' 6 stories."""
    mon = Monitor(exe, write_config(tmp_path, **sections))
    for prefix in SEEDS:
        mon.drop_file(f"{prefix}.txt", seed(prefix))
    assert "stories new 6" in mon("scan").stdout
    return mon


def store_path(mon: Monitor) -> Path:
    return mon.folder / "monitor.db"


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def stories(mon: Monitor) -> int:
    return int(re.search(r"stories stored: (\d+)", mon("status").stdout).group(1))


# -- output cut short, output that cannot be written -----------------------------------


@pytest.mark.parametrize("args", [("status",), ("feed",), ("scan",), ("db", "current"), ("digest", "--dry-run"),
                                  ("--help",)])
def test_output_cut_short_is_quiet(tmp_path: Path, exe: str, args: tuple[str, ...]) -> None:
    # A recipient: without one, the dry run says so on stderr (a notice meant for the operator).
    mail = {"digest": {"recipients": ["alice@example.org"], "sender": "d@example.org"},
            "smtp": {"host": "127.0.0.1"}}
    mon = seeded(tmp_path, exe, **(mail if args[0] == "digest" else {}))
    if args == ("scan",):
        mon.drop_file("late.txt", LATE)  # a pass with work to do, then the summary
    # The reader is gone before the command writes a byte: `monitor ... | true`.
    proc = subprocess.Popen([exe, "--config", str(mon.config), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err == "", err  # no traceback, no "Exception ignored", no second summary
    if args == ("scan",):
        assert stories(mon) > SEED_STORIES  # the work was done all the same


@pytest.mark.parametrize("args", [("feed",), ("status",), ("scan",), ("--version",)])
def test_stdout_that_cannot_be_written_is_one_line_exit_1(tmp_path: Path, exe: str, args: tuple[str, ...]) -> None:
    mon = seeded(tmp_path, exe)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([exe, "--config", str(mon.config), *args], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert proc.returncode == 1
    assert one_line(proc) == "monitor: cannot write the output: No space left on device"


# -- the drop folder cannot be listed ----------------------------------------------------


def test_unreadable_drop_folder_under_scan(tmp_path: Path, exe: str) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to scan without root's right to read any folder")
    mon = seeded(tmp_path, exe)
    mon.drop_file("later.txt", LATE)
    os.chmod(mon.drop, 0)
    try:
        if subprocess.run([*UNPRIVILEGED, "ls", str(mon.drop)], capture_output=True).returncode == 0:
            pytest.skip("dropping CAP_DAC_OVERRIDE did not take effect here")
        proc = subprocess.run([*UNPRIVILEGED, exe, "--config", str(mon.config), "scan"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 1
        assert one_line(proc) == f"monitor: cannot list the drop folder {mon.drop}: Permission denied"
    finally:
        os.chmod(mon.drop, 0o755)
    assert "stories new" in mon("scan").stdout
    assert stories(mon) > SEED_STORIES


# -- a damaged SQLite store -------------------------------------------------------------


def damage(path: Path, where: str) -> None:
    """Garbage over the header (the first 100 bytes) or over every page after the first."""
    data = bytearray(path.read_bytes())
    assert not Path(f"{path}-wal").exists(), "the store was not checkpointed"
    if where == "header":
        data[:100] = b"\xde\xad\xbe\xef" * 25
    else:
        page = int.from_bytes(data[16:18], "big")
        for offset in range(page, len(data), page):
            data[offset:offset + page] = bytes((offset // page + i) % 251 for i in range(page))
    path.write_bytes(bytes(data))


ALL_COMMANDS = (("scan",), *READ_ONLY, ("db", "upgrade"), ("digest",), ("scan", "--baseline"))


@pytest.mark.parametrize("where", ["header", "pages"])
def test_a_damaged_store_is_named_by_every_command(tmp_path: Path, exe: str, where: str) -> None:
    mon = seeded(tmp_path, exe)
    damage(store_path(mon), where)
    for args in ALL_COMMANDS:
        proc = mon(*args, check=False)
        assert proc.returncode == 3, (args, proc.stderr)
        line = one_line(proc)
        assert line.startswith(f"monitor: store error: the store {store_path(mon)} is damaged ("), (args, line)
        assert line.endswith("restore it from a backup, or build a new one from the drop folder "
                             "with `monitor rebuild`"), line


# -- stores that are not there ------------------------------------------------------------


@pytest.mark.parametrize("args", [*READ_ONLY, ("digest",)])
def test_read_only_commands_never_create_a_store(tmp_path: Path, exe: str, args: tuple[str, ...]) -> None:
    typo = tmp_path / "stat" / "monitor.db"
    mon = Monitor(exe, write_config(tmp_path, database_url=f"sqlite:///{typo}"))
    proc = mon(*args, check=False)
    assert proc.returncode == 3
    assert one_line(proc).startswith(f"monitor: store error: no store at {typo}: check [state] database_url")
    assert not typo.parent.exists()
    assert proc.stdout == ""


@pytest.mark.parametrize("args", [*READ_ONLY, ("scan",), ("db", "upgrade")])
def test_postgresql_down_is_exit_3_and_one_line(tmp_path: Path, exe: str, args: tuple[str, ...]) -> None:
    # A server that is down: nothing listens on its port. The password never shows.
    url = f"postgresql+psycopg://monitor:pw-s3cret@127.0.0.1:{free_port()}/monitor"
    proc = Monitor(exe, write_config(tmp_path, database_url=url))(*args, check=False)
    assert proc.returncode == 3, proc.stderr
    assert one_line(proc).startswith("monitor: store error: database unreachable: ")
    assert "pw-s3cret" not in proc.stderr


def test_postgresql_stopped_under_db_current(tmp_path: Path, exe: str) -> None:
    from pgserver import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (install Debian's `postgresql` package; .ci/run does)")
    server = PostgresServer(bindir)  # a server of its own, to stop it under the command
    server.start()
    try:
        mon = Monitor(exe, write_config(tmp_path, database_url=server.create_database()))
        assert mon("db", "upgrade").returncode == 0
        server._run("pg_ctl", "-D", str(server.data), "-m", "fast", "-w", "stop")
        proc = mon("db", "current", check=False)
    finally:
        server.stop()
    assert proc.returncode == 3
    assert one_line(proc).startswith("monitor: store error: database unreachable: ")


def test_unsupported_database_is_named_not_a_driver_error(tmp_path: Path, exe: str) -> None:
    for args in (("scan",), ("status",), ("db", "current")):
        proc = Monitor(exe, write_config(tmp_path, database_url="mysql://u:pw@db/x"))(*args, check=False)
        assert proc.returncode == 2
        line = one_line(proc)
        assert "[state] database_url: unsupported database 'mysql'" in line, line
        assert "MySQLdb" not in line and "pw" not in line


# -- a clock ahead of ours ----------------------------------------------------------------


def test_a_file_from_the_future_settles_by_observation(tmp_path: Path, exe: str) -> None:
    mon = seeded(tmp_path, exe, drop={"settle_seconds": 1})
    future = mon.drop_file("skewed.txt", LATE, age=-86_400)  # the producer's clock: a day ahead
    first = mon("scan").stdout
    assert "files read 0" in first and "files skipped 1" in first
    status = mon("status").stdout
    assert re.search(r"files settling: 1\n  skewed\.txt: modified in the future \(.*\), unchanged since .*, "
                     r"read once unchanged for 1s", status), status
    time.sleep(1.2)
    assert "files read 1, stories new 1" in mon("scan").stdout
    assert stories(mon) == SEED_STORIES + 1
    assert "files settling: 0" in mon("status").stdout
    # Touched again (still in the future): a new version, observed afresh.
    os.utime(future, (time.time() + 90_000, time.time() + 90_000))
    assert "files skipped 1" in mon("scan").stdout


def test_the_service_reads_a_file_from_the_future_soon_after_it_settles(tmp_path: Path, exe: str) -> None:
    svc = Service(exe, tmp_path, scan_seconds=60, settle_seconds=1)  # no interval pass during the test
    try:
        svc.wait_ready()
        t0 = time.monotonic()
        drop_file(svc.drop, "skewed.txt", LATE, age=-86_400)
        wait_for(lambda: stored(svc) == 1, 15, "the file dated a day ahead")
        took = time.monotonic() - t0
        assert took >= 1, f"read after {took:.2f}s, before it was seen still for settle_seconds"
    finally:
        code, _ = svc.stop()
    assert code == 0


def test_a_file_dropped_just_before_the_service_starts_is_read_once_it_settles(tmp_path: Path, exe: str) -> None:
    (tmp_path / "drop").mkdir()
    drop_file(tmp_path / "drop", "fresh.txt", LATE, age=0)  # no event will follow: it is there already
    t0 = time.monotonic()
    svc = Service(exe, tmp_path, scan_seconds=60, settle_seconds=2)  # no interval pass during the test
    try:
        svc.wait_ready()
        wait_for(lambda: stored(svc) == 1, 20, "the file, once still for settle_seconds")
        took = time.monotonic() - t0
        assert took >= 2, f"read after {took:.2f}s, before it was still for settle_seconds"
    finally:
        code, _ = svc.stop()
    assert code == 0


# -- hostile names ----------------------------------------------------------------------------


def test_control_characters_in_a_name_cannot_forge_lines(tmp_path: Path, exe: str) -> None:
    mon = Monitor(exe, write_config(tmp_path))
    name = "x.bin\n2026-01-01 00:00:00,000 INFO monitor.scan: all fine\x1b[2K"
    mon.drop_file(name, b"\x00\x01 binary \x00")
    proc = mon("scan")
    shown = "x.bin\\n2026-01-01 00:00:00,000 INFO monitor.scan: all fine\\x1b[2K"
    assert f"WARNING monitor.scan: {shown}: rejected: binary data" in proc.stderr
    status = mon("status").stdout
    assert f"  {shown}: binary data" in status
    assert not any(line.startswith("2026-01-01") for line in status.splitlines() + proc.stderr.splitlines())


# -- the running service ----------------------------------------------------------------------


def health(svc: Service) -> tuple[int, dict[str, object]] | None:
    r = svc.try_get("/healthz")
    return (r.status, r.json()) if r is not None else None


def stored(svc: Service) -> float:
    return svc.metrics()["monitor_stories_stored"]


def log_lines(svc: Service, level: str, words: str) -> list[str]:
    return [line for line in svc.log().splitlines() if f" {level} " in line and words in line]


def test_service_serves_through_a_damaged_store_and_recovers_when_it_is_restored(tmp_path: Path, exe: str) -> None:
    mon = seeded(tmp_path, exe)
    db = store_path(mon)
    backup = tmp_path / "backup.db"
    shutil.copy(db, backup)
    damage(db, "pages")
    svc = Service(exe, tmp_path, scan_seconds=0.5)
    try:
        status, data = wait_for(lambda: health(svc), 20, "/healthz")
        assert status == 503
        store = data["store"]
        assert store["ok"] is False and f"the store {db} is damaged" in store["error"], data  # type: ignore[index]
        assert any("monitor rebuild" in p for p in data["problems"])  # type: ignore[attr-defined]
        # Readers keep the last feed the store gave.
        assert svc.get("/feed.atom").body.count(b"<entry>") == SEED_STORIES
        time.sleep(1.5)  # passes go on failing: the damage is said once, not every pass
        svc.check_alive()
        assert len(log_lines(svc, "ERROR", "is damaged")) == 1, svc.log()
        assert "Traceback" not in svc.log()

        os.replace(backup, db)  # the operator restores the backup
        wait_for(lambda: (h := health(svc)) and h[0] == 200, 20, "/healthz to recover")
        assert stored(svc) == SEED_STORIES
        drop_file(svc.drop, "late.txt", LATE)
        wait_for(lambda: stored(svc) == SEED_STORIES + 1, 20, "the next story")
        assert log_lines(svc, "INFO", "is usable again")
    finally:
        code, _ = svc.stop()
    assert code == 0


def test_state_deleted_or_replaced_while_the_service_runs(tmp_path: Path, exe: str) -> None:
    state = tmp_path / "state"
    db = state / "monitor.db"
    svc = Service(exe, tmp_path, scan_seconds=0.5, state={"database_url": f"sqlite:///{db}"},
                  feed={"path": str(state / "feed.atom")})
    try:
        svc.wait_ready()
        for prefix in SEEDS:
            drop_file(svc.drop, f"{prefix}.txt", seed(prefix))
        wait_for(lambda: stored(svc) == SEED_STORIES, 20, "the seeds")
        copy = tmp_path / "copy.db"
        with sqlite3.connect(db) as source, sqlite3.connect(copy) as target:
            source.backup(target)

        shutil.rmtree(state)  # `rm -r state/` while it runs
        wait_for(lambda: log_lines(svc, "WARNING", "was deleted while the service ran"), 20, "the warning")
        wait_for(lambda: (h := health(svc)) and h[0] == 200 and h[1]["store"]["notice"], 20,  # type: ignore[index]
                 "the recovery")
        assert stored(svc) == SEED_STORIES  # read again from the drop folder into the new store
        # the feed file is written by the publication that follows the pass
        wait_for(lambda: db.is_file() and (state / "feed.atom").is_file(), 20, "the store and the feed file")
        _, data = health(svc)  # type: ignore[misc]
        assert "was deleted; a new one was created and the drop folder read into it" in data["store"]["notice"]
        assert len(log_lines(svc, "WARNING", "was deleted while the service ran")) == 1

        drop_file(svc.drop, "late.txt", LATE)
        wait_for(lambda: stored(svc) == SEED_STORIES + 1, 20, "the next story")
        os.replace(copy, db)  # a backup restored over the store: it lacks late.txt
        wait_for(lambda: log_lines(svc, "WARNING", "was replaced by another file"), 20, "the warning")
        wait_for(lambda: (h := health(svc)) and "reopened" in (h[1]["store"]["notice"] or ""), 20,  # type: ignore[index]
                 "the reopening")
        wait_for(lambda: stored(svc) == SEED_STORIES + 1, 20, "late.txt read again into the restored store")
        assert svc.get("/feed.atom").body.count(b"<entry>") == SEED_STORIES + 1
    finally:
        code, _ = svc.stop()
    assert code == 0
    assert "Traceback" not in svc.log()


def test_service_through_an_unreadable_drop_folder(tmp_path: Path, exe: str) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run without root's right to read any folder")
    # The service without root's right to read any folder, through a wrapper script.
    unprivileged = tmp_path / "monitor-unprivileged"
    unprivileged.write_text(f'#!/bin/sh\nexec {" ".join(UNPRIVILEGED)} {exe} "$@"\n')
    unprivileged.chmod(0o755)
    svc = Service(str(unprivileged), tmp_path, scan_seconds=0.3)
    try:
        svc.wait_ready()
        drop_file(svc.drop, "late.txt", LATE)
        os.chmod(svc.drop, 0)
        if subprocess.run([*UNPRIVILEGED, "ls", str(svc.drop)], capture_output=True).returncode == 0:
            pytest.skip("dropping CAP_DAC_OVERRIDE did not take effect here")

        def failing() -> bool:
            h = health(svc)
            return bool(h and h[1]["last_scan"] and "cannot list the drop folder" in (h[1]["last_scan"]["error"] or ""))  # type: ignore[index]

        wait_for(failing, 20, "a pass to fail on the folder")
        time.sleep(1.0)  # more failing passes: said once
        lines = log_lines(svc, "ERROR", f"scan failed: cannot list the drop folder {svc.drop}: Permission denied")
        assert len(lines) == 1, svc.log()
        os.chmod(svc.drop, 0o755)
        wait_for(lambda: stored(svc) == 1, 20, "the story, once the folder is readable")
        assert log_lines(svc, "INFO", "scans succeed again")
    finally:
        os.chmod(svc.drop, 0o755)
        code, _ = svc.stop()
    assert code == 0
    assert "Traceback" not in svc.log()


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 4 MB tmpfs mounted for this test (root only), unmounted after it."""
    where = tmp_path / "state"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


DRIVER_FAILURE = "<built-in method commit of sqlite3.Connection object> returned NULL without setting an exception"


@pytest.mark.parametrize("disk", ["roomy", "small"])
def test_a_commit_the_sqlite_driver_fails_without_a_reason_is_one_line(tmp_path: Path, disk: str,
                                                                        request: pytest.FixtureRequest) -> None:
    """CPython's sqlite3 can fail a COMMIT on a full disk with a SystemError and no SQLite
    code (seen in the disk-full test below): a StorageError, which the free space explains."""
    import datetime as dt

    from sqlalchemy import event

    from monitor.errors import StorageError
    from monitor.models import FileInfo
    from monitor.storage import Storage

    where = request.getfixturevalue("small_disk") if disk == "small" else tmp_path
    storage = Storage.open(f"sqlite:///{where}/monitor.db")
    try:
        def fail(conn: object) -> None:
            raise SystemError(DRIVER_FAILURE)

        event.listen(storage.engine, "commit", fail)
        with pytest.raises(StorageError) as raised:
            storage.record_file(FileInfo("a.txt", 1, 1), None, reason="test", now=dt.datetime.now(dt.UTC))
        line = str(raised.value)
        assert "\n" not in line and str(where / "monitor.db") in line
        if disk == "small":  # 4 MB in all: short of space
            assert "is full" in line and "free some space" in line, line
        else:
            assert "the SQLite driver failed" in line and "is full" not in line, line
    finally:
        storage.close()


def said_again(svc: Service) -> list[str]:
    """ERROR lines that repeat the one before them with no recovery line between: a fault
    that lasts is said once, not at every pass."""
    last, again = None, []
    for line in svc.log().splitlines():
        if " ERROR " in line:
            message = line.split(" ERROR ", 1)[1]
            if message == last:
                again.append(line)
            last = message
        elif "usable again" in line or "succeed again" in line:
            last = None
    return again


def test_disk_full_then_freed_the_next_pass_completes_the_work(tmp_path: Path, exe: str, small_disk: Path) -> None:
    """A pass that meets a full disk says so once and loses nothing: what was committed is
    kept, and once space is freed the next pass completes the work. The disk fills after a
    first batch is stored: a group of files commits all or nothing, and how many files a
    group takes (and how far the WAL has grown) is the scan's, not the test's, to decide."""
    db = small_disk / "monitor.db"
    filler = small_disk / "filler"
    rng = random.Random(3)
    first, count = 10, 300
    drop = tmp_path / "drop"
    drop.mkdir()
    for i in range(first):
        drop_file(drop, f"b{i:03d}.txt", brief_bulletin(i, rng))
    svc = Service(exe, tmp_path, scan_seconds=0.5, state={"database_url": f"sqlite:///{db}"},
                  feed={"path": str(small_disk / "feed.atom")})
    try:
        svc.wait_ready()
        wait_for(lambda: stored(svc) == first, 30, "the first batch")
        free = shutil.disk_usage(small_disk).free
        filler.write_bytes(b"\0" * (free - 150_000))  # room for part of the rest only
        for i in range(first, count):
            drop_file(drop, f"b{i:03d}.txt", brief_bulletin(i, rng))

        def full() -> bool:
            h = health(svc)
            return bool(h and h[1]["last_scan"] and "is full" in (h[1]["last_scan"]["error"] or ""))  # type: ignore[index]

        wait_for(full, 30, "a pass to meet the full disk")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            kept = conn.execute("SELECT count(*) FROM stories").fetchone()[0]
        assert first <= kept < count, svc.log()  # what was committed is kept
        time.sleep(1.5)  # more passes meet the full disk
        svc.check_alive()
        errors = log_lines(svc, "ERROR", "")
        # The store's commit, or the feed file written after one (which names its path).
        assert all("is full" in line or "cannot write the feed file" in line for line in errors), svc.log()
        assert not said_again(svc), svc.log()
        filler.unlink()  # the operator frees space
        wait_for(lambda: (h := health(svc)) and h[0] == 200 and h[1]["last_scan"]["ok"], 30,  # type: ignore[index]
                 "a pass that completes the work")
        assert stored(svc) == count
        assert log_lines(svc, "INFO", "is usable again")
        assert b"<entry>" in (small_disk / "feed.atom").read_bytes()
    finally:
        code, _ = svc.stop()
    assert code == 0
    assert "Traceback" not in svc.log()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM files WHERE status = 'read'").fetchone()[0] == count


def test_a_feed_file_that_cannot_be_written_is_said_once_and_written_when_it_can(tmp_path: Path, exe: str) -> None:
    """The stories are stored and served over HTTP; the file's fault is one line naming it,
    the passes are not ok (so /healthz tells it) until a pass writes the file."""
    blocked = tmp_path / "out" / "feed.atom"
    blocked.mkdir(parents=True)  # in the way of the file
    svc = Service(exe, tmp_path, scan_seconds=0.3, feed={"path": str(blocked)})
    try:
        drop_file(svc.drop, "late.txt", LATE)

        def failing() -> bool:
            h = health(svc)
            return bool(h and h[1]["last_scan"] and not h[1]["last_scan"]["ok"]  # type: ignore[index]
                        and stored(svc) == 1)

        wait_for(failing, 20, "a pass that stored the story and could not write the feed file")
        h = health(svc)
        assert h is not None
        assert h[1]["last_scan"]["error"].startswith(f"cannot write the feed file {blocked}: ")  # type: ignore[index]
        assert b"<entry>" in svc.get("/feed.atom").body  # served meanwhile
        metrics = svc.metrics()
        assert metrics['monitor_scans_total{result="error"}'] >= 1 and metrics["monitor_stories_new_total"] == 1
        assert metrics.get('monitor_scans_total{result="ok"}', 0) == 0, metrics
        time.sleep(1.0)  # more passes: said once
        lines = log_lines(svc, "ERROR", f"publishing failed: cannot write the feed file {blocked}: ")
        assert len(lines) == 1 and not log_lines(svc, "INFO", "succeed again"), svc.log()
        blocked.rmdir()
        wait_for(lambda: blocked.is_file(), 20, "the feed file, once it can be written")
        assert b"<entry>" in blocked.read_bytes()
        wait_for(lambda: log_lines(svc, "INFO", "scans succeed again"), 20, "the recovery said")
        wait_for(lambda: (h := health(svc)) and h[0] == 200, 20, "a healthy service")
    finally:
        code, _ = svc.stop()
    assert code == 0
    assert "Traceback" not in svc.log()


def test_idle_passes_log_at_debug_and_a_foreign_base_url_port_is_warned(tmp_path: Path, exe: str) -> None:
    svc = Service(exe, tmp_path, scan_seconds=0.3, feed={"base_url": "http://127.0.0.1:8999/"})
    try:
        svc.wait_ready()
        time.sleep(1.5)  # several idle passes
        assert svc.scans() >= 3
        assert not log_lines(svc, "INFO", "scan: "), svc.log()
        drop_file(svc.drop, "late.txt", LATE)
        wait_for(lambda: stored(svc) == 1, 20, "the story")
    finally:
        code, _ = svc.stop()
    assert code == 0
    passes = log_lines(svc, "INFO", "scan: files read")
    assert len(passes) == 1 and "files read 1, stories new 1" in passes[0], svc.log()
    warned = log_lines(svc, "WARNING", "[feed] base_url http://127.0.0.1:8999/ names port 8999")
    assert len(warned) == 1 and f"listens on port {svc.port}" in warned[0]


# -- in process: one translator, and the observations behind settling -----------------------


def test_the_ledger_and_storage_say_the_same_line_for_the_same_damage(tmp_path: Path, exe: str) -> None:
    from monitor.errors import StoreDamaged
    from monitor.storage import Storage
    from monitor.storage.ledger import Ledger

    mon = seeded(tmp_path, exe)
    url = f"sqlite:///{store_path(mon)}"
    damage(store_path(mon), "pages")
    with pytest.raises(StoreDamaged) as by_ledger:
        ledger = Ledger.open(url)
        assert ledger is not None
        ledger.file_states()
    with pytest.raises(StoreDamaged) as by_storage:
        Storage.open(url).file_states()
    assert str(by_ledger.value) == str(by_storage.value)
    assert str(by_storage.value).startswith(f"the store {store_path(mon)} is damaged (")


def test_observations_of_a_settling_file(store_url: str) -> None:
    import datetime as dt

    from monitor.models import FileInfo
    from monitor.storage import Storage

    storage = Storage.open(store_url)
    try:
        t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        later = t0 + dt.timedelta(seconds=9)
        info = FileInfo("skewed.txt", 100, 2_000_000_000_000_000_000)
        assert storage.observe(info, t0) == t0
        assert storage.observe(info, later) == t0  # the same version: first seen at t0
        assert "skewed.txt" not in storage.file_states()  # an observation is no record: still to read
        assert storage.observations()["skewed.txt"] == (100, info.mtime_ns, t0)
        grown = FileInfo("skewed.txt", 120, info.mtime_ns)
        assert storage.observe(grown, later) == later  # changed: observed afresh
        storage.record_file(grown, None, reason="binary data", now=later)
        assert storage.observe(grown, later + dt.timedelta(seconds=1)) is None  # recorded: not written over
        assert storage.file_states()["skewed.txt"] == (120, info.mtime_ns)
    finally:
        storage.close()
