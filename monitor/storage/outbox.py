"""The digest outbox: which story version went out in which digest, and digests to send.

What is due: every story version is a row in `versions`, and `versions.id` grows in
commit order because ingest writes versions only while holding the store's write lock
(PostgreSQL advisory lock / SQLite BEGIN IMMEDIATE). A digest records the highest
version id it looked at (`version_upto`); the next one reads only versions above that
mark, through the primary key, never the whole stories table. A story found there is
due when its current text is not the text it was last mailed with (`digest_stories`).

A digest is claimed (rows written and committed) before it is sent and marked sent
only after the server accepted it; `digest_stories.text_hash` is unique, so a version
can be carried by one digest only.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, select, text
from sqlalchemy.exc import DBAPIError

from monitor.errors import StorageError
from monitor.models import Story
from monitor.storage.schema import digest_recipients, digest_stories, digests, stories, story_from_row, versions

if TYPE_CHECKING:
    from sqlalchemy import Engine

# A session-level advisory lock held by the one digest runner at work (PostgreSQL).
DIGEST_LOCK = 0x6D6F6E64  # "mond"


@dataclass(frozen=True)
class Revision:
    story: Story  # as it is now
    mailed: Story  # the text that went out last time


@dataclass(frozen=True)
class Selection:
    """The stories due for a digest: the ones shown in full, and how many more there are."""

    new: tuple[Story, ...] = ()
    revised: tuple[Revision, ...] = ()
    more_new: int = 0
    more_revised: int = 0

    @property
    def new_count(self) -> int:
        return len(self.new) + self.more_new

    @property
    def revised_count(self) -> int:
        return len(self.revised) + self.more_revised

    @property
    def empty(self) -> bool:
        return not (self.new_count or self.revised_count)


@dataclass(frozen=True)
class Outgoing:
    """A composed digest, as the outbox stores it."""

    message_id: str
    message: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class PendingDigest:
    id: int | None  # None for a preview that was never stored
    message_id: str
    message: str
    recipients: tuple[str, ...]  # the ones that have not accepted or refused it yet
    new_count: int
    revised_count: int
    attempts: int = 0


Compose = Callable[[Selection], Outgoing]


@dataclass(frozen=True)
class _Due:
    story_id: int
    uid: str
    current: str
    mailed: str | None
    updated: dt.datetime


class OutboxMixin:
    """Digest methods of `Storage` (which provides engine, dialect, _read, _write, _short, _error)."""

    engine: Engine
    dialect: str
    _read: Callable[[], Any]
    _write: Callable[..., Any]
    _error: Callable[[BaseException], StorageError]

    # -- one runner at a time ----------------------------------------------------

    @contextmanager
    def digest_runner_lock(self) -> Iterator[bool]:
        """Yield True while this process is the only digest runner, False if another is.

        Held for a whole run, SMTP included, so it is not the write lock (which would
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
        fd = os.open(f"{database}-digest.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the flock

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

    # -- what is due ---------------------------------------------------------------

    def claim_digest(self, now: dt.datetime, limit: int, compose: Compose, *,
                     preview: bool = False) -> PendingDigest | None:
        """Select what is due, compose it, and store it as a pending digest in one transaction.

        Returns None when nothing is due. With `preview`, nothing is written.
        """
        with (self._read() if preview else self._write()) as conn:
            upto, due = self._due(conn)
            if not due:
                return None
            selection = self._selection(conn, due, limit)
            out = compose(selection)
            if preview:
                return PendingDigest(None, out.message_id, out.message, out.recipients,
                                     selection.new_count, selection.revised_count)
            digest_id = conn.execute(digests.insert().values(
                message_id=out.message_id, status="pending", created=now, version_upto=upto,
                new_count=selection.new_count, revised_count=selection.revised_count,
                message=out.message, attempts=0,
            ).returning(digests.c.id)).scalar_one()
            shown = {s.uid for s in selection.new} | {r.story.uid for r in selection.revised}
            conn.execute(digest_stories.insert(), [
                {"digest_id": digest_id, "story_id": d.story_id, "text_hash": d.current,
                 "section": ("new" if d.mailed is None else "revised") if d.uid in shown else "more"}
                for d in due
            ])
            if out.recipients:
                conn.execute(digest_recipients.insert(), [
                    {"digest_id": digest_id, "address": a, "status": "pending", "updated": now}
                    for a in dict.fromkeys(out.recipients)
                ])
        return PendingDigest(digest_id, out.message_id, out.message, tuple(dict.fromkeys(out.recipients)),
                             selection.new_count, selection.revised_count)

    def baseline_digest(self, now: dt.datetime) -> int:
        """Record every story's current text as already mailed; return how many were due."""
        with self._write() as conn:
            upto, due = self._due(conn)
            if not due:
                return 0
            digest_id = conn.execute(digests.insert().values(
                status="baseline", created=now, sent=now, version_upto=upto,
                new_count=sum(d.mailed is None for d in due),
                revised_count=sum(d.mailed is not None for d in due), attempts=0,
            ).returning(digests.c.id)).scalar_one()
            conn.execute(digest_stories.insert(), [
                {"digest_id": digest_id, "story_id": d.story_id, "text_hash": d.current, "section": "baseline"}
                for d in due
            ])
        return len(due)

    def _due(self, conn: Connection) -> tuple[int, list[_Due]]:
        """The version mark to store, and the stories whose current text was not mailed."""
        since = conn.execute(select(func.coalesce(func.max(digests.c.version_upto), 0))).scalar_one()
        upto = conn.execute(select(func.coalesce(func.max(versions.c.id), 0))).scalar_one()
        if upto <= since:
            return since, []
        touched = select(versions.c.story_id).where(versions.c.id > since).distinct().subquery()
        last = (select(digest_stories.c.story_id, func.max(digest_stories.c.digest_id).label("d"))
                .where(digest_stories.c.story_id.in_(select(touched.c.story_id)))
                .group_by(digest_stories.c.story_id).subquery())
        mailed = dict(conn.execute(
            select(digest_stories.c.story_id, digest_stories.c.text_hash)
            .join(last, and_(digest_stories.c.story_id == last.c.story_id, digest_stories.c.digest_id == last.c.d))
        ).all())
        rows = conn.execute(select(stories.c.id, stories.c.uid, stories.c.current_hash, stories.c.updated)
                            .join(touched, touched.c.story_id == stories.c.id))
        due = [_Due(sid, uid, current, mailed.get(sid), updated) for sid, uid, current, updated in rows
               if mailed.get(sid) != current]
        # Newest first: with a backlog larger than `limit`, the newest are shown in full.
        due.sort(key=lambda d: (d.updated, d.story_id), reverse=True)
        return upto, due

    def _selection(self, conn: Connection, due: list[_Due], limit: int) -> Selection:
        shown, rest = due[:limit], due[limit:]
        current = self._stories_by_hash(conn, [d.current for d in shown])
        before = self._stories_by_hash(conn, [d.mailed for d in shown if d.mailed is not None])
        new = tuple(current[d.current] for d in shown if d.mailed is None)
        revised = tuple(Revision(current[d.current], before[d.mailed]) for d in shown if d.mailed is not None)
        return Selection(new=new, revised=revised,
                         more_new=sum(d.mailed is None for d in rest),
                         more_revised=sum(d.mailed is not None for d in rest))

    def _stories_by_hash(self, conn: Connection, hashes: list[str]) -> dict[str, Story]:
        if not hashes:
            return {}
        query = (select(versions.c.text_hash, stories.c.uid, versions.c.kind, versions.c.headline,
                        versions.c.paragraphs, versions.c.published, stories.c.first_seen, stories.c.updated)
                 .join(stories, stories.c.id == versions.c.story_id)
                 .where(versions.c.text_hash.in_(hashes)))
        return {row[0]: story_from_row(row[1:]) for row in conn.execute(query)}

    # -- sending -------------------------------------------------------------------

    def pending_digests(self) -> list[PendingDigest]:
        """Digests claimed but not yet accepted for every recipient, oldest first."""
        with self._read() as conn:
            rows = conn.execute(select(digests.c.id, digests.c.message_id, digests.c.message,
                                       digests.c.new_count, digests.c.revised_count, digests.c.attempts)
                                .where(digests.c.status == "pending").order_by(digests.c.id)).all()
            waiting: dict[int, list[str]] = {}
            query = (select(digest_recipients.c.digest_id, digest_recipients.c.address)
                     .where(digest_recipients.c.digest_id.in_([r.id for r in rows]),
                            digest_recipients.c.status == "pending")
                     .order_by(digest_recipients.c.address))
            for digest_id, address in conn.execute(query):
                waiting.setdefault(digest_id, []).append(address)
        return [PendingDigest(r.id, r.message_id, r.message, tuple(waiting.get(r.id, ())),
                              r.new_count, r.revised_count, r.attempts) for r in rows]

    def record_delivery(self, digest_id: int, now: dt.datetime, *, accepted: tuple[str, ...],
                        refused: dict[str, str], everyone: bool = False) -> bool:
        """Record what the server took; return True when the digest is now sent.

        `everyone` (a local Maildir delivery) marks every waiting recipient as accepted.
        """
        with self._write() as conn:
            waiting = digest_recipients.c.digest_id == digest_id
            if everyone:
                conn.execute(digest_recipients.update().where(waiting, digest_recipients.c.status == "pending")
                             .values(status="accepted", updated=now))
            for address in accepted:
                conn.execute(digest_recipients.update().where(waiting, digest_recipients.c.address == address)
                             .values(status="accepted", reply=None, updated=now))
            for address, reply in refused.items():
                conn.execute(digest_recipients.update().where(waiting, digest_recipients.c.address == address)
                             .values(status="refused", reply=reply, updated=now))
            left = conn.execute(select(func.count()).select_from(digest_recipients)
                                .where(waiting, digest_recipients.c.status == "pending")).scalar_one()
            values: dict[str, Any] = {"attempts": digests.c.attempts + 1, "last_error": None}
            if not left:
                values.update(status="sent", sent=now)
            conn.execute(digests.update().where(digests.c.id == digest_id).values(**values))
        return not left

    def record_failure(self, digest_id: int, error: str) -> None:
        """Count a failed attempt; the digest stays pending."""
        with self._write() as conn:
            conn.execute(digests.update().where(digests.c.id == digest_id)
                         .values(attempts=digests.c.attempts + 1, last_error=error[:1000]))

    def digest_history(self) -> list[dict[str, Any]]:
        """Every digest with its stories (uid, text hash, section) and recipients, oldest first."""
        with self._read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(digests).order_by(digests.c.id))]
            carried = conn.execute(select(digest_stories.c.digest_id, stories.c.uid, digest_stories.c.text_hash,
                                          digest_stories.c.section)
                                   .join(stories, stories.c.id == digest_stories.c.story_id)).all()
            people = conn.execute(select(digest_recipients)).all()
        for row in rows:
            row["stories"] = sorted((uid, h, s) for d, uid, h, s in carried if d == row["id"])
            row["recipients"] = {p.address: (p.status, p.reply) for p in people if p.digest_id == row["id"]}
        return rows

