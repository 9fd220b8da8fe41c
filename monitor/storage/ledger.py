"""The ledger of a SQLite store: the answers an idle `monitor scan` needs, without SQLAlchemy.

A pass over a folder where nothing changed asks the store four things: which file
versions are recorded, which were rejected (one rejected for its permissions is read
again once it is readable), when a story last changed (is the feed file current?), and
where to record the pass. Run from cron every minute, such a pass is a fresh process
each time, and importing SQLAlchemy was most of its time. So on a SQLite store these
are answered here with the standard library's `sqlite3` and the same SQL text that
`Storage` runs (monitor.storage.sql). As soon as anything is to be done (a new or
changed file, a missing or stale feed, a schema to upgrade) the caller turns to
`Storage`; other databases always go through `Storage`.

Every SQLite connection of the monitor, `Storage`'s included, is set up by
`configure_sqlite` below.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from monitor.errors import StoreDamaged
from monitor.models import ScanReport
from monitor.storage import sql as statements
from monitor.storage.faults import sqlite_path, store_error
from monitor.storage.revisions import VERSION_TABLE, head
from monitor.storage.sql import SQL

# Each file's commit touches index pages all over the band and paragraph key indexes;
# checkpointing the WAL every ~40 MB instead of every ~4 MB (SQLite's default of 1,000
# pages) writes a page that many commits changed back to the database once, not once
# per checkpoint. Storage's own connections use a higher fallback instead, as a thread
# checkpoints behind them (monitor.storage.checkpoint); this is for the rest.
WAL_CHECKPOINT_PAGES = 10_000
# ...unless the disk is short of space: a WAL allowed to grow to 40 MB fills a small disk
# with copies of the same pages, and after a disk-full error freeing space does not help
# (the WAL only grows on). With less than LOW_SPACE_BYTES free, the WAL is checkpointed
# and truncated when a connection opens and kept to about 400 KB.
LOW_SPACE_BYTES = 2 * WAL_CHECKPOINT_PAGES * 4096
LOW_SPACE_CHECKPOINT_PAGES = 100
BUSY_TIMEOUT_MS = 30_000
# SQLite's page cache per connection, in KiB (its default is 2 MB): a scan's group of files
# touches index pages all over the paragraph and band key indexes, which a larger cache
# keeps instead of reading them again from the OS. Sized to fit the 150 MB RSS budget
# with the fingerprint cache (monitor.storage.ingest.FINGERPRINT_CACHE).
CACHE_KIB = 16_384

_SQL = SQL.for_dialect("sqlite")


def configure_sqlite(conn: Any, path: Path | None = None, *, checkpoint_pages: int = WAL_CHECKPOINT_PAGES) -> None:
    """The settings of every connection to a SQLite store (a DBAPI connection) at `path`;
    `checkpoint_pages`: its wal_autocheckpoint, unless the disk is short of space."""
    cur = conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _use_wal(cur)
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    if path is not None and _short_of_space(path):
        cur.execute(f"PRAGMA wal_autocheckpoint = {LOW_SPACE_CHECKPOINT_PAGES}")
        cur.execute(f"PRAGMA journal_size_limit = {LOW_SPACE_CHECKPOINT_PAGES * 4096}")
        with suppress(sqlite3.Error):  # still no room, or busy: the next connection tries again
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        cur.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_pages}")
    cur.close()


def _short_of_space(path: Path) -> bool:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < LOW_SPACE_BYTES


def _use_wal(cur: Any) -> None:
    """Switch a new store to WAL. The switch needs the file to itself and SQLite does not
    wait for that (no busy handler), so processes opening a new store together retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Ledger:
    """Files recorded and rejected, the last change, and scans, on an existing SQLite store at head."""

    def __init__(self, conn: sqlite3.Connection, url: str) -> None:
        self._conn = conn
        self._url = url

    @classmethod
    def open(cls, url: str) -> Ledger | None:
        """The ledger of the store at `url`; None when `Storage` must answer instead: not a
        SQLite file, no store there yet, or a schema that is not at head."""
        path = sqlite_path(url)
        if path is None or "?" in url or not path.is_file():
            return None
        try:
            # mode=rw: a store that vanished meanwhile is not created empty here.
            conn = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=rw", uri=True,
                                   isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            configure_sqlite(conn, path)
            rows = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
        except sqlite3.Error as exc:
            conn.close()
            error = store_error(exc, url)
            if isinstance(error, StoreDamaged):
                raise error from None
            return None  # not at head, say: Storage upgrades it, or says what is wrong
        if [r[0] for r in rows] != [head()]:
            conn.close()
            return None
        return cls(conn, url)

    def close(self) -> None:
        self._conn.close()

    def file_states(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every file recorded, read or rejected, by path."""
        with self._errors():
            return statements.file_states(_SQL, self._conn)

    def rejected_files(self) -> list[tuple[str, str]]:
        """(path, reason) of every file recorded as rejected, by path."""
        with self._errors():
            return statements.rejected_files(_SQL, self._conn)

    def last_change(self) -> dt.datetime | None:
        """When a story last became new or revised; None when the store has none."""
        with self._errors():
            return statements.last_change(_SQL, self._conn)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A database error as the StorageError that `Storage` raises for it (one translator)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise store_error(exc, self._url) from None

    def record_scan(self, report: ScanReport, started: dt.datetime, finished: dt.datetime) -> None:
        with self._errors(), self._conn:  # BEGIN ... COMMIT, or ROLLBACK on an error
            self._conn.execute("BEGIN IMMEDIATE")
            statements.record_scan(_SQL, self._conn, report, started, finished)
