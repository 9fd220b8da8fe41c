"""Ingesting one file: the decide-and-write step of `Storage`, in one transaction.

Candidates for a revision come from the paragraph and band key indexes (plain indexed
rows, so the lookup costs the same in a store of a thousand or a million stories),
the pure `decide` says what each item is, and the file's new stories, versions and
keys are written together with the record that the file was read.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from monitor.decide import BulletinKey, Candidate, Decision, decide
from monitor.dropfolder import shown
from monitor.errors import StorageError
from monitor.hashset import size
from monitor.identity import Fingerprint, fingerprint, stored_date_keys
from monitor.models import FileInfo, FileOutcome, Item, Kind
from monitor.rows import TextRow, text_row
from monitor.storage.search import index_rows, index_versions
from monitor.storage.sql import SQL, cursor

log = logging.getLogger(__name__)

# How many stories one item is verified against at most: the ones whose shared index
# keys weigh the most, a key weighing 1 / (the stories holding it). A true revision
# shares its own keys (a paragraph kept, band keys of its own wording); a formula's
# boilerplate paragraph is held by hundreds of stories and weighs next to nothing, so
# articles sharing only boilerplate never crowd out a brief's own full article.
MAX_CANDIDATES = 50
# Index rows fetched per key in the one candidate query per file (SQL.file_hits). A key
# that reaches KEY_ROWS + 1 is "crowded" (boilerplate, or a recurring formula's wording)
# and weighs nothing: what tells a revision from its siblings is in its other keys, and
# the event-date key is never crowded (a press office's stories of one day).
KEY_ROWS = 4 * MAX_CANDIDATES
# Versions are two microseconds apart at least: the one between is a correction entry's
# (monitor.feed.CORRECTION_OFFSET), so no two entries of any feed share an `updated`.
VERSION_TICKS = dt.timedelta(microseconds=2)
# A file's transaction that lost a race anyway (a unique row written by a writer not
# holding the lock, a serialization failure, a deadlock) is decided again from scratch:
# the texts the winner stored are then known, so the loser's items become repeats.
INGEST_ATTEMPTS = 5
# Fingerprints of stored texts kept in memory, by text hash (a text never changes), up to
# this many shingles in all: a store of very long articles keeps fewer. Measured over
# `bench/run.py`'s RSS folder, a fingerprint cost about 190 bytes a shingle (its sets,
# words, item and slots) while its sets were frozensets; packed (monitor/hashset.py) it
# costs about 100 (tracemalloc over 1,772 bench/gen.py texts, items and slots included), so
# this takes about 5 MB, which leaves room for SQLite's page cache
# (monitor.storage.ledger.CACHE_KIB) and the helper process that prepares files ahead
# (monitor/prepare.py) within the 150 MB budget. The candidates are mostly recent
# stories: on 10,000 bench/gen.py bulletins 4,883 of 195,867 lookups miss (6,473 at 30,000).
FINGERPRINT_CACHE = 50_000
# Versions whose facts (VersionFacts) a Storage keeps: about 360 bytes each (tracemalloc,
# with a path string of their own), so about 3.6 MB. On 10,000 bench/gen.py bulletins 565
# of 195,867 candidates' versions were not kept.
VERSION_FACTS = 10_000
RETRY_SQLSTATES = {"23505", "40001", "40P01"}  # unique_violation, serialization_failure, deadlock_detected
# At most this many new stories per INSERT (four parameters each, far below SQLite's 32,766).
NEW_STORIES_PER_INSERT = 500


class IngestMixin:
    """The ingest methods of `Storage` (which provides _write, _short, _error, _sql and _faults)."""

    _write: Callable[..., Any]
    _short: Callable[[BaseException], str]
    _error: Callable[[BaseException], StorageError]
    _sql: SQL
    _faults: tuple[type[Exception], ...]
    dialect: str
    _group: Any
    _known: tuple[tuple[str, ...], dict[str, int]] | None
    _tops: Tops | None
    _facts: VersionFacts

    def ingest(self, info: FileInfo, sha256: str, entries: Sequence[tuple[Item, Fingerprint]],
               now: dt.datetime, rows: Mapping[str, TextRow] | None = None) -> FileOutcome | None:
        """Decide and write one file's items, and record the file, in one transaction (the
        group's, inside grouped(), which then retries the whole group on a conflict).
        `rows`: what the store writes for a text, made already (by the helper), by text
        hash; the rest are made here.

        Returns None when this file version, with these bytes, was recorded meanwhile
        (by another instance): the record is the claim, checked under the write lock. A
        record of the same size and mtime without a content hash (a file rejected before
        it could be read, such as for its permissions) is no claim: it is replaced.

        Several instances give the ids one instance gives because every scan walks the
        folder in bulletin-key order and moves past a file only once this returns, i.e.
        once the file is decided under the write lock (held until its group commits) or
        was committed by another instance: commits happen in key order however many
        instances run. A scan that skipped files another instance is
        still busy with would let a revision commit before its original and give the
        story an id derived from the revision's text.
        """
        for attempt in range(1, INGEST_ATTEMPTS + 1):
            try:
                return self._ingest_once(info, sha256, entries, now, rows or {})
            except self._faults as exc:
                if self._group is not None and _retryable(exc):
                    raise  # the group's transaction is lost: grouped() runs it again
                if not _retryable(exc):
                    raise self._error(exc) from None
                log.info("%s: lost a race (%s), deciding again (attempt %s)",
                         shown(info.path), self._short(exc), attempt)
        raise StorageError(f"{shown(info.path)}: still conflicting after {INGEST_ATTEMPTS} attempts")

    def _ingest_once(self, info: FileInfo, sha256: str, entries: Sequence[tuple[Item, Fingerprint]],
                     now: dt.datetime, rows: Mapping[str, TextRow]) -> FileOutcome | None:
        key: BulletinKey = (info.mtime_ns, info.path)
        sql = self._sql
        with self._write(retry=True) as conn, cursor(conn) as cur:
            done = cur.execute(sql.file_done, (info.path,)).fetchone()
            if done is not None and tuple(done) == (info.size, info.mtime_ns, sha256):
                return None
            known = self._stored(cur, tuple(fp.text_hash for _, fp in entries))
            fresh = [fp for _, fp in entries if fp.text_hash not in known]
            shortlist = self._candidate_ids(cur, fresh)
            candidates = self._candidates(cur, set().union(*shortlist.values()))
            decisions = decide(entries, known, candidates, key, shortlist)
            outcome = self._apply(cur, entries, decisions, key, now, rows)
            upsert_file(sql, cur, info, sha256, len(entries), None, now)
        return outcome

    def _stored(self, cur: Any, hashes: tuple[str, ...]) -> dict[str, int]:
        """The story of each of these texts the store has: known_content()'s answer when it
        was asked for them last in this group (under the same lock), else read now. Taken
        once: after this file's writes it would be stale."""
        asked, self._known = self._known, None
        if asked is not None and asked[0] == hashes:
            return asked[1]
        sql = self._sql
        return dict(cur.execute(sql.known, (sql.array(hashes),)).fetchall()) if hashes else {}

    def _candidates(self, cur: Any, ids: set[int]) -> list[Candidate]:
        """The stories `ids` as candidates, by their current versions: each story's current
        text hash, then what the caches lack of those texts (VersionFacts, RECENT) read and,
        for the fingerprint, computed."""
        if not ids:
            return []
        sql, facts = self._sql, self._facts
        rows = [(sid, h, facts.get(h)) for sid, h in cur.execute(sql.current_hashes, (sql.array(sorted(ids)),))]
        lacking = [h for _, h, fact in rows if fact is None]
        if lacking:  # rare: the rest are looked up once
            for h, kind, published, mtime_ns, path in cur.execute(sql.version_facts, (sql.array(lacking),)):
                day = dt.date.fromisoformat(published) if isinstance(published, str) else published
                facts.learn(h, (kind, day, mtime_ns, path))
            rows = [(sid, h, facts.get(h) if fact is None else fact) for sid, h, fact in rows]
        # None where the cache lacks the text (or holds it without its item).
        fps = [fp if (fp := RECENT.get(h)) is not None and fp.item is not None else None for _, h, _ in rows]
        missing = [h for (_, h, _), fp in zip(rows, fps, strict=True) if fp is None]
        texts = dict(((h, (json.loads(paragraphs), title)) for h, title, paragraphs
                      in cur.execute(sql.version_texts, (sql.array(missing),)).fetchall()) if missing else ())
        found = []
        for (sid, text_hash, fact), fp in zip(rows, fps, strict=True):
            assert fact is not None
            kind, day, mtime_ns, path = fact
            if fp is None:  # the text is parsed only when its fingerprint is not kept
                paragraphs, title = texts[text_hash]
                fp = RECENT.add(fingerprint(Item(kind=kind, paragraphs=tuple(paragraphs), title=title,
                                                 published=day), keys=False))
            assert fp.item is not None
            found.append(Candidate(sid, fp, len(fp.item.paragraphs), (mtime_ns, path), kind, day))
        return found

    def _candidate_ids(self, cur: Any, fps: Sequence[Fingerprint]) -> dict[str, set[int]]:
        """For each item (by text hash), the MAX_CANDIDATES stories whose shared index keys
        weigh the most (ties to the lower id), from one query for the whole file."""
        sql = self._sql
        wanted = [_item_keys(fp) for fp in fps]
        pkeys = sorted({k for keys in wanted for src, k in keys if src == 0})
        bkeys = sorted({k for keys in wanted for src, k in keys if src == 1})
        if not pkeys and not bkeys:
            return {}
        limits = (KEY_ROWS, KEY_ROWS + 1, KEY_ROWS + 1)
        hits = {}  # (src, key): (its stories, the weight each gets from it)
        for src, key, held in cur.execute(sql.file_hits, (*limits, sql.array(pkeys), *limits,
                                                            sql.array(bkeys))).fetchall():
            holders = sql.ids(held)
            hits[src, key] = (holders, 1.0 / len(holders))
        ids: dict[str, set[int]] = {}
        for fp, keys in zip(fps, wanted, strict=True):
            weight: dict[int, float] = {}
            for k in keys:
                found = hits.get(k)
                if found is None:  # held by no story, or crowded
                    continue
                holders, share = found
                for sid in holders:
                    weight[sid] = weight.get(sid, 0.0) + share
            # Most items have fewer candidates than the bound: no ranking needed.
            ids[fp.text_hash] = (set(weight) if len(weight) <= MAX_CANDIDATES else
                                 set(sorted(weight, key=lambda sid: (-weight[sid], sid))[:MAX_CANDIDATES]))
        return ids

    def _apply(self, cur: Any, entries: Sequence[tuple[Item, Fingerprint]],
               decisions: Sequence[Decision], key: BulletinKey, now: dt.datetime,
               made: Mapping[str, TextRow]) -> FileOutcome:
        # The file's new stories, versions and index keys are written with a few statements
        # each: the new stories first, in file order (so their ids follow the file), then
        # the versions and keys that refer to them.
        sql = self._sql
        # In a group, what the last file wrote is what the next would read back: under the
        # write lock, nothing else writes versions or stories meanwhile. (None outside a
        # group, and for its first file: grouped() clears it.)
        tops = self._tops
        stamps = _Ticks(cur, sql, now, tops)
        written = [(item, fp, decision, made.get(fp.text_hash) or text_row(item, fp.text_hash),
                    *stamps.next(decision.action))
                   for (item, fp), decision in zip(entries, decisions, strict=True) if decision.action != "repeat"]
        born = [(decision.story, (row.uid, stamp, stamp, fp.text_hash))
                for _, fp, decision, row, stamp, _ in written if decision.action == "new"]
        first_story = first_version = None
        if sql.given_ids:  # the next free ids, stable under the write lock (monitor.storage.sql)
            top_story, top_version = (tops.story, tops.version) if tops else cur.execute(sql.next_ids).fetchone()
            first_story, first_version = (top_story or 0) + 1, (top_version or 0) + 1
        real = dict(zip([story for story, _ in born], _new_stories(sql, cur, [row for _, row in born], first_story),
                        strict=True))
        revised: set[int] = set()
        versions: list[tuple[Any, ...]] = []
        searched: list[tuple[int, int, str]] = []
        pkeys: list[tuple[int, int]] = []
        bkeys: list[tuple[int, int]] = []
        for at, (item, fp, decision, row, stamp, seq) in enumerate(written):
            sid = real.get(decision.story, decision.story)
            given = () if first_version is None else (first_version + at,)
            versions.append((*given, sid, fp.text_hash, item.kind, item.title, item.headline or item.title or "",
                             row.paragraphs, sql.day(decision.published),
                             key[0], key[1], stamp, seq, decision.action == "revise"))
            if first_version is not None:
                searched.append((first_version + at, sid, row.stems))
            pkeys += [(k, sid) for k in fp.paragraph_keys]
            bkeys += [(k, sid) for k in fp.band_keys + stored_date_keys(fp)]
            RECENT.add(fp)
            self._facts.learn(fp.text_hash, (item.kind, decision.published, key[0], key[1]))
            if decision.action == "revise":
                cur.execute(sql.make_current, (fp.text_hash, stamp, sid))
                if decision.story not in real:
                    revised.add(sid)
        for statement, rows in ((sql.new_version, versions), (sql.add_paragraph_key, pkeys),
                                (sql.add_band_key, bkeys)):
            if rows:
                cur.executemany(statement, rows)
        # In this transaction: a search never sees half a file (monitor/storage/search.py).
        if first_version is not None:
            index_rows(cur, searched)
        else:
            index_versions(self.dialect, cur, [(row.stems, fp.text_hash) for _, fp, _, row, _, _ in written])
        if self._group is not None:
            self._tops = Tops(stamps.last, stamps.last_seq,
                              None if first_story is None else first_story - 1 + len(real),
                              None if first_version is None else first_version - 1 + len(written))
        unchanged = len(entries) - len(written) + sum(decision.action == "older" for _, _, decision, *_ in written)
        return FileOutcome(new=len(real), revised=len(revised), unchanged=unchanged)


def _new_stories(sql: SQL, cur: Any, rows: Sequence[tuple[Any, ...]], first_id: int | None) -> list[int]:
    """Insert stories (uid, first_seen, updated, current_hash) in this order; their ids, in
    the same order. Where the pass gives the ids (`first_id`, the next free one), one
    executemany. Else one INSERT ... RETURNING per NEW_STORIES_PER_INSERT rows instead of
    one per story; RETURNING gives no order, so the ids are matched by uid."""
    if first_id is not None:
        given = range(first_id, first_id + len(rows))
        if rows:
            cur.executemany(sql.new_story, [(sid, *row) for sid, row in zip(given, rows, strict=True)])
        return list(given)
    ids: dict[str, int] = {}
    for at in range(0, len(rows), NEW_STORIES_PER_INSERT):
        chunk = rows[at : at + NEW_STORIES_PER_INSERT]
        params = [value for row in chunk for value in row]
        ids.update((uid, sid) for sid, uid in cur.execute(sql.new_stories(len(chunk)), params).fetchall())
    return [ids[row[0]] for row in rows]


class _Ticks:
    """Times and timeline positions for the versions one file writes.

    Each time is two microseconds after the one before at least, so that every version,
    and so every feed entry's `updated`, is distinct, and later than every version written
    before (under the write lock, across instances), even if the clock stepped back. They
    run in file order, as decisions do: a story that a file carries twice, the second time
    revised, gets its revision after its creation. Timeline positions (`seq`) follow the
    times, for the versions that become current (not an "older" one)."""

    def __init__(self, cur: Any, sql: SQL, now: dt.datetime, tops: Tops | None) -> None:
        self._sql = sql
        if tops is None:
            stored, seq = cur.execute(sql.last_stamp).fetchone()
            self.last, self.last_seq = (None if stored is None else sql.read_stamp(stored)), seq or 0
        else:
            self.last, self.last_seq = tops.stamp, tops.seq
        self._next = now if self.last is None else max(now, self.last + VERSION_TICKS)

    def next(self, action: str) -> tuple[Any, int | None]:
        stamp = self.last = self._next
        self._next += VERSION_TICKS
        if action == "older":
            return self._sql.stamp(stamp), None
        self.last_seq += 1
        return self._sql.stamp(stamp), self.last_seq


class Tops(NamedTuple):
    """What the store holds at the top after a file, as its next file would read it: the
    latest version's time (None: no version yet) and timeline position, and the highest
    story and version ids (None where the database gives the ids)."""

    stamp: dt.datetime | None
    seq: int
    story: int | None
    version: int | None


def upsert_file(sql: SQL, cur: Any, info: FileInfo, sha256: str | None, items: int, reason: str | None,
                now: dt.datetime) -> None:
    """Record a file version as read or rejected (with the reason)."""
    cur.execute(sql.upsert_file, (info.path, info.size, info.mtime_ns, sha256, "rejected" if reason else "read",
                                  reason, items, sql.stamp(now)))


class _Recent:
    """Fingerprints of stored texts, by text hash (a text never changes), the most recently
    used kept up to `limit` shingles in all: candidates are mostly recent stories, and a
    fingerprint (shingles, slots) costs more to compute than to look up. Only the text's own
    (no story id, no date): they hold in any store, after any rollback. Full, it drops the
    less recent half at once (one pass over the dict instead of one per fingerprint)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._fingerprints: dict[str, Fingerprint] = {}
        self._size = 0  # shingles held, one more per fingerprint

    def get(self, text_hash: str) -> Fingerprint | None:
        fp = self._fingerprints.pop(text_hash, None)
        if fp is not None:
            self._fingerprints[text_hash] = fp  # now the most recent
        return fp

    def add(self, fp: Fingerprint) -> Fingerprint:
        old = self._fingerprints.pop(fp.text_hash, None)
        if old is not None:
            self._size -= size(old.shingles) + 1
        self._fingerprints[fp.text_hash] = fp
        self._size += size(fp.shingles) + 1
        if self._size > self.limit:
            self._drop_older_half()
        return fp

    def __len__(self) -> int:
        return len(self._fingerprints)

    def _drop_older_half(self) -> None:
        older, held = [], self._size
        for text_hash, fp in self._fingerprints.items():  # least recently used first
            if held <= self.limit // 2:
                break
            older.append(text_hash)
            held -= size(fp.shingles) + 1
        for text_hash in older:
            del self._fingerprints[text_hash]
        self._size = held


RECENT = _Recent(FINGERPRINT_CACHE)

# (kind, published, key mtime_ns, key path) of a stored version.
Facts = tuple[Kind, dt.date | None, int, str]


class VersionFacts:
    """What a stored version says besides its text and story, by text hash, for one store:
    a version row is never changed, so a candidate whose current text is known here costs
    a read of its stories row, not a join into versions too (that join was 5 % of a pass
    over 10,000 bench/gen.py bulletins, in py-spy's samples). What a transaction learns (read or
    written) is kept only once it commits (settle()): after a rollback the same text may
    come back from another file, with that file's key. Kept up to `limit` texts, the
    oldest learned dropped first, half at a time: candidates are mostly recent stories."""

    def __init__(self, limit: int = VERSION_FACTS) -> None:
        self.limit = limit
        self._kept: dict[str, Facts] = {}
        # Per thread, as transactions are: another thread's commit (an unsubscribe from an
        # HTTP request, during a scan's group) settles nothing of the group's.
        self._local = threading.local()

    def _pending(self) -> dict[str, Facts]:
        try:
            pending: dict[str, Facts] = self._local.pending
        except AttributeError:
            pending = self._local.pending = {}
        return pending

    def get(self, text_hash: str) -> Facts | None:
        found = self._pending().get(text_hash)
        return self._kept.get(text_hash) if found is None else found

    def learn(self, text_hash: str, facts: Facts) -> None:
        self._pending()[text_hash] = facts

    def settle(self, committed: bool) -> None:
        """The transaction this thread learned what is pending in ended: committed, or rolled back."""
        pending = self._pending()
        if committed and pending:
            self._kept.update(pending)
            if len(self._kept) > self.limit:
                self._kept = dict(list(self._kept.items())[len(self._kept) - self.limit // 2:])
        pending.clear()

    def __len__(self) -> int:
        return len(self._kept)


def _item_keys(fp: Fingerprint) -> set[tuple[int, int]]:
    """An item's index keys as (0 for a paragraph key or 1 for a band key, key)."""
    return {(0, k) for k in fp.paragraph_keys} | {(1, k) for k in fp.band_keys + fp.date_keys}


def _retryable(exc: BaseException) -> bool:
    """A conflict that deciding the file again resolves (`exc` from SQLAlchemy or the driver)."""
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None)
    if state is not None:
        return state in RETRY_SQLSTATES
    return isinstance(orig, sqlite3.IntegrityError) and "UNIQUE constraint failed" in str(orig)
