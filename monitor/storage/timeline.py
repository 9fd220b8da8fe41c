"""What the publisher reads: stories in the feed's order, the timeline of versions, a story's history.

One order everywhere: stories by `updated` (their current version's time), newest first,
then by id; `updated` is distinct for every story (migration 0005, ingest's ticks), so
the id only breaks ties in stores that a clock made equal. The timeline is every version
that became a story's current text, numbered in the order written (`versions.seq`):
it only grows at its end, so a range of it never changes (feed archives), and every
read here costs what it returns, whatever the size of the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, and_, func, select, text

from monitor.models import Event, Story, Version
from monitor.storage.schema import stories, story_from_row, story_query, versions

# The corrections, said as ix_versions_corrections says them (`WHERE correction`): SQLite
# uses a partial index only for a query whose terms it can see imply the index's, and
# SQLAlchemy's `versions.c.correction` is `correction = 1` there, which it cannot. Said
# so, the corrections feed scanned the timeline back to its start whenever the store held
# fewer than a feed's worth of corrections: 0.3 s at 1,000,000 stories.
A_CORRECTION = text("versions.correction")
_VERSION_COLUMNS = (versions.c.id, versions.c.story_id, versions.c.text_hash, versions.c.kind, versions.c.headline,
                    versions.c.paragraphs, versions.c.published, versions.c.seen_at, versions.c.key_path,
                    versions.c.seq)


class TimelineMixin:
    """The reading methods of `Storage` for feeds and pages (which provides _read)."""

    _read: Callable[[], AbstractContextManager[Connection]]

    def stories_page(self, limit: int, offset: int = 0) -> list[Story]:
        """`limit` stories from position `offset` in the feed's order (newest first)."""
        query = (story_query().order_by(stories.c.updated.desc(), stories.c.id.desc())
                 .limit(limit).offset(offset))
        with self._read() as conn:
            return [story_from_row(row) for row in conn.execute(query)]

    def latest_stories(self, limit: int) -> list[Story]:
        """The `limit` most recently updated stories, newest first."""
        return self.stories_page(limit)

    def current_events(self, limit: int) -> list[Event]:
        """The newest `limit` stories as feed entries: current text and the text it replaced."""
        query = (select(stories.c.uid, *_VERSION_COLUMNS)
                 .join(versions, versions.c.text_hash == stories.c.current_hash)
                 .order_by(stories.c.updated.desc(), stories.c.id.desc()).limit(limit))
        with self._read() as conn:
            return _events(conn, conn.execute(query).all())

    def event_count(self) -> int:
        with self._read() as conn:
            return conn.execute(select(func.max(versions.c.seq))).scalar_one() or 0

    def events(self, offset: int, limit: int) -> list[Event]:
        """Timeline entries `offset` + 1 to `offset` + `limit`, oldest first."""
        query = (select(stories.c.uid, *_VERSION_COLUMNS).join(stories, stories.c.id == versions.c.story_id)
                 .where(versions.c.seq > offset, versions.c.seq <= offset + limit).order_by(versions.c.seq))
        with self._read() as conn:
            return _events(conn, conn.execute(query).all())

    def corrections(self, limit: int) -> list[Event]:
        """The newest `limit` revisions (timeline entries that are not a story's first text)."""
        query = (select(stories.c.uid, *_VERSION_COLUMNS).join(stories, stories.c.id == versions.c.story_id)
                 .where(A_CORRECTION)
                 .order_by(versions.c.seen_at.desc(), versions.c.id.desc()).limit(limit))
        with self._read() as conn:
            return _events(conn, conn.execute(query).all())

    def history(self, uid: str) -> tuple[Story, list[Version]] | None:
        """A story and every text it has had, newest bulletin first (the order that decides
        which text is current)."""
        with self._read() as conn:
            row = conn.execute(story_query().where(stories.c.uid == uid)).first()
            if row is None:
                return None
            query = (select(*_VERSION_COLUMNS).join(stories, stories.c.id == versions.c.story_id)
                     .where(stories.c.uid == uid)
                     .order_by(versions.c.key_mtime_ns.desc(), versions.c.key_path.desc(), versions.c.id.desc()))
            return story_from_row(row), [_version(r) for r in conn.execute(query)]


def _events(conn: Connection, rows: Sequence[Any]) -> list[Event]:
    """Events for (uid, *version columns) rows, each with the text that was current just before it."""
    before = _previous(conn, [(r.story_id, r.seq) for r in rows])
    return [Event(uid=r.uid, version=_version(r[1:]), previous=before.get((r.story_id, r.seq)),
                  key=r.text_hash) for r in rows]


def _previous(conn: Connection, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], Version]:
    """For each (story, timeline position): the story's text at the position before it. The
    timeline, not the times: `monitor rebuild` keeps the times readers saw, which need not
    follow the order in which the rebuilt store was written."""
    if not wanted:
        return {}
    p = versions.alias("p")
    found: dict[tuple[int, int], Version] = {}
    for chunk in _chunks(sorted(set(wanted)), 200):
        ids = sorted({sid for sid, _ in chunk})
        rows = conn.execute(select(*(p.c[c.name] for c in _VERSION_COLUMNS))
                            .where(and_(p.c.story_id.in_(ids), p.c.seq.is_not(None)))
                            .order_by(p.c.story_id, p.c.seq)).all()
        by_story: dict[int, list[Any]] = {}
        for r in rows:
            by_story.setdefault(r.story_id, []).append(r)
        for sid, at in chunk:
            earlier = [r for r in by_story.get(sid, ()) if at is not None and r.seq < at]
            if earlier:
                found[(sid, at)] = _version(earlier[-1])
    return found


def _version(row: Any) -> Version:
    _, _, _, kind, headline, paragraphs, published, seen_at, path, _ = row
    return Version(kind=kind, title=headline or "", paragraphs=tuple(json.loads(paragraphs)), published=published,
                   seen_at=seen_at, bulletin=path)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
