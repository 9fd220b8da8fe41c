"""`Storage`: the state store, through SQLAlchemy.

One class with methods shaped around the pipeline: what files were seen, ingesting
one file's items in one transaction (ingest.py), reading stories and their versions
for the feeds and pages (timeline.py), the digest outbox (outbox.py), and the
bookkeeping of scans.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    func,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from monitor.errors import StorageError
from monitor.models import FileInfo, ScanReport
from monitor.rows import STORY_NAMESPACE
from monitor.storage import sql as statements
from monitor.storage.checkpoint import FALLBACK_PAGES, Checkpointer
from monitor.storage.faults import first_line, mask, missing, sqlite_path, store_error
from monitor.storage.ingest import INGEST_ATTEMPTS, IngestMixin, Tops, VersionFacts, _retryable, upsert_file
from monitor.storage.keys import KeysMixin
from monitor.storage.ledger import configure_sqlite
from monitor.storage.outbox import OutboxMixin
from monitor.storage.schema import (
    files,
    metadata,
    scans,
    stories,
)
from monitor.storage.search import SearchMixin, catch_up
from monitor.storage.sql import SQL, cursor
from monitor.storage.timeline import TimelineMixin

T = TypeVar("T")
# One lock id for the decide-and-write step across all instances on PostgreSQL.
INGEST_LOCK = 0x6D6F6E69  # "moni"
CONNECT_TIMEOUT = 10  # seconds; a wrong host should fail a scan quickly, not hang it

log = logging.getLogger(__name__)

__all__ = ["STORY_NAMESPACE", "Storage", "metadata"]


class Storage(IngestMixin, KeysMixin, OutboxMixin, TimelineMixin, SearchMixin):
    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.dialect = engine.dialect.name
        # The per-file statements run on the driver's cursor (see monitor.storage.sql),
        # so its exceptions are caught alongside SQLAlchemy's.
        self._sql = SQL.for_dialect(self.dialect)
        dbapi = engine.dialect.loaded_dbapi
        # What store_error() translates: SQLAlchemy's errors, the driver's, and on SQLite the
        # SystemError CPython's sqlite3 can fail a COMMIT on a full disk with.
        self._faults: tuple[type[Exception], ...] = (
            (DBAPIError, dbapi.Error, SystemError) if self.dialect == "sqlite" else (DBAPIError, dbapi.Error))
        self.path = sqlite_path(url)
        self._identity = _identity(self.path)
        # The group transaction each thread has open (grouped()): see _group.
        self._local = threading.local()
        # The last known_content() answer in a group: (text hashes, story id by stored hash),
        # which ingest() of the same file takes instead of asking again under the same lock.
        self._known: tuple[tuple[str, ...], dict[str, int]] | None = None
        # What the group's last file left at the top of the store (ingest.Tops), for its next.
        self._tops: Tops | None = None
        self._facts = VersionFacts()
        self._checkpoints = _checkpointer(self.dialect, self.path)

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True, create: bool = True) -> Storage:
        """Connect, and bring the schema to the newest migration unless told not to.

        With create=False (the commands that only read) a SQLite file that does not exist
        is StoreMissing: a mistyped path must not look like a store whose stories vanished.
        """
        path = sqlite_path(url)
        if path is not None and not create and not path.is_file():
            raise missing(path)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create the database folder {path.parent}: {exc.strerror or exc}") from None
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
        except ImportError as exc:
            raise StorageError(f"the database driver is not installed ({exc}): "
                               "for PostgreSQL, pip install 'monitor[postgres]'") from None
        except (SQLAlchemyError, ValueError) as exc:
            raise StorageError(f"cannot use database URL: {mask(first_line(exc), url)}") from None
        if engine.dialect.name == "sqlite":
            _tune_sqlite(engine, path)
        storage = cls(engine, url)
        if upgrade:
            storage.upgrade()
        return storage

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()
        self.engine.dispose()

    def reset(self) -> None:
        """Drop every pooled connection, so that the next use starts afresh: after a disk-full
        error (a new connection checkpoints a wedged WAL) or damage (no page cached from it)."""
        self.close()
        self._checkpoints = _checkpointer(self.dialect, self.path)

    def upgrade(self) -> None:
        from monitor.storage.migrate import upgrade

        try:
            upgrade(self.engine)
        except self._faults as exc:
            raise store_error(exc, self.url) from None
        self._identity = _identity(self.path)  # the file exists now, if it did not before

    def revision(self) -> str | None:
        """The schema revision the store is at (None for an empty one)."""
        from monitor.storage.migrate import current

        try:
            return current(self.engine)
        except self._faults as exc:
            raise store_error(exc, self.url) from None

    def replaced(self) -> str | None:
        """Why the SQLite file this store opened is no longer the one at its path (deleted,
        or another file moved there), else None. Writes to a deleted file succeed and are
        lost, so the service asks before every pass."""
        if self.path is None:
            return None
        now = _identity(self.path)
        if now == self._identity:
            return None
        return "deleted" if now is None else "replaced by another file"

    @property
    def _group(self) -> Connection | None:
        """The group transaction this thread opened (grouped()), which its every read and
        write joins until it ends. Another thread's (an HTTP request's) takes a connection
        of its own: a Connection is not shared between threads, and a read must not see,
        nor a write commit, a group's rows before the group does."""
        return getattr(self._local, "group", None)

    def grouped(self, work: Callable[[], T]) -> T:
        """Run `work` in one write transaction, which every read and write it makes joins:
        all of it is committed or none. A conflict that deciding again resolves (see
        ingest()) rolls it all back and runs `work` again from its start."""
        for attempt in range(1, INGEST_ATTEMPTS + 1):
            try:
                with self._write(retry=True) as conn:
                    self._local.group = conn
                    try:
                        return work()
                    finally:
                        self._local.group = self._known = self._tops = None
            except self._faults as exc:
                if not _retryable(exc):
                    raise self._error(exc) from None
                log.info("a group of files lost a race (%s), deciding it again (attempt %s)",
                         self._short(exc), attempt)
        raise StorageError(f"a group of files still conflicting after {INGEST_ATTEMPTS} attempts")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        group = self._group
        if group is not None:
            yield group
            return
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except self._faults as exc:
            raise store_error(exc, self.url) from None

    @contextmanager
    def _write(self, *, retry: bool = False, moves: bool = False) -> Iterator[Connection]:
        """A transaction that holds the store's write lock for its whole length (or the
        group's, which its caller then joins). `moves`: it only moves rows between tables
        (a fold of the key tiers), so SQLite need not check their stories again."""
        group = self._group
        if group is not None:
            yield group
            return
        committed = False
        try:
            with self.engine.connect() as conn:
                conn.execution_options(monitor_write=True, monitor_moves=moves)
                with conn.begin():
                    if self.dialect == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INGEST_LOCK})
                    yield conn
                committed = True
            if self._checkpoints is not None:
                self._checkpoints.committed()
        except self._faults as exc:
            if retry and _retryable(exc):
                raise  # the caller decides again
            raise store_error(exc, self.url) from None
        finally:
            # What ingest learned of versions in this transaction holds only once it committed.
            self._facts.settle(committed)

    def _short(self, exc: BaseException) -> str:
        return mask(first_line(getattr(exc, "orig", None) or exc), self.url)

    def _error(self, exc: BaseException) -> StorageError:
        return store_error(exc, self.url)

    # -- files ---------------------------------------------------------------

    def file_states(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every file recorded, read or rejected, by path."""
        with self._read() as conn, cursor(conn) as cur:
            return statements.file_states(self._sql, cur)

    def known_content(self, sha256: str, text_hashes: Sequence[str]) -> tuple[int | None, set[str]]:
        """Items in an already ingested copy of these exact bytes (None if none), else which of
        these text hashes the store already has; one read transaction per file."""
        sql = self._sql
        with self._read() as conn, cursor(conn) as cur:
            row = cur.execute(sql.content, (sha256,)).fetchone()
            if row is not None or not text_hashes:
                return (row[0] if row else None), set()
            known = dict(cur.execute(sql.known, (sql.array(text_hashes),)).fetchall())
        if self._group is not None:
            self._known = (tuple(text_hashes), known)
        return None, set(known)

    def record_file(self, info: FileInfo, sha256: str | None, *, items: int = 0,
                    reason: str | None = None, now: dt.datetime) -> None:
        """Record a file as read (its content already in the store) or rejected."""
        with self._write() as conn, cursor(conn) as cur:
            upsert_file(self._sql, cur, info, sha256, items, reason, now)

    def observe(self, info: FileInfo, now: dt.datetime) -> dt.datetime | None:
        """Note that this file version (path, size, mtime) was seen now; return when it was
        first seen unchanged (now, for a new version), or None if it is recorded as read."""
        sql = self._sql
        with self._write() as conn, cursor(conn) as cur:
            cur.execute(sql.observe, (info.path, info.size, info.mtime_ns, sql.stamp(now)))
            row = cur.execute(sql.observed_since, (info.path, info.size, info.mtime_ns)).fetchone()
        return None if row is None else sql.read_stamp(row[0])

    def observations(self) -> dict[str, tuple[int, int, dt.datetime]]:
        """(size, mtime_ns, first seen) of every file version being observed while it settles."""
        with self._read() as conn:
            rows = conn.execute(select(files.c.path, files.c.size, files.c.mtime_ns, files.c.seen_at)
                                .where(files.c.status == "settling")).all()
        return {path: (size, mtime, seen) for path, size, mtime, seen in rows}

    def rejected_files(self) -> list[tuple[str, str]]:
        """(path, reason) of every file recorded as rejected, by path."""
        with self._read() as conn, cursor(conn) as cur:
            return statements.rejected_files(self._sql, cur)

    # -- reading -------------------------------------------------------------

    def story_count(self) -> int:
        with self._read() as conn:
            return conn.execute(select(func.count()).select_from(stories)).scalar_one()

    def last_change(self) -> dt.datetime | None:
        """When a story last became new or revised (the newest `updated`); None when empty."""
        with self._read() as conn, cursor(conn) as cur:
            return statements.last_change(self._sql, cur)

    # -- scans ---------------------------------------------------------------

    def record_scan(self, report: ScanReport, started: dt.datetime, finished: dt.datetime) -> None:
        with self._write() as conn, cursor(conn) as cur:
            statements.record_scan(self._sql, cur, report, started, finished)
            catch_up(self.dialect, cur)  # the pass's versions into the search index, in one batch

    def last_scan(self) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(scans).order_by(scans.c.finished.desc(), scans.c.id.desc()).limit(1)).first()
            return dict(row._mapping) if row else None

    def ping(self) -> None:
        """Raise StorageError when the store cannot be reached."""
        with self._read() as conn:
            conn.execute(select(1))


def _tune_sqlite(engine: Engine, path: Path | None) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN, so writers can take the lock up front.
        dbapi_conn.isolation_level = None
        # Checkpoints run in a thread of Storage's own (monitor/storage/checkpoint.py).
        configure_sqlite(dbapi_conn, path, checkpoint_pages=FALLBACK_PAGES)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        # On the driver's connection: once per transaction, so a scan runs it twice per file.
        driver: Any = conn.connection.driver_connection  # never None on an open connection
        if options.get("monitor_moves"):
            # A fold of the key tiers (monitor/storage/keys.py) moves rows checked against
            # their stories when they were written, and stories are never deleted: checked
            # again, row by row, the fold of a million-story store took twice as long. Only
            # outside a transaction does the setting take; checkin() sets it back.
            driver.execute("PRAGMA foreign_keys = OFF")
            conn.info["foreign_keys_off"] = True
        # A writer takes the write lock at BEGIN: two writers then queue on busy_timeout
        # instead of failing when a read lock cannot be upgraded.
        driver.execute("BEGIN IMMEDIATE" if options.get("monitor_write") else "BEGIN")

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: Any, record: Any) -> None:
        if record.info.pop("foreign_keys_off", False):
            dbapi_conn.execute("PRAGMA foreign_keys = ON")


def _checkpointer(dialect: str, path: Path | None) -> Checkpointer | None:
    """The checkpoint thread of a SQLite file store (not of one in memory, nor of PostgreSQL)."""
    return Checkpointer(path) if dialect == "sqlite" and path is not None else None


def _identity(path: Path | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return None if st is None else (st.st_dev, st.st_ino)
