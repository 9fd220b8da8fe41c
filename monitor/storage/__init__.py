"""The state store: the only package that imports SQLAlchemy.

One `Storage` class with methods shaped around the pipeline: what files were seen,
ingesting one file's items in one transaction, reading the newest stories for the
feed, and the bookkeeping of scans.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    literal,
    make_url,
    select,
    text,
    union_all,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

from monitor.bulletin import brief_title
from monitor.decide import BulletinKey, Candidate, Decision, decide
from monitor.errors import StorageError
from monitor.identity import Fingerprint, fingerprint
from monitor.models import FileInfo, FileOutcome, Item, ScanReport, Story
from monitor.storage.outbox import OutboxMixin
from monitor.storage.schema import band_keys, files, metadata, paragraph_keys, scans, stories, versions

# Story ids are derived from the text that created the story, so the same bulletins
# give the same ids in any store, on any instance.
STORY_NAMESPACE = uuid.UUID("6f1c8f52-3a0e-4b8e-9d1e-5b2a7f0c9e41")
# How many stories one item is verified against at most: the ones sharing the most
# index keys with it. A true revision shares many keys; boilerplate shares few.
MAX_CANDIDATES = 50
# Index rows fetched per key in the one candidate query per file (see _KEY_HITS).
KEY_ROWS = 4 * MAX_CANDIDATES
# One lock id for the decide-and-write step across all instances on PostgreSQL.
INGEST_LOCK = 0x6D6F6E69  # "moni"
ONE_TICK = dt.timedelta(microseconds=1)
# A file's transaction that lost a race anyway (a unique row written by a writer not
# holding the lock, a serialization failure, a deadlock) is decided again from scratch:
# the texts the winner stored are then known, so the loser's items become repeats.
INGEST_ATTEMPTS = 5
RETRY_SQLSTATES = {"23505", "40001", "40P01"}  # unique_violation, serialization_failure, deadlock_detected
WAL_CHECKPOINT_PAGES = 10_000  # SQLite's default is 1,000
CONNECT_TIMEOUT = 10  # seconds; a wrong host should fail a scan quickly, not hang it

log = logging.getLogger(__name__)

__all__ = ["Storage", "metadata"]

# The statements run once or more per file are built once: building a SQLAlchemy
# construct costs more than running it, and a prebuilt one hits the compiled cache.
_FILE_DONE = select(files.c.size, files.c.mtime_ns).where(files.c.path == bindparam("b_path"))
_CONTENT = (select(files.c.item_count)
            .where(files.c.sha256 == bindparam("b_sha"), files.c.status == "read").limit(1))
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
_FILE_COLUMNS = ("path", "size", "mtime_ns", "sha256", "status", "reason", "item_count", "seen_at")


class Storage(OutboxMixin):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        dialect = _dialect(self.dialect)
        upsert = dialect.insert(files)
        self._upsert_file_stmt = upsert.on_conflict_do_update(
            index_elements=["path"], set_={c: upsert.excluded[c] for c in _FILE_COLUMNS})
        self._add_keys = {t.name: dialect.insert(t).on_conflict_do_nothing() for t in (paragraph_keys, band_keys)}

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> Storage:
        """Connect, and bring the schema to the newest migration unless told not to."""
        if url.startswith("sqlite:///") and not url.endswith(":memory:"):
            folder = Path(url.removeprefix("sqlite:///")).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create the database folder {folder}: {exc.strerror or exc}") from None
        try:
            parsed = make_url(url)
            # A server connection can drop between uses; a SQLite file cannot, so a scan
            # does not pay a ping for each of its transactions there.
            options: dict[str, Any] = {"pool_pre_ping": parsed.get_backend_name() != "sqlite"}
            if parsed.get_backend_name() == "postgresql":
                # The claim check in ingest() must see what the lock holder committed:
                # READ COMMITTED takes a new snapshot per statement, whatever the server default.
                options["isolation_level"] = "READ COMMITTED"
                if "connect_timeout" not in parsed.query:
                    options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
            engine = create_engine(parsed, **options)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StorageError(f"cannot use database URL: {_mask(str(exc), _password(url))}") from None
        if engine.dialect.name == "sqlite":
            _tune_sqlite(engine)
        storage = cls(engine)
        if upgrade:
            storage.upgrade()
        return storage

    def close(self) -> None:
        self.engine.dispose()

    def upgrade(self) -> None:
        from monitor.storage.migrate import upgrade

        try:
            upgrade(self.engine)
        except OperationalError as exc:
            raise StorageError(f"database unreachable: {self._short(exc)}") from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except OperationalError as exc:
            raise StorageError(f"database error: {self._short(exc)}") from None

    @contextmanager
    def _write(self, *, retry: bool = False) -> Iterator[Connection]:
        """A transaction that holds the store's write lock for its whole length."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(monitor_write=True)
                with conn.begin():
                    if self.dialect == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INGEST_LOCK})
                    yield conn
        except OperationalError as exc:
            if retry and _retryable(exc):
                raise  # the caller decides again
            raise StorageError(f"database error: {self._short(exc)}") from None

    def _short(self, exc: BaseException) -> str:
        return _mask(_short(exc), self.engine.url.password)

    def _insert(self, table: Any) -> Any:
        return _dialect(self.dialect).insert(table)

    # -- files ---------------------------------------------------------------

    def file_states(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every file recorded, read or rejected, by path."""
        with self._read() as conn:
            rows = conn.execute(select(files.c.path, files.c.size, files.c.mtime_ns))
            return {path: (size, mtime) for path, size, mtime in rows}

    def known_texts(self, text_hashes: Sequence[str]) -> set[str]:
        """Which of these text hashes the store already has (a text, once stored, stays)."""
        if not text_hashes:
            return set()
        with self._read() as conn:
            return set(conn.execute(_KNOWN, {"b_hashes": list(text_hashes)}).scalars())

    def known_content(self, sha256: str, text_hashes: Sequence[str]) -> tuple[int | None, set[str]]:
        """content_items() and known_texts() in one read transaction (a scan asks both per file)."""
        with self._read() as conn:
            copies = conn.execute(_CONTENT, {"b_sha": sha256}).scalar()
            if copies is not None or not text_hashes:
                return copies, set()
            return None, set(conn.execute(_KNOWN, {"b_hashes": list(text_hashes)}).scalars())

    def content_items(self, sha256: str) -> int | None:
        """Items in an already ingested file with these exact bytes, if there is one."""
        with self._read() as conn:
            return conn.execute(_CONTENT, {"b_sha": sha256}).scalar()

    def record_file(self, info: FileInfo, sha256: str | None, *, items: int = 0,
                    reason: str | None = None, now: dt.datetime) -> None:
        """Record a file as read (its content already in the store) or rejected."""
        with self._write() as conn:
            self._upsert_file(conn, info, sha256, items, reason, now)

    def _upsert_file(self, conn: Connection, info: FileInfo, sha256: str | None, items: int,
                     reason: str | None, now: dt.datetime) -> None:
        row = {"path": info.path, "size": info.size, "mtime_ns": info.mtime_ns, "sha256": sha256,
               "status": "rejected" if reason else "read", "reason": reason, "item_count": items, "seen_at": now}
        conn.execute(self._upsert_file_stmt, row)

    def rejected_files(self) -> list[tuple[str, str]]:
        with self._read() as conn:
            query = select(files.c.path, files.c.reason).where(files.c.status == "rejected").order_by(files.c.path)
            return [(p, r) for p, r in conn.execute(query)]

    # -- ingest --------------------------------------------------------------

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

    # -- reading -------------------------------------------------------------

    def latest_stories(self, limit: int) -> list[Story]:
        """The `limit` most recently updated stories, newest first."""
        query = _story_query().order_by(stories.c.updated.desc(), stories.c.id.desc()).limit(limit)
        with self._read() as conn:
            return [_story(row) for row in conn.execute(query)]

    def story(self, uid: str) -> Story | None:
        with self._read() as conn:
            row = conn.execute(_story_query().where(stories.c.uid == uid)).first()
            return _story(row) if row else None

    def story_count(self) -> int:
        with self._read() as conn:
            return conn.execute(select(func.count()).select_from(stories)).scalar_one()

    def last_change(self) -> dt.datetime | None:
        """When a story last became new or revised (the newest `updated`); None when empty."""
        with self._read() as conn:
            return conn.execute(select(func.max(stories.c.updated))).scalar()

    # -- scans ---------------------------------------------------------------

    def record_scan(self, report: ScanReport, started: dt.datetime, finished: dt.datetime) -> None:
        with self._write() as conn:
            conn.execute(scans.insert().values(
                started=started, finished=finished, files_read=report.files_read, new=report.new,
                revised=report.revised, unchanged=report.unchanged, skipped=report.skipped,
                rejected=report.rejected,
            ))

    def last_scan(self) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(scans).order_by(scans.c.finished.desc(), scans.c.id.desc()).limit(1)).first()
            return dict(row._mapping) if row else None

    def ping(self) -> None:
        """Raise StorageError when the store cannot be reached."""
        with self._read() as conn:
            conn.execute(select(1))


def _item_keys(fp: Fingerprint) -> set[tuple[int, int]]:
    """An item's index keys as (0 for a paragraph key or 1 for a band key, key)."""
    return {(0, k) for k in fp.paragraph_keys} | {(1, k) for k in fp.band_keys}


def _version_row(sid: int, item: Item, fp: Fingerprint, key: BulletinKey, now: dt.datetime) -> dict[str, Any]:
    return {"story_id": sid, "text_hash": fp.text_hash, "kind": item.kind, "title": item.title,
            "paragraphs": json.dumps(list(item.paragraphs), ensure_ascii=False),
            "published": item.published, "key_mtime_ns": key[0], "key_path": key[1], "seen_at": now}


def _story_query() -> Any:
    return (select(stories.c.uid, versions.c.kind, versions.c.title, versions.c.paragraphs,
                   versions.c.published, stories.c.first_seen, stories.c.updated)
            .join(versions, versions.c.text_hash == stories.c.current_hash))


def _story(row: Any) -> Story:
    uid, kind, title, paragraphs, published, first_seen, updated = row
    paras = tuple(json.loads(paragraphs))
    return Story(uid=uid, kind=kind, title=title or brief_title(paras[0]), paragraphs=paras,
                 published=published, first_seen=first_seen, updated=updated)


def _dialect(name: str) -> Any:
    """The dialect module for INSERT ... ON CONFLICT, imported only when that database is
    used: the PostgreSQL dialect costs a SQLite-backed `monitor scan` a tenth of its start-up."""
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql
    from sqlalchemy.dialects import sqlite

    return sqlite


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN, so writers can take the lock up front.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        # Each file's commit touches index pages all over the band and paragraph key
        # indexes; checkpointing the WAL every ~40 MB instead of every ~4 MB writes a page
        # that many commits changed back to the database once, not once per checkpoint.
        cur.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A writer takes the write lock at BEGIN: two writers then queue on busy_timeout
        # instead of failing when a read lock cannot be upgraded.
        immediate = conn.get_execution_options().get("monitor_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _short(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", exc)).splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _retryable(exc: DBAPIError) -> bool:
    """A conflict that deciding the file again resolves."""
    state = getattr(exc.orig, "sqlstate", None)
    if state is not None:
        return state in RETRY_SQLSTATES
    return isinstance(exc, IntegrityError) and "UNIQUE constraint failed" in str(exc.orig)


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except (SQLAlchemyError, ValueError):
        return None


def _mask(message: str, password: str | None) -> str:
    """Never show a password, whether the message quotes the URL or the password alone."""
    message = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", message)
    return message.replace(password, "***") if password else message
