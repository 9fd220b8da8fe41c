"""Migration 0008: on SQLite the paragraph and band key tables become WITHOUT ROWID tables
with every row kept; a store upgraded from 0007 decides the next files as a new store does."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from conftest import ROOT, write_config

from monitor.config import load_settings
from monitor.scan import scan
from monitor.storage import Storage
from monitor.storage.migrate import SCRIPTS, current, head, upgrade

sys.path.insert(0, str(ROOT))
from bench import gen

TABLES = ("paragraph_keys", "band_keys")


def _rows(db: Path) -> dict[str, list[tuple[int, int]]]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT key, story_id FROM {t} ORDER BY key, story_id").fetchall() for t in TABLES}


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
    storage = Storage.open(settings.state.database_url, upgrade=revision is None)
    try:
        if revision is not None:
            upgrade(storage.engine, revision)
        scan(settings, storage)
    finally:
        storage.close()
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
    from alembic import command
    from alembic.config import Config

    db = _store(tmp_path / "new", 20, None)
    before = _rows(db)
    storage = Storage.open(f"sqlite:///{db}")
    try:
        config = Config()
        config.set_main_option("script_location", str(SCRIPTS))
        with storage.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0007")
    finally:
        storage.close()
    assert _rows(db) == before
    assert not any("WITHOUT ROWID" in sql for sql in _ddl(db).values())
