"""The idle `monitor scan`: answered from the SQLite ledger without SQLAlchemy, and only then.

The console script runs in a subprocess with PYTHONPROFILEIMPORTTIME, so each test
sees which path a pass took by whether SQLAlchemy was imported; what the pass did is
checked in the real store through `Storage`.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import Monitor, seed, write_config

from monitor.models import ScanReport
from monitor.storage import Storage
from monitor.storage.ledger import Ledger

# What the ledger's path never imports: the ingest machinery, the renderers, and
# `dataclasses` (importing it, with the `inspect` it imports, is about a tenth of the idle
# command's instructions).
IDLE_NEVER = {"sqlalchemy", "monitor.bulletin", "monitor.identity", "lxml", "feedgen", "dataclasses", "inspect"}


def scan_path(monitor: Monitor, *, check: bool = True) -> tuple[str, str]:
    """Run `monitor scan`; return its summary line (or error) and which path it took: "ledger" or "storage"."""
    proc = monitor("--log-level", "WARNING", "scan", check=check)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "monitor.storage.ledger" in imported or "sqlalchemy" in imported, proc.stderr[-2000:]
    if "sqlalchemy" not in imported:
        assert not imported & IDLE_NEVER, sorted(imported & IDLE_NEVER)
    messages = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    output = proc.stdout.strip() or "\n".join(messages)
    return output, ("storage" if "sqlalchemy" in imported else "ledger")


@pytest.fixture
def profiled(tmp_path: Path, exe: str) -> Monitor:
    return Monitor(exe, write_config(tmp_path), env={"PYTHONPROFILEIMPORTTIME": "1"})


def scans_recorded(monitor: Monitor) -> int:
    with sqlite3.connect(monitor.folder / "monitor.db") as conn:
        return conn.execute("SELECT count(*) FROM scans").fetchone()[0]


def test_unchanged_folder_is_answered_from_the_ledger(profiled: Monitor) -> None:
    profiled.drop_file("a.txt", seed("000"))
    profiled.drop_file("notes", b"")  # rejected (blank), and recorded as such
    (profiled.drop / "sub").mkdir()  # rejected (a directory)
    first, path = scan_path(profiled)
    assert path == "storage"  # the first pass creates the store and ingests
    assert "rejected 2" in first
    feed = (profiled.folder / "feed.atom").read_bytes()

    summary, path = scan_path(profiled)
    assert path == "ledger"
    assert summary == "files read 0, stories new 0, revised 0, unchanged 0, files skipped 0, rejected 0"
    assert scans_recorded(profiled) == 2  # the idle pass is recorded like any other
    assert (profiled.folder / "feed.atom").read_bytes() == feed
    status = profiled("status").stdout
    assert "last scan" in status.lower()


@pytest.mark.parametrize("change", ["new file", "touched file", "missing feed", "stale feed", "edited config",
                                    "older schema"])
def test_anything_to_do_takes_the_full_pass(profiled: Monitor, change: str) -> None:
    a = profiled.drop_file("a.txt", seed("000"))
    scan_path(profiled)
    feed = profiled.folder / "feed.atom"
    if change == "new file":
        profiled.drop_file("b.txt", seed("004"))
    elif change == "touched file":
        os.utime(a, (a.stat().st_atime, a.stat().st_mtime - 5))
    elif change == "missing feed":
        feed.unlink()
    elif change == "stale feed":
        # As after a pass killed between its commit and the feed's rename.
        old = feed.stat().st_mtime - 3600
        os.utime(feed, (old, old))
    elif change == "edited config":
        text = profiled.config.read_text(encoding="utf-8").replace("Test bulletins", "Renamed bulletins")
        profiled.config.write_text(text, encoding="utf-8")
        written = feed.stat().st_mtime - 10
        os.utime(feed, (written, written))
        os.utime(profiled.config, (written + 5, written + 5))  # edited after the feed was written
    elif change == "older schema":
        with sqlite3.connect(profiled.folder / "monitor.db") as conn:
            conn.execute("UPDATE alembic_version SET version_num = 'not-a-revision'")
    summary, path = scan_path(profiled, check=change != "older schema")
    assert path == "storage", summary
    if change == "new file":
        assert "files read 1" in summary and "stories new 0" not in summary
    if change in ("missing feed", "stale feed"):
        assert feed.exists() and feed.stat().st_mtime > dt.datetime.now().timestamp() - 60
    if change == "edited config":
        assert b"Renamed bulletins" in feed.read_bytes()
        assert scan_path(profiled)[1] == "ledger"  # once the feed caught up, idle again
    if change == "older schema":
        # Storage does not know that revision either: it refuses rather than guessing.
        assert "not-a-revision" in summary and "upgrade monitor" in summary


def test_baseline_always_takes_the_full_pass(profiled: Monitor) -> None:
    profiled.drop_file("a.txt", seed("000"))
    scan_path(profiled)
    proc = profiled("--log-level", "WARNING", "scan", "--baseline")
    assert "sqlalchemy" in proc.stderr
    assert "baseline:" in proc.stdout


def test_ledger_reads_and_writes_what_storage_does(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    assert Ledger.open(url) is None  # no store yet: the full pass creates it
    assert not (tmp_path / "monitor.db").exists()
    storage = Storage.open(url)
    try:
        ledger = Ledger.open(url)
        assert ledger is not None
        try:
            assert ledger.file_states() == storage.file_states() == {}
            assert ledger.last_change() is None
            started = dt.datetime(2026, 11, 23, 6, 0, 0, tzinfo=dt.UTC)
            finished = dt.datetime(2026, 11, 23, 9, 0, 0, 250, tzinfo=dt.timezone(dt.timedelta(hours=3)))
            ledger.record_scan(ScanReport(skipped=2), started, finished)
            last = storage.last_scan()
            assert last is not None
            assert (last["started"], last["finished"], last["skipped"]) == (started, finished, 2)
        finally:
            ledger.close()
    finally:
        storage.close()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "postgresql://monitor@127.0.0.1:1/monitor",
                                 "sqlite:///{tmp}/monitor.db?timeout=5", "sqlite:///{tmp}/missing.db"])
def test_ledger_declines_what_only_storage_handles(tmp_path: Path, url: str) -> None:
    assert Ledger.open(url.format(tmp=tmp_path)) is None
    assert not (tmp_path / "missing.db").exists()
