"""The outbox: which story version went to which subscriber on which channel, and what waits.

Channel-neutral (migration 0007): a message (`outbox` row) goes to one subscriber on one
channel, and every story version it carries is a `deliveries` row whose primary key is
(channel, subscriber, text hash), so no version reaches a subscriber twice on a channel.

What is due: every story version is a row in `versions`, and `versions.id` grows in
commit order because ingest writes versions only while holding the store's write lock.
Each message records the highest version id it looked at (`version_upto`); a
subscriber's next message reads only versions above its mark, through the primary key.
A story found there is due when its current text is not the one last delivered.

The flow keeps composing out of the write transaction: `due` reads (no lock), the caller
composes, `claim` writes the messages and deliveries in one short transaction and checks
that the subscriber's mark did not move meanwhile. A message is marked sent only after
the remote accepted it, so a crash leaves it pending and the same bytes go again.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, or_, select, text
from sqlalchemy.exc import DBAPIError

from monitor.errors import StorageError, StoreConflict
from monitor.models import Story
from monitor.storage.schema import EVERYONE, deliveries, outbox, stories, story_from_row, unsubscribed, versions

if TYPE_CHECKING:
    from sqlalchemy import Engine

# A session-level advisory lock held by the one delivery runner at work (PostgreSQL).
DIGEST_LOCK = 0x6D6F6E64  # "mond"
START = "start"  # a subscriber's first row: where its deliveries begin


@dataclass(frozen=True)
class DueVersion:
    story_id: int
    uid: str
    current: str  # the text hash of the story's current version
    delivered: str | None  # the text hash delivered last (None: the story is new to this subscriber)
    updated: dt.datetime


@dataclass(frozen=True)
class Due:
    since: int  # the subscriber's mark when read (claim checks it did not move)
    upto: int  # the mark to store
    versions: tuple[DueVersion, ...]  # newest first


@dataclass(frozen=True)
class Claim:
    """One composed message and the versions it carries (section: new, revised or more)."""

    message_key: str
    payload: str
    address: str | None
    new_count: int
    revised_count: int
    carried: tuple[tuple[DueVersion, str], ...]


@dataclass(frozen=True)
class PendingMessage:
    id: int | None  # None for a preview that was never stored
    channel: str
    subscriber: str
    message_key: str
    payload: str
    address: str | None
    new_count: int
    revised_count: int
    attempts: int = 0
    next_attempt: dt.datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class DeliveryState:
    """What status and /healthz say about one subscriber on one channel."""

    channel: str
    subscriber: str
    pending: int
    attempts: int  # of the oldest pending message
    error: str | None  # why the oldest pending message failed last, or why the last one was refused
    refused: bool  # the newest finished message was refused for good


def digest_lock_path(database: str) -> str:
    """The file beside a SQLite store that the delivery runner (and `monitor rebuild`) lock."""
    return f"{database}-digest.lock"


@contextmanager
def file_lock(path: str) -> Iterator[bool]:
    """Yield True while this process holds an exclusive flock on `path`, False if another
    does; the lock goes with the process, so a crash never leaves it held."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the flock


class OutboxMixin:
    """Outbox methods of `Storage` (which provides engine, dialect, _read, _write, _error)."""

    engine: Engine
    dialect: str
    _read: Callable[[], Any]
    _write: Callable[..., Any]
    _error: Callable[[BaseException], StorageError]

    # -- one runner at a time ----------------------------------------------------

    @contextmanager
    def digest_runner_lock(self) -> Iterator[bool]:
        """Yield True while this process is the only delivery runner, False if another is.

        Held for a whole run, sending included, so it is not the write lock (which would
        stall scans): a session advisory lock on PostgreSQL, a file lock next to a
        SQLite file. Both go away with the process, so a crash never leaves it held.
        """
        if self.dialect == "postgresql":
            with self._pg_session_lock() as held:
                yield held
            return
        database = self.engine.url.database
        if not database or database == ":memory:":
            yield True
            return
        with file_lock(digest_lock_path(database)) as held:
            yield held

    @contextmanager
    def _pg_session_lock(self) -> Iterator[bool]:
        try:
            conn = self.engine.connect()
            held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": DIGEST_LOCK}).scalar())
            conn.commit()
        except DBAPIError as exc:
            raise self._error(exc) from None
        try:
            yield held
        finally:
            try:
                if held:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": DIGEST_LOCK})
                    conn.commit()
            except DBAPIError:
                # A session lock must never go back to the pool: drop the connection.
                conn.invalidate()
            conn.close()

    # -- subscribers ---------------------------------------------------------------

    def register_subscribers(self, keys: Sequence[tuple[str, str]], now: dt.datetime) -> None:
        """Give each (channel, subscriber) met for the first time its starting mark.

        On a store that never delivered anything, everyone starts at the last baseline (so
        the first digest carries what is stored, as before); a subscriber added later starts
        at what is stored now, like a new reader of a mailing list.
        """
        with self._read() as conn:
            known = {tuple(r) for r in conn.execute(select(outbox.c.channel, outbox.c.subscriber).distinct())}
        missing = [k for k in dict.fromkeys(keys) if k not in known]
        if not missing:
            return
        with self._write() as conn:
            known = {tuple(r) for r in conn.execute(select(outbox.c.channel, outbox.c.subscriber).distinct())}
            mark = self._start_mark(conn)
            rows = [{"channel": c, "subscriber": s, "message_key": START, "status": START, "created": now,
                     "version_upto": mark, "new_count": 0, "revised_count": 0, "attempts": 0}
                    for c, s in missing if (c, s) not in known]
            if rows:
                conn.execute(outbox.insert(), rows)

    def _start_mark(self, conn: Connection) -> int:
        """Where a subscriber met now starts (see register_subscribers)."""
        delivered = conn.execute(select(outbox.c.id).where(outbox.c.channel != EVERYONE).limit(1)).first()
        if delivered is None:
            return conn.execute(select(func.coalesce(func.max(outbox.c.version_upto), 0))
                                .where(outbox.c.channel == EVERYONE)).scalar_one()
        return conn.execute(select(func.coalesce(func.max(versions.c.id), 0))).scalar_one()

    def unsubscribe(self, subscriber: str, now: dt.datetime) -> bool:
        """Stop a subscriber's mail for good (pending messages too); False if it was stopped already."""
        with self._write() as conn:
            if conn.execute(select(unsubscribed.c.at).where(unsubscribed.c.subscriber == subscriber)).first():
                return False
            conn.execute(unsubscribed.insert().values(subscriber=subscriber, at=now))
            conn.execute(outbox.update().where(outbox.c.subscriber == subscriber, outbox.c.status == "pending")
                         .values(status="dropped", last_error="unsubscribed"))
        return True

    def unsubscribed(self) -> set[str]:
        with self._read() as conn:
            return set(conn.execute(select(unsubscribed.c.subscriber)).scalars())

    # -- what is due ---------------------------------------------------------------

    def due(self, channel: str, subscriber: str) -> Due:
        """What this subscriber has not been sent on this channel (a read; nothing locked)."""
        with self._read() as conn:
            return self._due(conn, channel, subscriber)

    def _due(self, conn: Connection, channel: str, subscriber: str) -> Due:
        mine = or_(and_(outbox.c.channel == channel, outbox.c.subscriber == subscriber),
                   outbox.c.channel == EVERYONE)
        since = conn.execute(select(func.coalesce(func.max(outbox.c.version_upto), 0)).where(mine)).scalar_one()
        if channel != EVERYONE and conn.execute(select(outbox.c.id).where(
                outbox.c.channel == channel, outbox.c.subscriber == subscriber).limit(1)).first() is None:
            # Not registered yet (a dry run): what its first real run would start from.
            since = max(since, self._start_mark(conn))
        upto = conn.execute(select(func.coalesce(func.max(versions.c.id), 0))).scalar_one()
        if upto <= since:
            return Due(since, since, ())
        touched = select(versions.c.story_id).where(versions.c.id > since).distinct().subquery()
        ours = or_(and_(deliveries.c.channel == channel, deliveries.c.subscriber == subscriber),
                   and_(deliveries.c.channel == EVERYONE, deliveries.c.subscriber == EVERYONE))
        last = (select(deliveries.c.story_id, func.max(deliveries.c.outbox_id).label("o"))
                .where(ours, deliveries.c.story_id.in_(select(touched.c.story_id)))
                .group_by(deliveries.c.story_id).subquery())
        delivered = dict(conn.execute(
            select(deliveries.c.story_id, deliveries.c.text_hash)
            .join(last, and_(deliveries.c.story_id == last.c.story_id, deliveries.c.outbox_id == last.c.o))
            .where(ours)
        ).all())
        rows = conn.execute(select(stories.c.id, stories.c.uid, stories.c.current_hash, stories.c.updated)
                            .join(touched, touched.c.story_id == stories.c.id))
        due = [DueVersion(sid, uid, current, delivered.get(sid), updated) for sid, uid, current, updated in rows
               if delivered.get(sid) != current]
        # Newest first: with a backlog larger than a digest shows, the newest are shown in full.
        due.sort(key=lambda d: (d.updated, d.story_id), reverse=True)
        return Due(since, upto, tuple(due))

    def stories_by_hash(self, hashes: Sequence[str]) -> dict[str, Story]:
        """The stories as they read in these versions, by text hash."""
        if not hashes:
            return {}
        query = (select(versions.c.text_hash, stories.c.uid, versions.c.kind, versions.c.headline,
                        versions.c.paragraphs, versions.c.published, stories.c.first_seen, stories.c.updated)
                 .join(stories, stories.c.id == versions.c.story_id)
                 .where(versions.c.text_hash.in_(list(hashes))))
        with self._read() as conn:
            return {row[0]: story_from_row(row[1:]) for row in conn.execute(query)}

    def claim(self, channel: str, subscriber: str, due: Due, claims: Sequence[Claim],
              now: dt.datetime) -> list[PendingMessage] | None:
        """Store composed messages as pending and move the subscriber's mark to `due.upto`.

        One short write transaction. None when another runner claimed for this subscriber
        since `due` was read (nothing is written; the next run reads again).
        """
        mine = or_(and_(outbox.c.channel == channel, outbox.c.subscriber == subscriber),
                   outbox.c.channel == EVERYONE)
        try:
            with self._write() as conn:
                mark = conn.execute(select(func.coalesce(func.max(outbox.c.version_upto), 0))
                                    .where(mine)).scalar_one()
                if mark != due.since:
                    return None
                out = [self._insert_claim(conn, channel, subscriber, due.upto, c, now) for c in claims]
                # The versions no message carries (another topic) are behind the mark all the same.
                moved = conn.execute(outbox.update().where(
                    outbox.c.channel == channel, outbox.c.subscriber == subscriber, outbox.c.status == START,
                ).values(version_upto=due.upto)).rowcount
                if not moved:  # a subscriber from before 0007 has no starting row of its own
                    conn.execute(outbox.insert().values(
                        channel=channel, subscriber=subscriber, message_key=START, status=START, created=now,
                        version_upto=due.upto, new_count=0, revised_count=0, attempts=0))
        except StoreConflict:
            return None  # a version already delivered to this subscriber: claimed elsewhere
        return out

    def _insert_claim(self, conn: Connection, channel: str, subscriber: str, upto: int, c: Claim,
                      now: dt.datetime) -> PendingMessage:
        new_id = conn.execute(outbox.insert().values(
            channel=channel, subscriber=subscriber, message_key=c.message_key, status="pending", created=now,
            version_upto=upto, new_count=c.new_count, revised_count=c.revised_count, address=c.address,
            payload=c.payload, attempts=0,
        ).returning(outbox.c.id)).scalar_one()
        if c.carried:
            conn.execute(deliveries.insert(), [
                {"channel": channel, "subscriber": subscriber, "text_hash": v.current, "story_id": v.story_id,
                 "outbox_id": new_id, "section": section} for v, section in c.carried])
        return PendingMessage(new_id, channel, subscriber, c.message_key, c.payload, c.address,
                              c.new_count, c.revised_count)

    def baseline_digest(self, now: dt.datetime) -> int:
        """Record every story's current text as delivered to everyone; return how many were due."""
        with self._write() as conn:
            due = self._due(conn, EVERYONE, EVERYONE)
            if not due.versions:
                return 0
            new_id = conn.execute(outbox.insert().values(
                channel=EVERYONE, subscriber=EVERYONE, message_key=f"baseline-v{due.upto}", status="baseline",
                created=now, sent=now, version_upto=due.upto,
                new_count=sum(d.delivered is None for d in due.versions),
                revised_count=sum(d.delivered is not None for d in due.versions), attempts=0,
            ).returning(outbox.c.id)).scalar_one()
            conn.execute(deliveries.insert(), [
                {"channel": EVERYONE, "subscriber": EVERYONE, "text_hash": d.current, "story_id": d.story_id,
                 "outbox_id": new_id, "section": "baseline"} for d in due.versions])
        return len(due.versions)

    # -- sending -------------------------------------------------------------------

    def pending_messages(self, channel: str | None = None) -> list[PendingMessage]:
        """Messages claimed but not yet accepted or refused, oldest first."""
        query = select(outbox).where(outbox.c.status == "pending").order_by(outbox.c.id)
        if channel is not None:
            query = query.where(outbox.c.channel == channel)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [PendingMessage(r.id, r.channel, r.subscriber, r.message_key, r.payload, r.address, r.new_count,
                               r.revised_count, r.attempts, r.next_attempt, r.last_error) for r in rows]

    def record_sent(self, outbox_id: int, now: dt.datetime) -> None:
        self._finish(outbox_id, status="sent", sent=now, last_error=None)

    def record_refused(self, outbox_id: int, now: dt.datetime, reason: str) -> None:
        """Refused for good: not retried, reported until a later message to it goes through."""
        self._finish(outbox_id, status="refused", sent=now, last_error=reason[:1000])

    def record_failure(self, outbox_id: int, error: str, next_attempt: dt.datetime | None = None) -> None:
        """Count a failed attempt; the message stays pending (until `next_attempt`, if given)."""
        with self._write() as conn:
            conn.execute(outbox.update().where(outbox.c.id == outbox_id)
                         .values(attempts=outbox.c.attempts + 1, last_error=error[:1000], next_attempt=next_attempt))

    def _finish(self, outbox_id: int, **values: Any) -> None:
        with self._write() as conn:
            conn.execute(outbox.update().where(outbox.c.id == outbox_id, outbox.c.status == "pending")
                         .values(attempts=outbox.c.attempts + 1, next_attempt=None, **values))

    def delivery_states(self) -> list[DeliveryState]:
        """Per channel and subscriber: what waits, and whether the newest finished message was refused.

        Asked on every /healthz: the pending rows (few) and one row per subscriber, found in SQL.
        """
        newest = (select(func.max(outbox.c.id).label("id")).where(outbox.c.status.in_(["sent", "refused"]))
                  .group_by(outbox.c.channel, outbox.c.subscriber).subquery())
        with self._read() as conn:
            pending = conn.execute(select(outbox.c.channel, outbox.c.subscriber, outbox.c.attempts,
                                          outbox.c.last_error)
                                   .where(outbox.c.status == "pending").order_by(outbox.c.id)).all()
            finished = conn.execute(select(outbox.c.channel, outbox.c.subscriber, outbox.c.status,
                                           outbox.c.last_error).join(newest, newest.c.id == outbox.c.id)).all()
        states: dict[tuple[str, str], DeliveryState] = {}
        for channel, subscriber, status, error in finished:
            refused = status == "refused"
            states[(channel, subscriber)] = DeliveryState(channel, subscriber, 0, 0, error if refused else None,
                                                          refused)
        for channel, subscriber, attempts, error in pending:
            st = states.get((channel, subscriber), DeliveryState(channel, subscriber, 0, 0, None, False))
            if not st.pending:  # the oldest pending message speaks for the subscriber
                st = DeliveryState(channel, subscriber, 0, attempts, error, st.refused)
            states[(channel, subscriber)] = DeliveryState(channel, subscriber, st.pending + 1, st.attempts,
                                                          st.error, st.refused)
        return list(states.values())

    def outbox_history(self) -> list[dict[str, Any]]:
        """Every message (baselines and starts too) with the story versions it carried, oldest first."""
        with self._read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(outbox).order_by(outbox.c.id))]
            carried = conn.execute(select(deliveries.c.outbox_id, stories.c.uid, deliveries.c.text_hash,
                                          deliveries.c.section)
                                   .join(stories, stories.c.id == deliveries.c.story_id)).all()
        for row in rows:
            row["stories"] = sorted((uid, h, s) for o, uid, h, s in carried if o == row["id"])
        return rows
