"""The database side of `monitor rebuild` (monitor/rebuild.py orchestrates); the SQLite file
here, the PostgreSQL schema swap in rebuild_pg.py.

* `hold_old_store`: keep every other process off the old file for the whole rebuild:
  the digest runner's file lock (no digest is claimed or sent meanwhile), a lock of our
  own (one rebuild at a time) and SQLite's exclusive lock on the file itself, which a
  process that has the store open (a running `monitor run`) prevents, so a rebuild
  refuses rather than swap a file under a live service.
* `OldStore`: what the old store says: its stories, their versions, the outbox with its
  deliveries (0002's digest tables read as 0007 converts them) and who unsubscribed,
  read on the connection that holds it (plain sqlite3 here, like the ledger; on
  PostgreSQL the swap's own connection).
* `adopt`: write what the rebuild keeps (ids, times, digest history) into the new store,
  one transaction.
* `seal` and `swap`: make the new file whole on disk, then put it in place with one
  rename, the old file kept under another name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, make_url, select, update
from sqlalchemy.exc import ArgumentError

from monitor.errors import MonitorError, StorageError
from monitor.models import Item
from monitor.storage.outbox import digest_lock_path, file_lock
from monitor.storage.revisions import VERSION_TABLE, head, revisions
from monitor.storage.schema import EVERYONE, deliveries, outbox, stories, unsubscribed, versions
from monitor.storage.sql import SQL
from monitor.storage.store import Storage

# Waited for the old file's exclusive lock: a short command (`monitor status`, an idle
# scan from cron) is done by then; a running service never lets go.
LOCK_WAIT_SECONDS = 5
SIDE_FILES = ("-wal", "-journal")  # SQLite finds these by the database's name
_SQL = SQL.for_dialect("sqlite")


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite store URL, None for PostgreSQL; a one-line error for anything else."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"cannot use database URL {url!r}") from None
    if parsed.get_backend_name() == "postgresql":
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        raise MonitorError(f"rebuild: needs a SQLite file or PostgreSQL store, not {parsed.get_backend_name()}")
    return Path(parsed.database)


@dataclass(frozen=True)
class OldStory:
    uid: str
    first_seen: dt.datetime
    updated: dt.datetime
    current_hash: str


@dataclass(frozen=True)
class OldVersion:
    story_id: int
    text_hash: str
    item: Item
    seen_at: dt.datetime


# 0002's recipient states as 0007 maps them (monitor/migrations/versions/0007_deliveries.py).
RECIPIENT_STATUS = {"accepted": "sent", "refused": "refused", "pending": "pending"}
MAILDIR = "maildir"


@dataclass(frozen=True)
class OldMessage:
    """One row of the outbox (a message to one subscriber on one channel, a baseline for
    everyone, or a subscriber's starting row) with the texts delivered by it."""

    row: dict[str, Any]  # the outbox columns but id and version_upto
    texts: tuple[tuple[str, str], ...]  # (text_hash, section)

    @property
    def key(self) -> tuple[str, str]:
        """Whose deliveries these are: (channel, subscriber)."""
        return self.row.get("channel", EVERYONE), self.row.get("subscriber", EVERYONE)


Rows = Callable[[str], Iterable[tuple[Any, ...]]]


class OldStore:
    """What the old store says; `problem` says why it cannot be read (missing, damaged).

    `rows` runs one query on the connection that holds the old store (a SQLite file or
    a PostgreSQL schema); `stamp` reads a time as that database returns it."""

    def __init__(self, where: str, rows: Rows | None, problem: str | None, *, tables: Iterable[str] = (),
                 stamp: Callable[[Any], dt.datetime] | None = None, close: Callable[[], None] | None = None) -> None:
        self.where = where
        self.problem = problem
        self._fetch = rows
        self._tables = frozenset(tables)
        self._stamp = stamp or _SQL.read_stamp
        self._close = close

    def stories(self) -> dict[int, OldStory]:
        stamp = self._stamp
        rows = self._rows("SELECT id, uid, first_seen, updated, current_hash FROM stories")
        return {sid: OldStory(uid, stamp(first), stamp(upd), current) for sid, uid, first, upd, current in rows}

    def versions(self) -> Iterator[OldVersion]:
        """Every version, oldest first; one at a time (a large store is read, not loaded)."""
        for sid, text_hash, kind, title, paragraphs, published, seen_at in self._rows(
                "SELECT story_id, text_hash, kind, title, paragraphs, published, seen_at FROM versions ORDER BY id"):
            item = Item(kind=kind, paragraphs=tuple(json.loads(paragraphs)), title=title, published=_day(published))
            yield OldVersion(sid, text_hash, item, self._stamp(seen_at))

    def messages(self) -> list[OldMessage]:
        """The outbox, oldest first; empty for a store older than the outbox (migration 0002)."""
        if "outbox" in self._tables:
            return self._outbox()
        if "digests" in self._tables:
            return self._digests()
        return []

    def _outbox(self) -> list[OldMessage]:
        stamp = self._stamp
        texts: dict[int, list[tuple[str, str]]] = {}
        for outbox_id, text_hash, section in self._rows(
                "SELECT outbox_id, text_hash, section FROM deliveries ORDER BY outbox_id, story_id"):
            texts.setdefault(outbox_id, []).append((text_hash, section))
        found = []
        for (outbox_id, channel, subscriber, key, status, created, sent, next_attempt, new_count, revised_count,
             address, payload, attempts, last_error) in self._rows(
                "SELECT id, channel, subscriber, message_key, status, created, sent, next_attempt, new_count, "
                "revised_count, address, payload, attempts, last_error FROM outbox ORDER BY id"):
            row = {"channel": channel, "subscriber": subscriber, "message_key": key, "status": status,
                   "created": stamp(created), "sent": stamp(sent) if sent else None,
                   "next_attempt": stamp(next_attempt) if next_attempt else None, "new_count": new_count,
                   "revised_count": revised_count, "address": address, "payload": payload, "attempts": attempts,
                   "last_error": last_error}
            found.append(OldMessage(row, tuple(texts.get(outbox_id, ()))))
        return found

    def _digests(self) -> list[OldMessage]:
        """0002's digests (a store not upgraded to 0007), as 0007 turns them into the outbox:
        a baseline for everyone per digest, and a message per recipient."""
        stamp = self._stamp
        texts: dict[int, list[tuple[str, str]]] = {}
        for digest_id, text_hash, section in self._rows(
                "SELECT digest_id, text_hash, section FROM digest_stories ORDER BY digest_id, story_id"):
            texts.setdefault(digest_id, []).append((text_hash, section))
        people: dict[int, list[tuple[str, str, str | None]]] = {}
        for digest_id, address, status, reply in self._rows(
                "SELECT digest_id, address, status, reply FROM digest_recipients ORDER BY digest_id, address"):
            people.setdefault(digest_id, []).append((address, RECIPIENT_STATUS.get(status, "sent"), reply))
        found = []
        for (digest_id, message_id, status, created, sent, new_count, revised_count, message, attempts,
             last_error) in self._rows(
                "SELECT id, message_id, status, created, sent, new_count, revised_count, message, attempts, "
                "last_error FROM digests ORDER BY id"):
            carried = tuple(texts.get(digest_id, ()))
            base = {"created": stamp(created), "new_count": new_count, "revised_count": revised_count,
                    "attempts": attempts, "next_attempt": None}
            key = f"baseline-{digest_id}" if status == "baseline" else f"digest-{digest_id}"
            found.append(OldMessage({**base, "channel": EVERYONE, "subscriber": EVERYONE, "message_key": key,
                                     "status": "baseline", "sent": stamp(sent) if sent else stamp(created),
                                     "address": None, "payload": None, "last_error": None}, carried))
            if status == "baseline":
                continue
            for address, state, reply in people.get(digest_id) or [(MAILDIR, status, None)]:
                found.append(OldMessage({
                    **base, "channel": "email", "subscriber": address, "message_key": message_id, "status": state,
                    "sent": stamp(sent) if sent and state in ("sent", "baseline") else None,
                    "address": None if address == MAILDIR else address, "payload": message,
                    "last_error": reply or last_error}, carried))
        return found

    def unsubscribed(self) -> list[tuple[str, dt.datetime]]:
        """Who stopped their mail (migration 0007 on)."""
        if "unsubscribed" not in self._tables:
            return []
        return [(name, self._stamp(at)) for name, at in self._rows("SELECT subscriber, at FROM unsubscribed")]

    def _rows(self, query: str) -> Iterable[tuple[Any, ...]]:
        if self._fetch is None:
            raise StorageError(self.problem or f"{self.where}: not open")
        return self._fetch(query)

    def release(self) -> None:
        """Let go of the old store (a SQLite file: its WAL folded back into it first)."""
        close, self._close = self._close, None
        if close is not None:
            close()


@contextmanager
def hold_old_store(path: Path) -> Iterator[OldStore]:
    """The old store, with every other process kept off it until the block ends."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the database folder {path.parent}: {exc.strerror or exc}") from None
    with ExitStack() as stack:
        # The digest runner's lock (monitor/storage/outbox.py): a digest being sent now
        # would be recorded in the old store after its history was copied.
        if not stack.enter_context(file_lock(digest_lock_path(str(path)))):
            raise MonitorError(f"rebuild: a digest is being sent from {path} now; try again when it is done")
        if not stack.enter_context(file_lock(f"{path}.rebuild.lock")):
            raise MonitorError(f"rebuild: another `monitor rebuild` is working on {path}")
        old = _open_exclusive(path)
        try:
            yield old
        finally:
            old.release()


def _open_exclusive(path: Path) -> OldStore:
    where = str(path)
    if not path.exists():
        return OldStore(where, None, f"no store at {path}")
    conn = sqlite3.connect(f"file:{urllib.parse.quote(where)}?mode=rw", uri=True,
                           timeout=LOCK_WAIT_SECONDS, isolation_level=None)
    try:
        # Exclusive locking mode keeps the lock after the transaction, and in WAL mode it
        # cannot be had while any other connection has the file open.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise MonitorError(f"rebuild: {path} is in use by another process (a running `monitor run`?): "
                               "stop it, then run `monitor rebuild` again") from None
        return OldStore(where, None, f"{path} is damaged ({exc})")
    except sqlite3.DatabaseError as exc:
        conn.close()
        return OldStore(where, None, f"{path} is damaged ({exc})")

    def rows(query: str) -> Iterator[tuple[Any, ...]]:
        try:
            yield from conn.execute(query)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{path} is damaged ({exc})") from None

    def close() -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError:
            pass  # a damaged file keeps its WAL beside it; swap() moves both
        finally:
            conn.close()

    if "stories" not in tables:
        close()
        return OldStore(where, None, f"{path} holds no store")
    if VERSION_TABLE in tables:
        try:
            check_revision(where, {version for (version,) in rows(f"SELECT version_num FROM {VERSION_TABLE}")})
        except StorageError:
            close()
            raise
    return OldStore(where, rows, None, tables=tables, close=close)


def check_revision(where: str, at: set[str]) -> None:
    """Refuse a store migrated by a newer monitor: its newer tables and columns would be lost."""
    if not at <= revisions()[0]:
        raise StorageError(f"{where} is at schema revision {','.join(sorted(at))}, which this version of monitor "
                           f"does not know (newest here: {head()}): upgrade monitor; nothing changed")


# -- the new store ---------------------------------------------------------------


@dataclass(frozen=True)
class NewStore:
    """What the rebuild's scan stored: stories (id: uid, current hash), versions (hash: id, story)."""

    stories: dict[int, tuple[str, str]]
    versions: dict[str, tuple[int, int]]


def read_new(storage: Storage) -> NewStore:
    with storage._read() as conn:
        rows = conn.execute(select(stories.c.id, stories.c.uid, stories.c.current_hash)).all()
        vrows = conn.execute(select(versions.c.text_hash, versions.c.id, versions.c.story_id)).all()
    return NewStore({sid: (uid, h) for sid, uid, h in rows}, {h: (vid, sid) for h, vid, sid in vrows})


@dataclass(frozen=True)
class Adoption:
    """What the new store takes over from the old one (computed in monitor/rebuild.py)."""

    uids: dict[int, str] = field(default_factory=dict)  # new story id: the old id it keeps
    first_seen: dict[int, dt.datetime] = field(default_factory=dict)
    updated: dict[int, dt.datetime] = field(default_factory=dict)
    seen_at: dict[str, dt.datetime] = field(default_factory=dict)  # by text hash
    # Each old outbox row with the (story id, text hash, section) it delivered in the new
    # store, and its mark (`version_upto`: where that subscriber's next message starts reading).
    messages: list[tuple[OldMessage, list[tuple[int, str, str]], int]] = field(default_factory=list)
    unsubscribed: list[tuple[str, dt.datetime]] = field(default_factory=list)


def adopt(storage: Storage, plan: Adoption) -> None:
    """Write the kept ids, times and delivery history into the new store in one transaction."""
    with storage._write() as conn:
        write_adoption(conn, plan)


def write_adoption(conn: Connection, plan: Adoption) -> None:
    """`adopt` inside a transaction the caller holds (PostgreSQL: the swap's)."""
    if plan.uids:
        # Through a placeholder first: two stories may trade ids, and uid is unique.
        moved = [{"sid": sid, "uid": f"rebuild:{sid}"} for sid in plan.uids]
        kept = [{"sid": sid, "uid": uid} for sid, uid in plan.uids.items()]
        by_id = update(stories).where(stories.c.id == bindparam("sid")).values(uid=bindparam("uid"))
        conn.execute(by_id, moved)
        conn.execute(by_id, kept)
    for column, values in (("first_seen", plan.first_seen), ("updated", plan.updated)):
        if values:
            conn.execute(update(stories).where(stories.c.id == bindparam("sid"))
                         .values({column: bindparam("stamp")}),
                         [{"sid": sid, "stamp": stamp} for sid, stamp in values.items()])
    if plan.seen_at:
        conn.execute(update(versions).where(versions.c.text_hash == bindparam("h"))
                     .values(seen_at=bindparam("stamp")),
                     [{"h": h, "stamp": stamp} for h, stamp in plan.seen_at.items()])
    for message, carried, upto in plan.messages:
        channel, subscriber = message.key
        outbox_id = conn.execute(outbox.insert().values(**message.row, version_upto=upto)
                                 .returning(outbox.c.id)).scalar_one()
        if carried:
            conn.execute(deliveries.insert(), [
                {"channel": channel, "subscriber": subscriber, "outbox_id": outbox_id, "story_id": sid,
                 "text_hash": h, "section": section} for sid, h, section in carried])
    if plan.unsubscribed:
        conn.execute(unsubscribed.insert(), [{"subscriber": name, "at": at} for name, at in plan.unsubscribed])


# -- files -----------------------------------------------------------------------


def discard(path: Path) -> None:
    """Remove a file and SQLite's side files (what a killed rebuild left behind)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def seal(path: Path) -> None:
    """Fold the WAL into the closed new store and make it durable: one file, nothing beside it."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()  # the last connection: SQLite removes the WAL
        for suffix in SIDE_FILES:
            side = Path(f"{path}{suffix}")
            if side.exists() and side.stat().st_size:
                raise StorageError(f"{side} is still in use; the new store was not swapped in")
            side.unlink(missing_ok=True)
        Path(f"{path}-shm").unlink(missing_ok=True)
        _fsync(path)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot finish the new store {path}: {exc}") from None


def swap(path: Path, new: Path, backup: Path) -> bool:
    """Put `new` in place of `path` with one rename; the old file (if any) stays as `backup`.

    At every moment `path` names a whole store, the old or the new: the backup is a hard
    link made first, and the replace is atomic. Returns whether there was an old file.
    """
    try:
        had_old = path.exists()
        if had_old:
            os.link(path, backup)
        for suffix in SIDE_FILES:
            # A healthy old store has none left (release() folded its WAL); a damaged one
            # keeps its WAL with it. None may stay: SQLite would apply it to the new file.
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.replace(side, f"{backup}{suffix}")
        Path(f"{path}-shm").unlink(missing_ok=True)
        os.replace(new, path)
        _fsync(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot swap the new store into {path}: {exc.strerror or exc}") from None
    return had_old


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _day(value: Any) -> dt.date | None:
    """A date column as SQLite (ISO text) or PostgreSQL (a date) returns it."""
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)
