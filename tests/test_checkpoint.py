"""The checkpoint thread of a SQLite store (monitor/storage/checkpoint.py), on real files.

The writer's own autocheckpoint is set out of reach here, so that what keeps the WAL
bounded can only be the thread and the restart it waits for."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from monitor.models import FileInfo
from monitor.storage import Storage, checkpoint, store

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
PAGE_FRAME = 4096 + 24  # a WAL frame: its header and one page


def _commits(storage: Storage, count: int, width: int = 2000) -> None:
    """`count` write transactions, each recording a file with a reason `width` characters
    long (the reason changes, so every commit writes its pages again)."""
    for n in range(count):
        storage.record_file(FileInfo(f"f{n % 50}.txt", n, n), None, reason=f"{n:06d}" * (width // 6), now=T0)


def _wal_frames(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return max(0, wal.stat().st_size - 32) // PAGE_FRAME if wal.exists() else 0


@pytest.fixture
def small_restart(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(checkpoint, "RESTART_FRAMES", 60)
    monkeypatch.setattr(store, "FALLBACK_PAGES", 1_000_000)  # the writer never checkpoints itself
    return 60


def _refuse(*args: object, **kwargs: object) -> sqlite3.Connection:
    raise sqlite3.OperationalError("unable to open database file")


def _run(db: Path) -> tuple[int, int]:
    """(the WAL's length in frames, the times a commit waited) after the same 400 commits."""
    storage = Storage.open(f"sqlite:///{db}")
    try:
        _commits(storage, 400)
        assert storage.file_states()["f49.txt"] == (399, 399)
        return _wal_frames(db), storage._checkpoints.waits if storage._checkpoints else 0
    finally:
        storage.close()


def test_the_thread_keeps_the_wal_short(tmp_path: Path, small_restart: int, monkeypatch: pytest.MonkeyPatch) -> None:
    frames, waits = _run(tmp_path / "kept.db")
    # The same commits with the thread unable to open the store: nothing checkpoints.
    with monkeypatch.context() as m:
        m.setattr(checkpoint.sqlite3, "connect", _refuse)
        unchecked, _ = _run(tmp_path / "unchecked.db")
    assert unchecked > 1000 and frames < unchecked / 3, (frames, unchecked)
    assert waits >= 2  # the WAL was started again more than once
    for name in ("kept.db", "unchecked.db"):
        with sqlite3.connect(tmp_path / name) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("SELECT count(*) FROM files").fetchone() == (50,)


def test_a_thread_that_cannot_start_says_so_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(checkpoint.sqlite3, "connect", _refuse)
    storage = Storage.open(f"sqlite:///{tmp_path / 'store.db'}")
    with caplog.at_level(logging.INFO, logger="monitor.storage.checkpoint"):
        _commits(storage, 20, width=6)
    storage.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "monitor.storage.checkpoint"]
    assert len(lines) == 1 and "could not open the store" in lines[0], lines


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "monitor-checkpoint"]


def test_close_ends_the_thread_and_an_idle_thread_ends_itself(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    before = len(_threads())
    storage = Storage.open(f"sqlite:///{tmp_path / 'store.db'}")
    _commits(storage, 3, width=6)
    assert len(_threads()) == before + 1
    storage.close()
    assert len(_threads()) == before

    monkeypatch.setattr(checkpoint, "IDLE_SECONDS", 0.05)
    storage = Storage.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        _commits(storage, 3, width=6)
        thread = next(t for t in _threads() if t.is_alive())
        thread.join(timeout=5)
        assert not thread.is_alive()
        _commits(storage, 3, width=6)  # the next commit starts another
        assert len(_threads()) == before + 1
    finally:
        storage.close()
    assert len(_threads()) == before
