"""Migration 0009: on SQLite the FTS5 index gathers 4 MB of new terms before it writes a
segment (FTS_HASHSIZE); searches find the same stories before and after, and after the
downgrade, which gives back FTS5's default."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import downgrade, generated_store

from monitor.query import parse
from monitor.storage import Storage
from monitor.storage.migrate import current, head
from monitor.storage.search import DEFAULT_HASHSIZE, FTS_HASHSIZE

QUERIES = ("minister", "council OR water", '"the delegation"', "talks -water")


def _hashsize(db: Path) -> int | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT v FROM search_fts_config WHERE k = 'hashsize'").fetchone()
    return None if row is None else int(row[0])


def _found(db: Path) -> list[list[str]]:
    storage = Storage.open(f"sqlite:///{db}", upgrade=False)
    try:
        return [[hit.story.uid for hit in storage.search(parse(q)).hits] for q in QUERIES]
    finally:
        storage.close()


def test_a_store_at_0008_gets_the_larger_hashsize_and_finds_the_same(tmp_path: Path) -> None:
    db = generated_store(tmp_path, 30, seed=5)
    downgrade(db, "0008")  # after the scan, which speaks today's schema
    assert _hashsize(db) == DEFAULT_HASHSIZE  # FTS5's default, as the downgrade writes it
    before = _found(db)
    assert any(before)
    Storage.open(f"sqlite:///{db}").close()  # upgrades
    assert _hashsize(db) == FTS_HASHSIZE
    assert _found(db) == before
    downgrade(db, "0008")
    assert _hashsize(db) == DEFAULT_HASHSIZE
    assert _found(db) == before


def test_a_new_store_has_the_larger_hashsize(tmp_path: Path) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert current(storage.engine) == head()
    finally:
        storage.close()
    assert _hashsize(tmp_path / "new.db") == FTS_HASHSIZE
