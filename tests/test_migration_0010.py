"""Migration 0010: the key tables' recent tier. A store from before it keeps every key in
the main tables and is marked as folded at its highest version; the downgrade puts the
recent keys back into the main tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import downgrade, generated_store

from monitor.storage import Storage

TABLES = ("paragraph_keys", "band_keys")


def _names(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _keys(db: Path, tier: str = "") -> dict[str, list[tuple[int, int]]]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT key, story_id FROM {tier}{t} ORDER BY key, story_id").fetchall()
                for t in TABLES}


def test_a_store_at_0009_is_upgraded_folded_and_downgraded_with_every_key(tmp_path: Path) -> None:
    db = generated_store(tmp_path, 20, seed=6)
    recent = _keys(db, "recent_")
    assert all(recent.values()) and not any(_keys(db).values())  # new keys go to the recent tier
    downgrade(db, "0009")
    assert not {"key_folds", "recent_band_keys", "recent_paragraph_keys"} & _names(db)
    assert _keys(db) == recent
    Storage.open(f"sqlite:///{db}").close()  # upgrades
    assert _keys(db) == recent and not any(_keys(db, "recent_").values())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM key_folds").fetchall() == [
            conn.execute("SELECT max(id) FROM versions").fetchone()]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
