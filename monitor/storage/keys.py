"""The index keys in two tiers: what ingest writes goes to small tables of recent keys,
which a fold moves into the main key tables in key order now and then.

The keys are hashes, spread over the whole 64-bit range: into indexes of millions of
entries (a store of a million stories holds about twelve million) nearly every new key
lands on a leaf page of its own, which is read, written to the WAL at its group's commit
and checkpointed back. That was most of what 1,000 new bulletins cost in such a store
beyond what they cost in an empty one (bench/HISTORY.md). The recent tier stays small
enough for its pages to stay cached, and a fold walks the main tables once in key order,
each leaf page taken once for all the keys it gains.

A fold is due when the versions written since the last one reach a share of those
before it (FOLD_SHARE): it costs about a pass over the main tables, so its cost per key
stays the same however large the store grows, and the recent tier stays a bounded share
of it. The lookups (SQL.file_hits) read both tiers, so a key is found whichever it is
in: each chunk of a fold moves its keys in one transaction, under the write lock.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from sqlalchemy import text

log = logging.getLogger(__name__)

TABLES = ("paragraph_keys", "band_keys")
# A fold is due when the versions written since the last fold are at least FOLD_SHARE of
# those before it, and at least FOLD_MIN_VERSIONS (about 650,000 keys, some 11 MB of pages
# in the recent tier: within the 16 MB page cache, monitor.storage.ledger.CACHE_KIB).
FOLD_SHARE = 1 / 8
FOLD_MIN_VERSIONS = 50_000
# Keys a version adds, about (ten band keys, the date key, one or two paragraph keys): to
# size the chunks from the versions pending, without counting the rows.
KEYS_PER_VERSION = 13
# Keys moved per transaction, at most about: a chunk holds the write lock for about half a
# second at a million stories (another instance waits for it, as for a group of files).
CHUNK_KEYS = 200_000
_LOW, _HIGH = -(1 << 63), (1 << 63) - 1


def due(top: int, mark: int) -> bool:
    """Whether a store whose highest version id is `top`, folded last at `mark`, is due a fold."""
    pending = top - mark
    return pending >= FOLD_MIN_VERSIONS and pending >= mark * FOLD_SHARE


def chunks(pending_versions: int) -> list[tuple[int, int]]:
    """The key ranges, inclusive, that a fold of this many versions' keys moves one by one:
    equal slices of the 64-bit range, the keys being hashes spread evenly over it."""
    n = max(1, math.ceil(pending_versions * KEYS_PER_VERSION / CHUNK_KEYS))
    span = (1 << 64) // n
    bounds = [_LOW + i * span for i in range(n)] + [_HIGH + 1]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(n)]


class KeysMixin:
    """The fold of `Storage` (which provides _write and _read)."""

    _write: Any
    _read: Any

    def fold_keys(self, *, force: bool = False) -> int:
        """Move the recent keys into the main key tables if a fold is due (or `force`);
        returns how many versions' keys the fold covered (0: none was due). Chunk by
        chunk, each in a transaction of its own: after a crash between two, the next
        fold moves what is left."""
        with self._read() as conn:
            top, mark = conn.execute(text("SELECT (SELECT coalesce(max(id), 0) FROM versions), version "
                                          "FROM key_folds WHERE id = 1")).one()
        if not (force or due(top, mark)):
            return 0
        for low, high in chunks(top - mark):
            with self._write(moves=True) as conn:
                for table in TABLES:
                    bounds = {"low": low, "high": high}
                    conn.execute(text(f"INSERT INTO {table} (key, story_id) SELECT key, story_id FROM recent_{table} "
                                      "WHERE key BETWEEN :low AND :high ON CONFLICT DO NOTHING"), bounds)
                    conn.execute(text(f"DELETE FROM recent_{table} WHERE key BETWEEN :low AND :high"), bounds)
        with self._write() as conn:
            conn.execute(text("UPDATE key_folds SET version = :top WHERE id = 1 AND version < :top"), {"top": top})
        log.info("folded the recent index keys of %s versions into the main key tables", f"{top - mark:,}")
        return top - mark
