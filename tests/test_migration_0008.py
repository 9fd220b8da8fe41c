"""Migration 0008: on SQLite the paragraph and band key tables become WITHOUT ROWID tables
with every row kept; a store upgraded from 0007 decides the next files as a new store does."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, downgrade, write_config

from monitor.config import load_settings
from monitor.scan import scan
from monitor.storage import Storage
from monitor.storage.migrate import current, head

sys.path.insert(0, str(ROOT))
from bench import gen

TABLES = ("paragraph_keys", "band_keys")


def _rows(db: Path) -> dict[str, list[tuple[int, int]]]:
    """Each key table's rows, with those of its recent tier where the store has one (0010)."""
    with sqlite3.connect(db) as conn:
        tiers = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {t: conn.execute(f"SELECT key, story_id FROM {t}"
                                + (f" UNION SELECT key, story_id FROM recent_{t}" if f"recent_{t}" in tiers else "")
                                + " ORDER BY key, story_id").fetchall() for t in TABLES}


def _ddl(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE name IN (?, ?)", TABLES).fetchall())


def _store(folder: Path, files: int, revision: str | None) -> Path:
    """A store at `revision` (head if None) holding the first `files` bulletins of the folder's drop."""
    folder.mkdir()
    settings = load_settings(write_config(folder))
    gen.write(folder / "drop", 40, seed=5, start_mtime=time.time() - 3600)
    later = sorted((folder / "drop").iterdir())[files:]
    for path in later:
        path.rename(folder / path.name)
    storage = Storage.open(settings.state.database_url)
    try:
        scan(settings, storage)  # the pass speaks today's schema: the store goes down after it
    finally:
        storage.close()
    if revision is not None:
        downgrade(folder / "monitor.db", revision)
    for path in later:
        (folder / path.name).rename(path)
    return folder / "monitor.db"


def _finish(folder: Path) -> None:
    """Upgrade the store to head and scan the rest of the drop."""
    settings = load_settings(folder / "monitor.toml")
    storage = Storage.open(settings.state.database_url)
    try:
        assert current(storage.engine) == head()
        scan(settings, storage)
    finally:
        storage.close()


def test_the_key_tables_keep_every_row_without_a_rowid(tmp_path: Path) -> None:
    db = _store(tmp_path / "old", 20, "0007")
    before = _rows(db)
    assert all(before.values())
    assert not any("WITHOUT ROWID" in sql for sql in _ddl(db).values())
    storage = Storage.open(f"sqlite:///{db}")  # upgrades
    storage.close()
    assert _rows(db) == before
    assert all(sql.rstrip().endswith("WITHOUT ROWID") for sql in _ddl(db).values())
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_an_upgraded_store_goes_on_as_a_new_one(tmp_path: Path) -> None:
    upgraded = _store(tmp_path / "upgraded", 20, "0007")
    _finish(tmp_path / "upgraded")
    fresh = _store(tmp_path / "fresh", 40, None)
    assert _rows(upgraded) == _rows(fresh)
    with sqlite3.connect(upgraded) as a, sqlite3.connect(fresh) as b:
        query = "SELECT id, uid, current_hash FROM stories ORDER BY id"
        assert a.execute(query).fetchall() == b.execute(query).fetchall()


def test_the_downgrade_gives_back_rowid_tables(tmp_path: Path) -> None:
    db = _store(tmp_path / "new", 20, None)
    before = _rows(db)
    downgrade(db, "0007")
    assert _rows(db) == before
    assert not any("WITHOUT ROWID" in sql for sql in _ddl(db).values())


def test_an_upgrade_killed_midway_leaves_the_old_store_and_the_next_one_completes(tmp_path: Path) -> None:
    """SIGKILL while 0008 copies the key rows, in the first table and in the second: the
    store is still whole at 0007 (the migration is one transaction), and the next start
    upgrades it with every row kept."""
    from bench import bigstore

    built = tmp_path / "built.db"
    bigstore.build(built, 100_000)
    downgrade(built, "0007")
    before = {t: _count(built, t) for t in TABLES}
    # The copy writes the new tables' pages to the WAL: 100,000 stories' paragraph keys
    # fill about 5 MB of it, their band keys about 25 MB more.
    for wal_bytes in (2_000_000, 12_000_000):
        db = tmp_path / f"killed-{wal_bytes}.db"
        shutil.copyfile(built, db)
        _kill_upgrade_at(db, wal_bytes)
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0007",)
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert not conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '%_new'").fetchall()
        assert {t: _count(db, t) for t in TABLES} == before
        assert not any("WITHOUT ROWID" in sql for sql in _ddl(db).values())
        Storage.open(f"sqlite:///{db}").close()
        assert {t: _count(db, t) for t in TABLES} == before
        assert all(sql.rstrip().endswith("WITHOUT ROWID") for sql in _ddl(db).values())


def _kill_upgrade_at(db: Path, wal_bytes: int) -> None:
    """Start the upgrade in a process of its own and SIGKILL it once the WAL holds `wal_bytes`."""
    wal = db.with_name(db.name + "-wal")
    code = f"from monitor.storage import Storage; Storage.open('sqlite:///{db}').close()"
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while (not wal.exists() or wal.stat().st_size < wal_bytes) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"the upgrade ended before its WAL held {wal_bytes} bytes"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
