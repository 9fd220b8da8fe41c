"""The statements run once or more per file, as SQL text on the DBAPI cursor.

Profiled on 10,000 bulletins, SQLAlchemy Core spent more time on this path than the
database did: about 25 µs per statement and 10 µs per executemany row in parameter
processing (type decorators, expanding IN lists), for a dozen statements and some
seventy rows per file. So the per-file statements are written here once for each
supported database (both speak ON CONFLICT and RETURNING), parameters are plain
tuples, and a list travels as one parameter (a JSON array on SQLite, an array on
PostgreSQL), so every statement has one text that the driver prepares once. They run
inside the transactions `Storage` opens with SQLAlchemy, on the same connection; the
four an idle scan needs (file_states, rejected_files, last_change, record_scan) also run on the
ledger's plain sqlite3 connection (monitor.storage.ledger).

Everything else in the store (schema, migrations, the feed and digest queries, which
run once per scan or per request) stays SQLAlchemy Core.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

_SCAN_COLUMNS = ("started", "finished", "files_read", "new", "revised", "unchanged", "skipped", "rejected")
_FILE_COLUMNS = ("path", "size", "mtime_ns", "sha256", "status", "reason", "item_count", "seen_at")


class SQL(NamedTuple):
    """The per-file statements and value conversions of one database.

    A NamedTuple rather than a frozen dataclass: this module is on the idle scan's path,
    where building a 21-field dataclass cost more than the whole class is worth."""

    file_states: str
    file_done: str
    content: str
    known: str
    file_hits: str
    current_hashes: str
    version_facts: str
    version_texts: str
    new_version: str  # with the version's id first where ids are given (given_ids)
    new_story: str  # one story (id, uid, first_seen, updated, current_hash), where ids are given
    next_ids: str  # the highest story and version ids (NULL in an empty store)
    add_paragraph_key: str
    add_band_key: str
    last_stamp: str
    make_current: str
    upsert_file: str
    last_change: str
    record_scan: str
    rejected_files: str
    observe: str
    observed_since: str
    new_stories: Callable[[int], str]  # the INSERT of this many stories, RETURNING (id, uid)
    # SQLite: the pass gives new stories and versions their ids (see _build). PostgreSQL:
    # the sequences do, which other sessions advance too, outside any transaction.
    given_ids: bool
    array: Callable[[Sequence[Any]], Any]  # a list as one parameter (the SQL casts it)
    ids: Callable[[Any], list[int]]  # file_hits' stories of a key, as a list
    stamp: Callable[[dt.datetime], Any]
    day: Callable[[dt.date | None], Any]
    read_stamp: Callable[[Any], dt.datetime]

    @classmethod
    def for_dialect(cls, name: str, *, given_ids: bool = True) -> SQL:
        """`given_ids=False`: SQLite picks the ids itself, as PostgreSQL's sequences do (tests)."""
        if name == "postgresql":
            return _build(lambda column, kind: f"{column} = ANY(?::{kind}[])", "%s",
                          "unnest(?::bigint[]) AS k(value)", "array_agg(story_id)", given_ids=False,
                          array=list, ids=lambda v: v, stamp=naive_utc, day=lambda d: d,
                          read_stamp=lambda v: v.replace(tzinfo=dt.UTC))
        return _build(lambda column, kind: f"{column} IN (SELECT value FROM json_each(?))", "?",
                      "json_each(?) AS k", "group_concat(story_id)", given_ids=given_ids,
                      array=_json_array, ids=lambda v: list(map(int, v.split(","))), stamp=_sqlite_stamp,
                      day=lambda d: d.isoformat() if d else None,
                      read_stamp=lambda v: dt.datetime.fromisoformat(v).replace(tzinfo=dt.UTC))


def _json_array(values: Sequence[Any]) -> str:
    if values and type(values[0]) is int:  # keys and ids: the lists are of one type
        return f"[{','.join(map(str, values))}]"
    import json  # not at module level: the idle scan imports this module and never needs it

    return json.dumps(values)


def _sqlite_stamp(value: dt.datetime) -> str:
    # SQLAlchemy's "%Y-%m-%d %H:%M:%S.%f", which isoformat writes in half the time.
    return naive_utc(value).isoformat(" ", "microseconds")


def naive_utc(value: dt.datetime) -> dt.datetime:
    """How the store keeps a time (UTC, without an offset); a naive time is a bug, refused."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _build(in_list: Callable[[str, str], str], placeholder: str, each_key: str, id_list: str,
           given_ids: bool, **conversions: Any) -> SQL:
    # Index hits for a whole file: (0 for paragraph keys or 1 for band keys, key, its
    # stories), a key's stories only when it has at most ? of them: a boilerplate key held
    # by thousands of stories says nothing (ingest._candidate_ids), and SQLite steps
    # through at most ? more index entries to know it, however large the store grows.
    # Only the keys held (by few enough): most of a file's keys are its new stories' own,
    # held by none, and a row each for them cost more than the lookups. EXISTS first: for
    # the 94 % of keys held by none (10,000 bench/gen.py bulletins) one step into the index
    # is all, where the counting subquery's set-up cost more than its step: 0.45 s instead
    # of 0.57 s over the pass, both timed on pages already cached.
    # A key's stories are in two tiers (monitor/storage/keys.py): each tier's read stops at
    # ? too, so a key held by more than ? stories in either is crowded, and one held in
    # both tiers by the same story counts it once (UNION).
    hits = " UNION ALL ".join(
        f"SELECT * FROM (SELECT {src} AS src, k.value AS key, (SELECT CASE WHEN count(*) <= ? THEN {id_list} END "
        f"FROM (SELECT story_id FROM (SELECT story_id FROM {table} WHERE key = k.value LIMIT ?) AS main_{src} "
        f"UNION SELECT story_id FROM (SELECT story_id FROM recent_{table} WHERE key = k.value LIMIT ?) "
        f"AS recent_{src}) AS held) AS held FROM {each_key} "
        f"WHERE EXISTS (SELECT 1 FROM recent_{table} WHERE key = k.value) "
        f"OR EXISTS (SELECT 1 FROM {table} WHERE key = k.value)) AS hits_{src} WHERE held IS NOT NULL"
        for src, table in ((0, "paragraph_keys"), (1, "band_keys")))
    statements = {
        # A settling row is an observation, not a record: the file is still to be read.
        "file_states": "SELECT path, size, mtime_ns FROM files WHERE status <> 'settling'",
        "file_done": "SELECT size, mtime_ns, sha256 FROM files WHERE path = ?",
        "content": "SELECT item_count FROM files WHERE sha256 = ? AND status = 'read' LIMIT 1",
        "known": f"SELECT text_hash, story_id FROM versions WHERE {in_list('text_hash', 'text')}",
        "file_hits": hits,
        # Each story's current text; what its version says besides the text is read by
        # version_facts for the texts the store's cache (ingest.VersionFacts) lacks, and the
        # text itself by version_texts for those the fingerprint cache lacks.
        "current_hashes": f"SELECT id, current_hash FROM stories WHERE {in_list('id', 'bigint')}",
        "version_facts": ("SELECT text_hash, kind, published, key_mtime_ns, key_path FROM versions "
                          f"WHERE {in_list('text_hash', 'text')}"),
        "version_texts": f"SELECT text_hash, title, paragraphs FROM versions WHERE {in_list('text_hash', 'text')}",
        # SQLite gives a new row the table's highest id plus one, which under the write lock
        # the pass reads and gives itself: it then knows every new row's id before writing
        # it, and writes the stories with one executemany (a multi-row INSERT ... RETURNING
        # took twice as long) and the search rows without looking each version up by its
        # hash (monitor.storage.search.index_rows): the pass alone in 0.96 of the time.
        "new_version": (f"INSERT INTO versions ({'id, ' if given_ids else ''}story_id, text_hash, kind, title, "
                        "headline, paragraphs, published, key_mtime_ns, key_path, seen_at, seq, correction) "
                        f"VALUES ({'?, ' if given_ids else ''}?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        "new_story": "INSERT INTO stories (id, uid, first_seen, updated, current_hash) VALUES (?, ?, ?, ?, ?)",
        "next_ids": "SELECT (SELECT max(id) FROM stories), (SELECT max(id) FROM versions)",
        # Two subqueries, so that each is one step down its index.
        "last_stamp": "SELECT (SELECT max(seen_at) FROM versions), (SELECT max(seq) FROM versions)",
        # New keys go to the recent tier, whose pages stay cached (monitor/storage/keys.py).
        "add_paragraph_key": "INSERT INTO recent_paragraph_keys (key, story_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        "add_band_key": "INSERT INTO recent_band_keys (key, story_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        "make_current": "UPDATE stories SET current_hash = ?, updated = ? WHERE id = ?",
        "upsert_file": (f"INSERT INTO files ({', '.join(_FILE_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_FILE_COLUMNS))}) ON CONFLICT (path) DO UPDATE SET "
                        + ", ".join(f"{c} = excluded.{c}" for c in _FILE_COLUMNS[1:])),
        "last_change": "SELECT max(updated) FROM stories",
        "rejected_files": "SELECT path, reason FROM files WHERE status = 'rejected' ORDER BY path",
        # The first time a file version was seen; kept while size and mtime stay the same,
        # and never written over a record of that same version (read by another instance).
        "observe": ("INSERT INTO files (path, size, mtime_ns, status, item_count, seen_at) "
                    "VALUES (?, ?, ?, 'settling', 0, ?) ON CONFLICT (path) DO UPDATE SET "
                    "size = excluded.size, mtime_ns = excluded.mtime_ns, sha256 = NULL, status = 'settling', "
                    "reason = NULL, item_count = 0, seen_at = excluded.seen_at "
                    "WHERE files.size <> excluded.size OR files.mtime_ns <> excluded.mtime_ns"),
        "observed_since": ("SELECT seen_at FROM files WHERE path = ? AND size = ? AND mtime_ns = ? "
                           "AND status = 'settling'"),
        "record_scan": (f"INSERT INTO scans ({', '.join(_SCAN_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_SCAN_COLUMNS))})"),
    }
    # No statement here has a literal "?" or "%", so the placeholder swap is safe.
    fields: dict[str, Any] = {name: sql.replace("?", placeholder) for name, sql in statements.items()}
    row = f"({', '.join([placeholder] * 4)})"

    @functools.lru_cache(maxsize=64)
    def new_stories(n: int) -> str:
        return (f"INSERT INTO stories (uid, first_seen, updated, current_hash) VALUES {', '.join([row] * n)} "
                "RETURNING id, uid")

    return SQL(**fields, new_stories=new_stories, given_ids=given_ids, **conversions)


# The reads and the write an idle pass needs, on a DBAPI cursor or sqlite3 connection:
# `Storage` (in its transactions) and the ledger (on its own connection) both use these,
# so the idle pass gets exactly the answers the full pass would.


def file_states(sql: SQL, cur: Any) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file recorded, read or rejected, by path."""
    return {path: (size, mtime) for path, size, mtime in cur.execute(sql.file_states).fetchall()}


def rejected_files(sql: SQL, cur: Any) -> list[tuple[str, str]]:
    """(path, reason) of every file recorded as rejected, by path."""
    return [(path, reason) for path, reason in cur.execute(sql.rejected_files).fetchall()]


def last_change(sql: SQL, cur: Any) -> dt.datetime | None:
    """When a story last became new or revised (the newest `updated`); None when there is none."""
    value = cur.execute(sql.last_change).fetchone()[0]
    return None if value is None else sql.read_stamp(value)


def record_scan(sql: SQL, cur: Any, report: Any, started: dt.datetime, finished: dt.datetime) -> None:
    """Add a pass and its counts (a ScanReport) to the scans table."""
    cur.execute(sql.record_scan, (sql.stamp(started), sql.stamp(finished), report.files_read, report.new,
                                  report.revised, report.unchanged, report.skipped, report.rejected))


@contextmanager
def cursor(conn: Any) -> Iterator[Any]:
    """A DBAPI cursor on the connection of a SQLAlchemy `Connection`, inside its transaction."""
    cur = conn.connection.cursor()
    try:
        yield cur
    finally:
        cur.close()
