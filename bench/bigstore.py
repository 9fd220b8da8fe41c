"""Build a SQLite store of N stories fast, for the growth and feed benchmarks.

The schema comes from the real migrations (Storage.open); the rows are bulk-inserted
with sqlite3 executemany into the same tables, with the same kinds of keys the monitor
writes: one version per story (and a revision of CORRECTIONS of them), 10 MinHash band
keys and 2 paragraph keys per story, spread over the whole signed 64-bit range like real
hashes. Keys are generated in index order, so the B-trees are filled by appending (minutes
become seconds).

The keys of the newest stories are in the recent tier (monitor/storage/keys.py), as many
as a store of that size holds on average between two folds (recent_share()), and the fold
mark is where the last fold would have left it: a scan into the store meets the tiers as
a store in service has them, not freshly folded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

from monitor.identity import BANDS
from monitor.storage import STORY_NAMESPACE, Storage, keys

PARAGRAPH_KEYS = 2
# Stories with a revision (the corrections feed has something to show, and fewer than a
# feed's worth of entries: the case where an unindexed read scans the whole timeline).
CORRECTIONS = 5
BATCH = 50_000
EPOCH = dt.datetime(2020, 1, 1)


def _stamp(seconds: int) -> str:
    """A UTC time as SQLAlchemy's SQLite DateTime stores it, `seconds` after 2020-01-01."""
    return (EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f")


def _sorted_keys(rng: random.Random, count: int, stories: int) -> Iterator[tuple[int, int]]:
    """`count` strictly increasing signed 64-bit keys, each for a random story."""
    if not count:
        return
    gap = (1 << 64) // count
    low = -(1 << 63)
    rand = rng.random
    for i in range(count):
        yield low + i * gap + int(rand() * gap), int(rand() * stories) + 1


def _batches(rows: Iterator[tuple[object, ...]]) -> Iterator[list[tuple[object, ...]]]:
    batch: list[tuple[object, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _revise(conn: sqlite3.Connection, stories: int, count: int) -> None:
    """Give `count` stories among the newest a revision, written after every other version,
    as ingest writes one: it becomes current, next on the timeline, flagged a correction."""
    top = stories + 1
    for k in range(min(count, stories)):
        story = stories - 7 * k
        stamp = _stamp(top + k)
        text_hash = hashlib.sha256(f"bench:{story}:revised".encode()).hexdigest()
        text = f"On 1 January 2020, story number {story} of the benchmark store was corrected in full."
        conn.execute("INSERT INTO versions (id, story_id, text_hash, kind, title, headline, paragraphs, published, "
                     "key_mtime_ns, key_path, seen_at, seq, correction) VALUES (?, ?, ?, 'brief', NULL, ?, ?, "
                     "'2020-01-01', ?, ?, ?, ?, 1)",
                     (top + k, story, text_hash, f"Story number {story} of the benchmark store", json.dumps([text]),
                      top + k, f"{top + k:08d}.txt", stamp, top + k))
        conn.execute("UPDATE stories SET updated = ?, current_hash = ? WHERE id = ?", (stamp, text_hash, story))


def recent_stories(stories: int) -> int:
    """How many of a store's stories have their keys in the recent tier on average: a fold
    is due once the versions since the last one are FOLD_SHARE of those before it (above
    the minimum), so the tier holds between none and that share, half of it on average."""
    if stories < keys.FOLD_MIN_VERSIONS:
        return stories  # none was due yet
    return round(stories * keys.FOLD_SHARE / (1 + keys.FOLD_SHARE) / 2)


def build(db: Path, stories: int, seed: int = 11) -> None:
    """Create `db` with the monitor's schema and `stories` stories in it."""
    db.parent.mkdir(parents=True, exist_ok=True)
    Storage.open(f"sqlite:///{db}").close()
    rng = random.Random(seed)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    conn.execute("BEGIN")

    for start in range(1, stories + 1, BATCH):
        story_rows, version_rows = [], []
        for i in range(start, min(start + BATCH, stories + 1)):
            text_hash = hashlib.sha256(f"bench:{i}".encode()).hexdigest()
            stamp = _stamp(i)
            text = f"On 1 January 2020, story number {i} of the benchmark store was published in full."
            story_rows.append((i, f"urn:uuid:{uuid.uuid5(STORY_NAMESPACE, text_hash)}", stamp, stamp, text_hash))
            version_rows.append((i, i, text_hash, "brief", None, f"Story number {i} of the benchmark store",
                                 json.dumps([text]), "2020-01-01", i, f"{i:08d}.txt", stamp, i))
        conn.executemany("INSERT INTO stories (id, uid, first_seen, updated, current_hash) VALUES (?, ?, ?, ?, ?)",
                         story_rows)
        conn.executemany("INSERT INTO versions (id, story_id, text_hash, kind, title, headline, paragraphs, "
                         "published, key_mtime_ns, key_path, seen_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         version_rows)
    recent = recent_stories(stories)
    folded = stories - recent
    for table, per_story in (("band_keys", BANDS), ("paragraph_keys", PARAGRAPH_KEYS)):
        for batch in _batches(_sorted_keys(rng, folded * per_story, folded)):
            conn.executemany(f"INSERT INTO {table} (key, story_id) VALUES (?, ?)", batch)
        for batch in _batches(_sorted_keys(rng, recent * per_story, recent)):
            conn.executemany(f"INSERT INTO recent_{table} (key, story_id) VALUES (?, ?)",
                             [(key, folded + story) for key, story in batch])
    conn.execute("UPDATE key_folds SET version = ?", (folded,))
    _revise(conn, stories, CORRECTIONS)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    # Flush the build now: otherwise the first fsync of the measured scan (a WAL
    # checkpoint) pays for writing back the whole freshly built file.
    with open(db, "rb+") as fh:
        os.fsync(fh.fileno())


if __name__ == "__main__":
    import sys
    import time

    t0 = time.perf_counter()
    build(Path(sys.argv[1]), int(sys.argv[2]))
    print(f"{sys.argv[2]} stories in {time.perf_counter() - t0:.1f}s")
