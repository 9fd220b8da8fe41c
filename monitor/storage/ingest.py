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
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, literal, select, union_all
from sqlalchemy.exc import DBAPIError, IntegrityError

from monitor.decide import BulletinKey, Candidate, Decision, decide
from monitor.errors import StorageError
from monitor.identity import Fingerprint, fingerprint
from monitor.models import FileInfo, FileOutcome, Item
from monitor.storage.schema import band_keys, files, paragraph_keys, stories, versions

log = logging.getLogger(__name__)

# Story ids are derived from the text that created the story, so the same bulletins
# give the same ids in any store, on any instance.
STORY_NAMESPACE = uuid.UUID("6f1c8f52-3a0e-4b8e-9d1e-5b2a7f0c9e41")
# How many stories one item is verified against at most: the ones sharing the most
# index keys with it. A true revision shares many keys; boilerplate shares few.
MAX_CANDIDATES = 50
# Index rows fetched per key in the one candidate query per file (see _KEY_HITS).
KEY_ROWS = 4 * MAX_CANDIDATES
ONE_TICK = dt.timedelta(microseconds=1)
# A file's transaction that lost a race anyway (a unique row written by a writer not
# holding the lock, a serialization failure, a deadlock) is decided again from scratch:
# the texts the winner stored are then known, so the loser's items become repeats.
INGEST_ATTEMPTS = 5
RETRY_SQLSTATES = {"23505", "40001", "40P01"}  # unique_violation, serialization_failure, deadlock_detected

# Built once: building a SQLAlchemy construct costs more than running it.
_FILE_DONE = select(files.c.size, files.c.mtime_ns).where(files.c.path == bindparam("b_path"))
_KNOWN = (select(versions.c.text_hash, versions.c.story_id)
          .where(versions.c.text_hash.in_(bindparam("b_hashes", expanding=True))))
# Index hits for a whole file: (key, story_id) rows, at most KEY_ROWS + 1 per key, so a
# boilerplate key shared by thousands of stories costs a bounded number of rows. A key
# that reaches KEY_ROWS + 1 is "crowded": the items holding one are ranked by the
# grouped query below instead, which sees every row.
_KEY_HITS = union_all(*(
    select(literal(src).label("src"), t.c.key, t.c.story_id,
           func.row_number().over(partition_by=t.c.key, order_by=t.c.story_id).label("rn"))
    .where(t.c.key.in_(bindparam(name, expanding=True)))
    for src, t, name in ((0, paragraph_keys, "b_pkeys"), (1, band_keys, "b_bkeys"))
)).subquery()
_FILE_HITS = select(_KEY_HITS.c.src, _KEY_HITS.c.key, _KEY_HITS.c.story_id).where(_KEY_HITS.c.rn <= KEY_ROWS + 1)
_HITS = union_all(
    select(paragraph_keys.c.story_id).where(paragraph_keys.c.key.in_(bindparam("b_pkeys", expanding=True))),
    select(band_keys.c.story_id).where(band_keys.c.key.in_(bindparam("b_bkeys", expanding=True))),
).subquery()
_TOP_CANDIDATES = (select(_HITS.c.story_id).group_by(_HITS.c.story_id)
                   .order_by(func.count().desc(), _HITS.c.story_id).limit(MAX_CANDIDATES))
_CANDIDATE_TEXTS = (select(stories.c.id, versions.c.kind, versions.c.title, versions.c.paragraphs,
                           versions.c.key_mtime_ns, versions.c.key_path)
                    .join(versions, versions.c.text_hash == stories.c.current_hash)
                    .where(stories.c.id.in_(bindparam("b_ids", expanding=True))))
# One multi-row INSERT ... RETURNING for all of a file's new stories (SQLite 3.35+,
# PostgreSQL): the rows get their ids in the order given, like one insert at a time.
# RETURNING's own order is not defined, hence the uid with each id.
_NEW_STORIES = stories.insert().returning(stories.c.uid, stories.c.id)
_NEW_VERSIONS = versions.insert()
_UPDATED = select(stories.c.updated).where(stories.c.id == bindparam("b_sid"))
_MAKE_CURRENT = (stories.update().where(stories.c.id == bindparam("b_sid"))
                 .values(current_hash=bindparam("b_hash"), updated=bindparam("b_updated")))


class IngestMixin:
    """The ingest methods of `Storage` (which provides _write, _short, _upsert_file, _add_keys)."""

    _write: Callable[..., Any]
    _short: Callable[[BaseException], str]
    _upsert_file: Callable[..., None]
    _add_keys: dict[str, Any]

    def ingest(self, info: FileInfo, sha256: str, entries: Sequence[tuple[Item, Fingerprint]],
               now: dt.datetime) -> FileOutcome | None:
        """Decide and write one file's items, and record the file, in one transaction.

        Returns None when this file version was recorded meanwhile (by another
        instance): the record is the claim, checked under the write lock.

        Several instances give the ids one instance gives because every scan walks the
        folder in bulletin-key order and moves past a file only once this returns, i.e.
        once the file is committed, by it or by another instance: commits happen in key
        order however many instances run. A scan that skipped files another instance is
        still busy with would let a revision commit before its original and give the
        story an id derived from the revision's text.
        """
        for attempt in range(1, INGEST_ATTEMPTS + 1):
            try:
                return self._ingest_once(info, sha256, entries, now)
            except DBAPIError as exc:
                if not _retryable(exc):
                    raise StorageError(f"{info.path}: database error: {self._short(exc)}") from None
                log.info("%s: lost a race (%s), deciding again (attempt %s)", info.path, self._short(exc), attempt)
        raise StorageError(f"{info.path}: still conflicting after {INGEST_ATTEMPTS} attempts")

    def _ingest_once(self, info: FileInfo, sha256: str, entries: Sequence[tuple[Item, Fingerprint]],
                     now: dt.datetime) -> FileOutcome | None:
        key: BulletinKey = (info.mtime_ns, info.path)
        with self._write(retry=True) as conn:
            done = conn.execute(_FILE_DONE, {"b_path": info.path}).first()
            if done is not None and tuple(done) == (info.size, info.mtime_ns):
                return None
            hashes = [fp.text_hash for _, fp in entries]
            known = dict(conn.execute(_KNOWN, {"b_hashes": hashes}).all())
            fresh = [fp for _, fp in entries if fp.text_hash not in known]
            candidates = self._candidates(conn, fresh)
            decisions = decide(entries, known, candidates, key)
            outcome = self._apply(conn, entries, decisions, key, now)
            self._upsert_file(conn, info, sha256, len(entries), None, now)
        return outcome

    def _candidates(self, conn: Connection, fps: Sequence[Fingerprint]) -> list[Candidate]:
        ids = self._candidate_ids(conn, fps)
        if not ids:
            return []
        found = []
        for sid, kind, title, paragraphs, mtime_ns, path in conn.execute(_CANDIDATE_TEXTS, {"b_ids": sorted(ids)}):
            item = Item(kind=kind, paragraphs=tuple(json.loads(paragraphs)), title=title)
            found.append(Candidate(sid, fingerprint(item), len(item.paragraphs), (mtime_ns, path), kind))
        return found

    def _candidate_ids(self, conn: Connection, fps: Sequence[Fingerprint]) -> set[int]:
        """For each item, the MAX_CANDIDATES stories sharing the most index keys with it
        (ties to the lower id), from one query for the whole file."""
        wanted = [_item_keys(fp) for fp in fps]
        pkeys = sorted({k for keys in wanted for src, k in keys if src == 0})
        bkeys = sorted({k for keys in wanted for src, k in keys if src == 1})
        if not pkeys and not bkeys:
            return set()
        hits: dict[tuple[int, int], list[int]] = {}
        for src, key, sid in conn.execute(_FILE_HITS, {"b_pkeys": pkeys, "b_bkeys": bkeys}):
            hits.setdefault((src, key), []).append(sid)
        ids: set[int] = set()
        for fp, keys in zip(fps, wanted, strict=True):
            if any(len(hits.get(k, ())) > KEY_ROWS for k in keys):
                # A crowded key: its rows were cut, so the counts here would be short.
                params = {"b_pkeys": list(fp.paragraph_keys), "b_bkeys": list(fp.band_keys)}
                ids.update(conn.execute(_TOP_CANDIDATES, params).scalars())
                continue
            shared: dict[int, int] = {}
            for k in keys:
                for sid in hits.get(k, ()):
                    shared[sid] = shared.get(sid, 0) + 1
            ids.update(sorted(shared, key=lambda sid: (-shared[sid], sid))[:MAX_CANDIDATES])
        return ids

    def _apply(self, conn: Connection, entries: Sequence[tuple[Item, Fingerprint]],
               decisions: Sequence[Decision], key: BulletinKey, now: dt.datetime) -> FileOutcome:
        # The file's new stories, its versions and its index keys are written with one
        # executemany each (statements, not rows, are what costs); the stories go in
        # file order, so they get the ids one insert at a time would give them.
        real = self._new_stories(conn, [(d.story, fp.text_hash) for (_, fp), d in zip(entries, decisions, strict=True)
                                        if d.action == "new"], now)
        new = set(real.values())
        revised: set[int] = set()
        unchanged = 0
        rows: list[dict[str, Any]] = []
        keys: dict[str, list[dict[str, int]]] = {paragraph_keys.name: [], band_keys.name: []}
        for (item, fp), decision in zip(entries, decisions, strict=True):
            if decision.action == "repeat":
                unchanged += 1
                continue
            sid = real.get(decision.story, decision.story)
            rows.append(_version_row(sid, item, fp, key, now))
            keys[paragraph_keys.name] += [{"key": k, "story_id": sid} for k in fp.paragraph_keys]
            keys[band_keys.name] += [{"key": k, "story_id": sid} for k in fp.band_keys]
            if decision.action == "revise":
                self._make_current(conn, sid, fp.text_hash, now)
                if sid not in new:
                    revised.add(sid)
            elif decision.action == "older":
                unchanged += 1
        if rows:
            conn.execute(_NEW_VERSIONS, rows)
        for name, key_rows in keys.items():
            if key_rows:
                conn.execute(self._add_keys[name], key_rows)
        return FileOutcome(new=len(new), revised=len(revised), unchanged=unchanged)

    def _new_stories(self, conn: Connection, created: Sequence[tuple[int, str]], now: dt.datetime) -> dict[int, int]:
        """Insert the stories created by (provisional id, text hash); map provisional to real ids."""
        if not created:
            return {}
        uids = {provisional: f"urn:uuid:{uuid.uuid5(STORY_NAMESPACE, text_hash)}" for provisional, text_hash in created}
        rows = [{"uid": uids[provisional], "first_seen": now, "updated": now, "current_hash": text_hash}
                for provisional, text_hash in created]
        ids = dict(conn.execute(_NEW_STORIES, rows).all())
        return {provisional: ids[uid] for provisional, uid in uids.items()}

    def _make_current(self, conn: Connection, sid: int, text_hash: str, now: dt.datetime) -> None:
        previous = conn.execute(_UPDATED, {"b_sid": sid}).scalar_one()
        # `updated` moves forward on every revision, even if the clock stepped back.
        updated = max(now, previous + ONE_TICK)
        conn.execute(_MAKE_CURRENT, {"b_sid": sid, "b_hash": text_hash, "b_updated": updated})


def _item_keys(fp: Fingerprint) -> set[tuple[int, int]]:
    """An item's index keys as (0 for a paragraph key or 1 for a band key, key)."""
    return {(0, k) for k in fp.paragraph_keys} | {(1, k) for k in fp.band_keys}


def _version_row(sid: int, item: Item, fp: Fingerprint, key: BulletinKey, now: dt.datetime) -> dict[str, Any]:
    return {"story_id": sid, "text_hash": fp.text_hash, "kind": item.kind, "title": item.title,
            "paragraphs": json.dumps(list(item.paragraphs), ensure_ascii=False),
            "published": item.published, "key_mtime_ns": key[0], "key_path": key[1], "seen_at": now}


def _retryable(exc: DBAPIError) -> bool:
    """A conflict that deciding the file again resolves."""
    state = getattr(exc.orig, "sqlstate", None)
    if state is not None:
        return state in RETRY_SQLSTATES
    return isinstance(exc, IntegrityError) and "UNIQUE constraint failed" in str(exc.orig)
