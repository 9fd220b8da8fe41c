"""The full-text search index: one row per story version, written with the version.

Both stores index the stems monitor.query makes (`index_text`), not their own
stemming, so SQLite and PostgreSQL find exactly the same stories:

* SQLite: the stems go into `search_text` (a plain row per version) in the ingest
  transaction; an FTS5 table over it (external content, rowid = the version's id)
  is brought up to date in one batch at the end of each pass
  (`Storage.record_scan`) and, should a search come first, before that search. FTS5
  writes a new segment and merges at every commit, about 1 ms each: once per file that
  was most of the cost of indexing, once per pass it is nothing. The index is only ever
  extended by whole committed transactions, so a search never sees half a file.
* PostgreSQL: `search_index(version_id, story_id, stems, tsv)` with a GIN index on the
  tsvector (its pending list makes each insert cheap), written in the ingest transaction;
  the tsvector made by the `simple` configuration (no stemming of its own, no stop words).

A search ranks the CANDIDATES newest matching versions, by BM25 computed in Python over
their stems (monitor.query.rank): the same ranking on both stores, and a word in every
other story costs what a rare one does (FTS5's bm25() reads a term's whole posting list
for its document frequency: 60 ms for a common word in a million stories). A topic reads
only the newest matching versions until it has its `limit` stories.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, text

from monitor.models import SearchHit, SearchResults, Story
from monitor.query import Query, index_text, rank, to_fts5, to_tsquery
from monitor.storage.schema import stories, story_from_row, story_query, versions
from monitor.storage.sql import cursor

FTS_TABLE = "search_fts"
TEXT_TABLE = "search_text"
STATE_TABLE = "search_state"  # SQLite: the highest version id in the FTS index
PG_TABLE = "search_index"
CANDIDATES = 500
REINDEX_BATCH = 5000
# SQLite: the new terms FTS5 gathers in memory before it writes them as a segment (its
# default is 1 MB). catch_up() adds a pass's versions in one INSERT: with fewer, larger
# segments it merges less (migration 0009). It bounds memory the pass holds for a moment,
# within the RSS budget (bench/run.py's RSS figure).
FTS_HASHSIZE = 4 << 20
DEFAULT_HASHSIZE = 1 << 20

_INSERT = {
    "sqlite": (f"INSERT INTO {TEXT_TABLE} (version_id, story_id, stems) "
               "SELECT id, story_id, ? FROM versions WHERE text_hash = ?"),
    "postgresql": (f"INSERT INTO {PG_TABLE} (version_id, story_id, stems, tsv) "
                   "SELECT id, story_id, %s, to_tsvector('simple', %s) FROM versions WHERE text_hash = %s"),
}
# The newest matching versions, newest first: (version id, story id, stems).
_WINDOW = {
    "sqlite": (f"SELECT t.version_id, t.story_id, t.stems FROM (SELECT rowid AS vid FROM {FTS_TABLE} "
               f"WHERE {FTS_TABLE} MATCH ? ORDER BY rowid DESC LIMIT ?) AS h "
               f"JOIN {TEXT_TABLE} AS t ON t.version_id = h.vid ORDER BY t.version_id DESC"),
    "postgresql": (f"SELECT version_id, story_id, stems FROM {PG_TABLE} WHERE tsv @@ to_tsquery('simple', %s) "
                   "ORDER BY version_id DESC LIMIT %s"),
}
_NEWEST = {
    "sqlite": (f"SELECT t.story_id FROM (SELECT rowid AS vid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? "
               f"ORDER BY rowid DESC LIMIT ?) AS h JOIN {TEXT_TABLE} AS t ON t.version_id = h.vid "
               "ORDER BY t.version_id DESC"),
    "postgresql": (f"SELECT story_id FROM {PG_TABLE} WHERE tsv @@ to_tsquery('simple', %s) "
                   "ORDER BY version_id DESC LIMIT %s"),
}
_COUNT = {
    "sqlite": (f"SELECT count(DISTINCT t.story_id) FROM {FTS_TABLE} AS f JOIN {TEXT_TABLE} AS t "
               f"ON t.version_id = f.rowid WHERE {FTS_TABLE} MATCH ?"),
    "postgresql": f"SELECT count(DISTINCT story_id) FROM {PG_TABLE} WHERE tsv @@ to_tsquery('simple', %s)",
}


def compiled(dialect: str, query: Query) -> str:
    return to_tsquery(query) if dialect == "postgresql" else to_fts5(query)


# -- writing ------------------------------------------------------------------------------


def index_versions(dialect: str, cur: Any, texts: Sequence[tuple[str, str]]) -> None:
    """Index the versions ingest just inserted, (stems, text hash) each, in its transaction."""
    if texts:
        cur.executemany(_INSERT[dialect], [_row(dialect, stems, text_hash) for stems, text_hash in texts])


def index_rows(cur: Any, rows: Sequence[tuple[int, int, str]]) -> None:
    """SQLite: index versions whose ids are known, (version id, story id, stems) each."""
    if rows:
        cur.executemany(f"INSERT INTO {TEXT_TABLE} (version_id, story_id, stems) VALUES (?, ?, ?)", rows)


def _row(dialect: str, stems: str, text_hash: str) -> tuple[str, ...]:
    return (stems, stems, text_hash) if dialect == "postgresql" else (stems, text_hash)


def catch_up(dialect: str, cur: Any) -> int:
    """SQLite: add every version committed since to the FTS index, in the caller's write
    transaction; how many. Nothing to do on PostgreSQL."""
    if dialect != "sqlite":
        return 0
    upto = cur.execute(f"SELECT indexed_upto FROM {STATE_TABLE}").fetchone()[0]
    newest = cur.execute(f"SELECT coalesce(max(version_id), 0) FROM {TEXT_TABLE}").fetchone()[0]
    if newest <= upto:
        return 0
    cur.execute(f"INSERT INTO {FTS_TABLE} (rowid, stems) SELECT version_id, stems FROM {TEXT_TABLE} "
                "WHERE version_id > ? ORDER BY version_id", (upto,))
    cur.execute(f"UPDATE {STATE_TABLE} SET indexed_upto = ?", (newest,))
    return newest - upto


def behind(dialect: str, cur: Any) -> bool:
    """Whether versions were committed that the FTS index does not have yet (one read)."""
    if dialect != "sqlite":
        return False
    return bool(cur.execute(f"SELECT (SELECT coalesce(max(version_id), 0) FROM {TEXT_TABLE}) > "
                            f"(SELECT indexed_upto FROM {STATE_TABLE})").fetchone()[0])


def create_index(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"CREATE TABLE {PG_TABLE} (version_id integer PRIMARY KEY "
                          "REFERENCES versions (id) ON DELETE CASCADE, story_id integer NOT NULL, "
                          "stems text NOT NULL, tsv tsvector NOT NULL)"))
        conn.execute(text(f"CREATE INDEX ix_{PG_TABLE}_tsv ON {PG_TABLE} USING gin (tsv)"))
        return
    conn.execute(text(f"CREATE TABLE {TEXT_TABLE} (version_id INTEGER PRIMARY KEY "
                      "REFERENCES versions (id) ON DELETE CASCADE, story_id INTEGER NOT NULL, stems TEXT NOT NULL)"))
    # remove_diacritics 0: й stays й (the stems already are what both stores compare).
    conn.execute(text(f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(stems, content='{TEXT_TABLE}', "
                      "content_rowid='version_id', tokenize='unicode61 remove_diacritics 0')"))
    conn.execute(text(f"CREATE TABLE {STATE_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), "
                      "indexed_upto INTEGER NOT NULL)"))
    conn.execute(text(f"INSERT INTO {STATE_TABLE} (id, indexed_upto) VALUES (1, 0)"))


def set_hashsize(conn: Connection, size: int) -> None:
    """SQLite: `size` as the FTS5 index's hashsize, kept in its config table; nothing on PostgreSQL."""
    if conn.dialect.name == "sqlite":
        conn.execute(text(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('hashsize', :size)"), {"size": size})


def drop_index(conn: Connection) -> None:
    tables = [PG_TABLE] if conn.dialect.name == "postgresql" else [FTS_TABLE, STATE_TABLE, TEXT_TABLE]
    for table in tables:
        conn.execute(text(f"DROP TABLE {table}"))


def reindex_all(conn: Connection) -> int:
    """Index every stored version (the migration, and the 1M-story benchmark); returns how many."""
    dialect = conn.dialect.name
    done, last = 0, 0
    with cursor(conn) as cur:
        while True:
            batch = conn.execute(text("SELECT id, title, paragraphs, text_hash FROM versions WHERE id > :last "
                                      "ORDER BY id LIMIT :n"), {"last": last, "n": REINDEX_BATCH}).fetchall()
            if not batch:
                break
            cur.executemany(_INSERT[dialect], [_row(dialect, index_text(title, json.loads(paras)), h)
                                               for _, title, paras, h in batch])
            done += len(batch)
            last = batch[-1][0]
        catch_up(dialect, cur)
    return done


# -- reading ------------------------------------------------------------------------------


class SearchMixin:
    """The search methods of `Storage` (which provides _read, _write and dialect)."""

    _read: Callable[[], AbstractContextManager[Connection]]
    _write: Callable[[], AbstractContextManager[Connection]]
    dialect: str

    def catch_up_search(self) -> None:
        """Bring the SQLite FTS index up to the committed versions, if it is behind: the
        scan does it at the end of each pass; a search that comes first does it here."""
        if self.dialect != "sqlite":
            return
        with self._read() as conn, cursor(conn) as cur:
            if not behind(self.dialect, cur):
                return
        with self._write() as conn, cursor(conn) as cur:
            catch_up(self.dialect, cur)

    def search(self, query: Query, *, offset: int = 0, limit: int = 20) -> SearchResults:
        """One page of the stories matching `query` in any version: ranked by BM25 over the
        CANDIDATES newest matching versions (monitor.query.rank, the same on both stores),
        the newest first among equal scores."""
        if query.empty:
            return SearchResults()
        self.catch_up_search()
        with self._read() as conn, cursor(conn) as cur:
            rows = cur.execute(_WINDOW[self.dialect], (compiled(self.dialect, query), CANDIDATES)).fetchall()
            scores = rank(query, [stems.split() for _, _, stems in rows])
            best: dict[int, tuple[float, int]] = {}
            for (vid, sid, _), score in zip(rows, scores, strict=True):
                best[sid] = max(best.get(sid, (score, vid)), (score, vid))
            ranked = sorted(best, key=lambda sid: best[sid], reverse=True)
            page = ranked[offset:offset + limit]
            found = _stories(conn, page)
            matched = _versions(conn, [best[sid][1] for sid in page])
        hits = []
        for sid in page:
            story, current_hash = found[sid]
            version_hash, paragraphs = matched[best[sid][1]]
            hits.append(SearchHit(story, paragraphs, current=version_hash == current_hash))
        return SearchResults(tuple(hits), total=len(ranked), capped=len(rows) >= CANDIDATES)

    def newest_matching(self, query: Query, limit: int) -> list[Story]:
        """The `limit` stories whose newest matching version is newest (a topic's feed and page),
        reading only as many matching versions as that takes."""
        if query.empty or limit < 1:
            return []
        self.catch_up_search()
        want = limit * 2
        with self._read() as conn, cursor(conn) as cur:
            while True:
                rows = cur.execute(_NEWEST[self.dialect], (compiled(self.dialect, query), want)).fetchall()
                ids = list(dict.fromkeys(sid for (sid,) in rows))[:limit]
                if len(ids) >= limit or len(rows) < want:
                    break
                want *= 4
            found = _stories(conn, ids)
        return [found[sid][0] for sid in ids]

    def match_count(self, query: Query) -> int:
        """How many stories match in any version (every match counted: for `monitor status`)."""
        if query.empty:
            return 0
        self.catch_up_search()
        with self._read() as conn, cursor(conn) as cur:
            return int(cur.execute(_COUNT[self.dialect], (compiled(self.dialect, query),)).fetchone()[0])


def _stories(conn: Connection, ids: list[int]) -> dict[int, tuple[Story, str]]:
    query = story_query().add_columns(stories.c.id, stories.c.current_hash)
    rows = _chunks(ids, lambda part: conn.execute(query.where(stories.c.id.in_(part))))
    return {row[-2]: (story_from_row(row[:-2]), row[-1]) for row in rows}


def _versions(conn: Connection, ids: list[int]) -> dict[int, tuple[str, tuple[str, ...]]]:
    query = versions.select().with_only_columns(versions.c.id, versions.c.text_hash, versions.c.kind,
                                                versions.c.title, versions.c.paragraphs)
    out = {}
    for vid, text_hash, kind, title, paragraphs in _chunks(ids, lambda part: conn.execute(
            query.where(versions.c.id.in_(part)))):
        head = (title,) if kind == "article" and title else ()
        out[vid] = (text_hash, (*head, *json.loads(paragraphs)))
    return out


def _chunks(ids: list[int], run: Callable[[list[int]], Any], size: int = 500) -> Iterator[Any]:
    for start in range(0, len(ids), size):
        yield from run(ids[start:start + size])
