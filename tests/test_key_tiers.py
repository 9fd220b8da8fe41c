"""The index keys' two tiers (monitor/storage/keys.py), over SQLite and PostgreSQL: a fold
moves every recent key into the main tables, the lookups find a key in either tier, so a
store folded after every file decides exactly as one never folded, and a fold cut short
is completed by the next."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, write_config
from sqlalchemy import text

from monitor.config import load_settings
from monitor.scan import scan
from monitor.storage import Storage, keys

sys.path.insert(0, str(ROOT))
from bench import gen

LOW, HIGH = -(1 << 63), (1 << 63) - 1


def _tiers(storage: Storage) -> dict[str, set[tuple[int, int]]]:
    """Each tier's (key, story_id) rows: paragraph and band keys, main and recent."""
    with storage.engine.connect() as conn:
        return {f"{tier}{table}": set(map(tuple, conn.execute(text(f"SELECT key, story_id FROM {tier}{table}"))))
                for table in keys.TABLES for tier in ("", "recent_")}


def _union(tiers: dict[str, set[tuple[int, int]]]) -> dict[str, set[tuple[int, int]]]:
    return {table: tiers[table] | tiers[f"recent_{table}"] for table in keys.TABLES}


def _mark(storage: Storage) -> tuple[int, int]:
    """(the highest version id, the fold mark)."""
    with storage.engine.connect() as conn:
        top, mark = conn.execute(text("SELECT (SELECT coalesce(max(id), 0) FROM versions), version "
                                      "FROM key_folds")).one()
        return int(top), int(mark)


def _rows(storage: Storage) -> list[list[tuple[object, ...]]]:
    with storage.engine.connect() as conn:
        return [list(map(tuple, conn.execute(text(query)))) for query in (
            "SELECT id, uid, current_hash FROM stories ORDER BY id",
            "SELECT id, story_id, text_hash, seq, correction FROM versions ORDER BY id")]


@pytest.mark.parametrize("pending", [0, 1, 15_000, 16_000, 1_000_000])
def test_the_chunks_cover_the_key_range_once(pending: int) -> None:
    ranges = keys.chunks(pending)
    assert ranges[0][0] == LOW and ranges[-1][1] == HIGH
    assert all(high + 1 == next_low for (_, high), (next_low, _) in itertools.pairwise(ranges))
    assert all(low <= high for low, high in ranges)
    assert len(ranges) == max(1, -(-pending * keys.KEYS_PER_VERSION // keys.CHUNK_KEYS))


def test_a_fold_is_due_at_a_share_of_the_store_and_not_before_the_minimum() -> None:
    assert not keys.due(keys.FOLD_MIN_VERSIONS - 1, 0)
    assert keys.due(keys.FOLD_MIN_VERSIONS, 0)
    million = 1_000_000
    assert not keys.due(million + int(million * keys.FOLD_SHARE) - 1, million)
    assert keys.due(million + int(million * keys.FOLD_SHARE), million)


def _one_file_at_a_time(folder: Path, url: str, fold: bool) -> Storage:
    """A store fed the same 30 bulletins one pass per file, folded after every pass or never."""
    folder.mkdir()
    settings = load_settings(write_config(folder, url))
    waiting = folder / "waiting"
    gen.write(waiting, 30, seed=3, start_mtime=time.time() - 3600)
    storage = Storage.open(url)
    for path in sorted(waiting.iterdir()):
        path.rename(settings.drop.folder / path.name)
        scan(settings, storage)
        if fold:
            storage.fold_keys(force=True)
    return storage


@pytest.fixture
def other_url(store_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A second fresh store of the same kind as store_url."""
    if store_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/other.db"
    return str(request.getfixturevalue("postgres_server").create_database())


def test_a_store_folded_after_every_file_decides_as_one_never_folded(store_url: str, other_url: str,
                                                                     tmp_path: Path) -> None:
    folded = _one_file_at_a_time(tmp_path / "folded", store_url, fold=True)
    kept = _one_file_at_a_time(tmp_path / "kept", other_url, fold=False)
    try:
        rows = _rows(folded)
        assert any(correction for *_, correction in rows[1])  # revisions found through the main tier
        assert rows == _rows(kept)
        tiers, recent = _tiers(folded), _tiers(kept)
        assert not tiers["recent_band_keys"] and not tiers["recent_paragraph_keys"]
        assert not recent["band_keys"] and not recent["paragraph_keys"]
        assert _union(tiers) == _union(recent)
        top, mark = _mark(folded)
        assert mark == top > 0
    finally:
        folded.close()
        kept.close()


def test_a_fold_cut_short_loses_nothing_and_the_next_one_completes_it(store_url: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _one_file_at_a_time(tmp_path / "store", store_url, fold=False)
    try:
        before = _tiers(storage)
        top, mark = _mark(storage)
        assert mark == 0 < top
        monkeypatch.setattr(keys, "CHUNK_KEYS", 100)  # many chunks, for a cut after the first few
        whole = keys.chunks
        assert len(whole(top)) > 4

        def cut(pending: int) -> Iterator[tuple[int, int]]:
            ranges = whole(pending)
            yield from ranges[: len(ranges) // 2]
            raise RuntimeError("killed")  # as a crash between two chunks' transactions

        monkeypatch.setattr(keys, "chunks", cut)
        with pytest.raises(RuntimeError):
            storage.fold_keys(force=True)
        cut_short = _tiers(storage)
        assert _union(cut_short) == _union(before)
        assert cut_short["band_keys"] and cut_short["recent_band_keys"]  # half moved
        assert _mark(storage) == (top, 0)  # not marked: the fold is still due
        monkeypatch.setattr(keys, "chunks", whole)
        assert storage.fold_keys(force=True) == top
        after = _tiers(storage)
        assert _union(after) == _union(before)
        assert not after["recent_band_keys"] and not after["recent_paragraph_keys"]
        assert _mark(storage) == (top, top)
    finally:
        storage.close()


def test_a_pass_folds_when_a_fold_is_due_and_not_otherwise(store_url: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(write_config(tmp_path, store_url))
    gen.write(settings.drop.folder, 10, seed=4, start_mtime=time.time() - 3600)
    storage = Storage.open(store_url)
    try:
        monkeypatch.setattr(keys, "FOLD_MIN_VERSIONS", 10_000)
        scan(settings, storage)
        top, mark = _mark(storage)
        assert mark == 0 < top  # not due: fewer versions than the minimum
        assert _tiers(storage)["recent_band_keys"]
        monkeypatch.setattr(keys, "FOLD_MIN_VERSIONS", top)
        gen.write(settings.drop.folder, 2, seed=5, start_mtime=time.time() - 1800, prefix="more-")
        report = scan(settings, storage)
        assert report.new
        top, mark = _mark(storage)
        assert mark == top
        tiers = _tiers(storage)
        assert not tiers["recent_band_keys"] and tiers["band_keys"]
        scan(settings, storage)  # nothing new: nothing to fold, nothing asked
        assert _mark(storage) == (top, top)
    finally:
        storage.close()


def test_a_fold_does_not_check_foreign_keys_and_the_connection_checks_them_after(tmp_path: Path) -> None:
    """SQLite: a fold's transactions move rows checked when written, without checking them
    again; the connection goes back to the pool checking them, as every other one does."""
    from sqlalchemy.exc import IntegrityError

    storage = Storage.open(f"sqlite:///{tmp_path}/store.db")
    try:
        with storage._write(moves=True) as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
            raw = conn.connection.driver_connection
        with pytest.raises(IntegrityError), storage.engine.connect() as conn:
            assert conn.connection.driver_connection is raw  # the same connection, from the pool
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            conn.exec_driver_sql("INSERT INTO recent_band_keys (key, story_id) VALUES (1, 12345)")
    finally:
        storage.close()


def test_a_fold_the_store_cannot_take_is_one_warning_and_the_pass_is_kept(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    from monitor.errors import StorageError

    settings = load_settings(write_config(tmp_path))
    gen.write(settings.drop.folder, 3, seed=8, start_mtime=time.time() - 3600)
    storage = Storage.open(settings.state.database_url)
    try:
        def full(*, force: bool = False) -> int:
            raise StorageError("the disk holding the store is full (database or disk is full)")

        monkeypatch.setattr(storage, "fold_keys", full)
        report = scan(settings, storage)
        assert report.new and report.files_read == 3
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == ["folding the recent index keys left for a later pass: "
                            "the disk holding the store is full (database or disk is full)"]
        assert storage.last_scan()["new"] == report.new  # the pass is recorded all the same
    finally:
        storage.close()
