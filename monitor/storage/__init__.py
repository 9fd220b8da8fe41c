"""The state store: the only package that imports SQLAlchemy.

One `Storage` class with methods shaped around the pipeline: what files were seen,
ingesting one file's items in one transaction, reading the newest stories for the
feed, and the bookkeeping of scans.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select, text, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from monitor.bulletin import brief_title
from monitor.decide import BulletinKey, Candidate, Decision, decide
from monitor.errors import StorageError
from monitor.identity import Fingerprint, fingerprint
from monitor.models import FileInfo, FileOutcome, Item, ScanReport, Story
from monitor.storage.schema import band_keys, files, metadata, paragraph_keys, scans, stories, versions

# Story ids are derived from the text that created the story, so the same bulletins
# give the same ids in any store, on any instance.
STORY_NAMESPACE = uuid.UUID("6f1c8f52-3a0e-4b8e-9d1e-5b2a7f0c9e41")
# How many stories one item is verified against at most: the ones sharing the most
# index keys with it. A true revision shares many keys; boilerplate shares few.
MAX_CANDIDATES = 50
# One lock id for the decide-and-write step across all instances on PostgreSQL.
INGEST_LOCK = 0x6D6F6E69  # "moni"
ONE_TICK = dt.timedelta(microseconds=1)

__all__ = ["Storage", "metadata"]


class Storage:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> Storage:
        """Connect, and bring the schema to the newest migration unless told not to."""
        if url.startswith("sqlite:///") and not url.endswith(":memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StorageError(f"cannot use database URL: {exc}") from None
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
            raise StorageError(f"database unreachable: {_short(exc)}") from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except OperationalError as exc:
            raise StorageError(f"database error: {_short(exc)}") from None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction that holds the store's write lock for its whole length."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(monitor_write=True)
                with conn.begin():
                    if self.dialect == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INGEST_LOCK})
                    yield conn
        except OperationalError as exc:
            raise StorageError(f"database error: {_short(exc)}") from None

    def _insert(self, table: Any) -> Any:
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    # -- files ---------------------------------------------------------------

    def file_states(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every file recorded, read or rejected, by path."""
        with self._read() as conn:
            rows = conn.execute(select(files.c.path, files.c.size, files.c.mtime_ns))
            return {path: (size, mtime) for path, size, mtime in rows}

    def content_items(self, sha256: str) -> int | None:
        """Items in an already ingested file with these exact bytes, if there is one."""
        with self._read() as conn:
            query = select(files.c.item_count).where(files.c.sha256 == sha256, files.c.status == "read").limit(1)
            return conn.execute(query).scalar()

    def record_file(self, info: FileInfo, sha256: str | None, *, items: int = 0,
                    reason: str | None = None, now: dt.datetime) -> None:
        """Record a file as read (its content already in the store) or rejected."""
        with self._write() as conn:
            self._upsert_file(conn, info, sha256, items, reason, now)

    def _upsert_file(self, conn: Connection, info: FileInfo, sha256: str | None, items: int,
                     reason: str | None, now: dt.datetime) -> None:
        row = {"path": info.path, "size": info.size, "mtime_ns": info.mtime_ns, "sha256": sha256,
               "status": "rejected" if reason else "read", "reason": reason, "item_count": items, "seen_at": now}
        stmt = self._insert(files).values(row)
        conn.execute(stmt.on_conflict_do_update(index_elements=["path"], set_=row))

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
        """
        key: BulletinKey = (info.mtime_ns, info.path)
        with self._write() as conn:
            done = conn.execute(select(files.c.size, files.c.mtime_ns).where(files.c.path == info.path)).first()
            if done is not None and tuple(done) == (info.size, info.mtime_ns):
                return None
            hashes = [fp.text_hash for _, fp in entries]
            known = dict(conn.execute(
                select(versions.c.text_hash, versions.c.story_id).where(versions.c.text_hash.in_(hashes))
            ).tuples().all())
            fresh = [fp for _, fp in entries if fp.text_hash not in known]
            candidates = self._candidates(conn, fresh)
            decisions = decide(entries, known, candidates, key)
            outcome = self._apply(conn, entries, decisions, key, now)
            self._upsert_file(conn, info, sha256, len(entries), None, now)
        return outcome

    def _candidates(self, conn: Connection, fps: Sequence[Fingerprint]) -> list[Candidate]:
        ids: set[int] = set()
        for fp in fps:
            keys = list(fp.paragraph_keys) + list(fp.band_keys)
            if not keys:
                continue
            hits = union_all(
                select(paragraph_keys.c.story_id).where(paragraph_keys.c.key.in_(fp.paragraph_keys)),
                select(band_keys.c.story_id).where(band_keys.c.key.in_(fp.band_keys)),
            ).subquery()
            query = (select(hits.c.story_id).group_by(hits.c.story_id)
                     .order_by(func.count().desc(), hits.c.story_id).limit(MAX_CANDIDATES))
            ids.update(conn.execute(query).scalars())
        if not ids:
            return []
        query = (select(stories.c.id, versions.c.kind, versions.c.title, versions.c.paragraphs,
                        versions.c.key_mtime_ns, versions.c.key_path)
                 .join(versions, versions.c.text_hash == stories.c.current_hash)
                 .where(stories.c.id.in_(sorted(ids))))
        found = []
        for sid, kind, title, paragraphs, mtime_ns, path in conn.execute(query):
            item = Item(kind=kind, paragraphs=tuple(json.loads(paragraphs)), title=title)
            found.append(Candidate(sid, fingerprint(item), len(item.paragraphs), (mtime_ns, path)))
        return found

    def _apply(self, conn: Connection, entries: Sequence[tuple[Item, Fingerprint]],
               decisions: Sequence[Decision], key: BulletinKey, now: dt.datetime) -> FileOutcome:
        real: dict[int, int] = {}
        new: set[int] = set()
        revised: set[int] = set()
        unchanged = 0
        for (item, fp), decision in zip(entries, decisions, strict=True):
            if decision.action == "repeat":
                unchanged += 1
                continue
            if decision.action == "new":
                sid = conn.execute(stories.insert().values(
                    uid=f"urn:uuid:{uuid.uuid5(STORY_NAMESPACE, fp.text_hash)}",
                    first_seen=now, updated=now, current_hash=fp.text_hash,
                ).returning(stories.c.id)).scalar_one()
                real[decision.story] = sid
                new.add(sid)
            else:
                sid = real.get(decision.story, decision.story)
            self._add_version(conn, sid, item, fp, key, now)
            if decision.action == "revise":
                self._make_current(conn, sid, fp.text_hash, now)
                if sid not in new:
                    revised.add(sid)
            elif decision.action == "older":
                unchanged += 1
        return FileOutcome(new=len(new), revised=len(revised), unchanged=unchanged)

    def _add_version(self, conn: Connection, sid: int, item: Item, fp: Fingerprint,
                     key: BulletinKey, now: dt.datetime) -> None:
        conn.execute(versions.insert().values(
            story_id=sid, text_hash=fp.text_hash, kind=item.kind, title=item.title,
            paragraphs=json.dumps(list(item.paragraphs), ensure_ascii=False),
            published=item.published, key_mtime_ns=key[0], key_path=key[1], seen_at=now,
        ))
        for table, keys in ((paragraph_keys, fp.paragraph_keys), (band_keys, fp.band_keys)):
            if keys:
                rows = [{"key": k, "story_id": sid} for k in keys]
                conn.execute(self._insert(table).on_conflict_do_nothing(), rows)

    def _make_current(self, conn: Connection, sid: int, text_hash: str, now: dt.datetime) -> None:
        previous = conn.execute(select(stories.c.updated).where(stories.c.id == sid)).scalar_one()
        # `updated` moves forward on every revision, even if the clock stepped back.
        updated = max(now, previous + ONE_TICK)
        conn.execute(stories.update().where(stories.c.id == sid).values(current_hash=text_hash, updated=updated))

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


def _story_query() -> Any:
    return (select(stories.c.uid, versions.c.kind, versions.c.title, versions.c.paragraphs,
                   versions.c.published, stories.c.first_seen, stories.c.updated)
            .join(versions, versions.c.text_hash == stories.c.current_hash))


def _story(row: Any) -> Story:
    uid, kind, title, paragraphs, published, first_seen, updated = row
    paras = tuple(json.loads(paragraphs))
    return Story(uid=uid, kind=kind, title=title or brief_title(paras[0]), paragraphs=paras,
                 published=published, first_seen=first_seen, updated=updated)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN, so writers can take the lock up front.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A writer takes the write lock at BEGIN: two writers then queue on busy_timeout
        # instead of failing when a read lock cannot be upgraded.
        immediate = conn.get_execution_options().get("monitor_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _short(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0][:300]
