"""`monitor rebuild`: decide the whole drop folder again with the current rules, in a new store.

The new store is built beside the old one (SQLite: `monitor.db.rebuild`; PostgreSQL: the
schema `monitor_rebuild`) by the ordinary scan, so it holds exactly what a first
`monitor scan` of the folder would store today. Then
what the old store knows and the folder cannot tell is carried over (`plan`, pure):

* story ids: a story keeps the id the old store gave it when it still holds the text
  that created it there (ids are derived from that text, so in bulletin order they
  mostly come out equal anyway; this also covers a late copy of an old bulletin, and a
  change of the normalisation behind the text hash, as old texts are hashed again);
* the times a subscriber saw: first seen, and `updated` where the current text is the
  one the old store showed, so an unchanged story is not "updated" by the rebuild;
* the outbox: every message (per channel and subscriber) and baseline with the texts it
  delivered, matched by text, so what went out (or was baselined) is not sent again, and
  a pending message is retried with its own key and bytes; who unsubscribed stays so.

SQLite: the old file is held for the whole run (monitor/storage/rebuild.py), kept under
another name, and the new one renamed over it in one step. PostgreSQL: the new store is
built in a schema of its own and the schemas trade names in one transaction
(monitor/storage/rebuild_pg.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.config import Settings
from monitor.errors import ConfigError, MonitorError, StorageError
from monitor.identity import text_hash
from monitor.idle import Clock, utcnow
from monitor.models import Item, ScanReport
from monitor.rows import story_uid
from monitor.storage.outbox import START
from monitor.storage.schema import EVERYONE

if TYPE_CHECKING:
    from monitor.storage.rebuild import Adoption, NewStore, OldMessage, OldStore, OldStory, OldVersion

BASELINE_HINT = "the next digest carries every story (`monitor scan --baseline` marks them as mailed)"


@dataclass(frozen=True)
class Kept:
    """What the new store took over from the old one."""

    old_stories: int = 0
    ids_kept: int = 0
    merged: int = 0  # old stories whose texts now belong to a story that kept another id
    gone: int = 0  # old stories none of whose texts the new store has
    new_ids: int = 0  # stories of the new store under an id the old store did not have
    digests: int = 0  # messages and baselines (a subscriber's starting row is none)
    delivered: int = 0  # texts recorded as delivered in the new store
    not_found: int = 0  # texts the old outbox carried that the new store does not have


@dataclass(frozen=True)
class RebuildReport:
    scan: ScanReport
    kept: Kept
    problem: str | None  # why (part of) the old store could not be read
    stories_read: bool  # the old stories were read (False: only the digest part failed, or all)
    backup: str | None  # where the old store is kept: a file, or a PostgreSQL schema
    where: str

    def lines(self) -> list[str]:
        k = self.kept
        ids = (f"story ids {k.ids_kept} of {k.old_stories} ({k.merged} merged into another story, "
               f"{k.gone} no longer in the drop folder), {k.new_ids} new")
        if self.problem is None:
            kept = f"kept: {ids}; digest history: {k.digests} digests, {k.delivered} texts delivered, " \
                   f"{k.not_found} not found"
        elif self.stories_read:
            kept = f"kept: {ids}; digest history could not be kept: {self.problem}; {BASELINE_HINT}"
        else:
            kept = f"kept: nothing: {self.problem}; digest history could not be kept; {BASELINE_HINT}"
        old = f"old store: kept as {self.backup}" if self.backup else f"old store: none at {self.where}"
        return [kept, old]


def rebuild(settings: Settings, *, clock: Clock = utcnow) -> RebuildReport:
    """Build a new store from the drop folder, carry over what it keeps, swap it in."""
    if not settings.drop.folder.is_dir():
        raise ConfigError(settings.source, "[drop] folder", f"no such folder: {settings.drop.folder}")
    from monitor.storage.rebuild import sqlite_file

    path = sqlite_file(settings.state.database_url)
    result = _postgres(settings, clock) if path is None else _sqlite(settings, path, clock)
    _publish(settings)
    return result


def _sqlite(settings: Settings, path: Path, clock: Clock) -> RebuildReport:
    """Beside the file, then one rename; the old file is held locked all along."""
    from monitor.storage import Storage
    from monitor.storage import rebuild as files

    work = path.with_name(path.name + ".rebuild")
    with files.hold_old_store(path) as old:
        files.discard(work)  # what a killed rebuild left
        try:
            report, new = _build(settings, f"sqlite:///{work}", clock)
            adoption, kept, problem, stories_read = _carry_over(old, new)
            _refuse_empty(settings, new, kept)
            storage = Storage.open(f"sqlite:///{work}", upgrade=False)
            try:
                files.adopt(storage, adoption)
            finally:
                storage.close()
            files.seal(work)
        except BaseException:
            files.discard(work)
            raise
        old.release()
        backup = _backup_name(path, clock())
        had_old = files.swap(path, work, backup)
    return RebuildReport(report, kept, problem, stories_read, str(backup) if had_old else None, str(path))


def _postgres(settings: Settings, clock: Clock) -> RebuildReport:
    """In a schema of its own while the instances work on; swapped in by renaming the schemas."""
    from monitor.storage import Storage
    from monitor.storage.rebuild_pg import PgRebuild

    storage = Storage.open(settings.state.database_url, upgrade=False)
    try:
        pg = PgRebuild(storage)
        try:
            pg.prepare()
            outcome: list[tuple[Kept, str | None, bool]] = []
            try:
                report, new = _build(settings, pg.work_url(), clock)

                def carry(old: OldStore) -> Adoption:
                    adoption, kept, problem, stories_read = _carry_over(old, new)
                    _refuse_empty(settings, new, kept)
                    outcome.append((kept, problem, stories_read))
                    return adoption

                backup = pg.backup_name(clock())
                pg.swap(backup, carry)
            except BaseException:
                pg.discard()
                raise
            schema = pg.schema
        finally:
            pg.close()
    finally:
        storage.close()
    kept, problem, stories_read = outcome[0]
    return RebuildReport(report, kept, problem, stories_read, f"the schema {backup}", f"the schema {schema}")


def _build(settings: Settings, url: str, clock: Clock) -> tuple[ScanReport, NewStore]:
    """The new store, by the ordinary scan of the drop folder."""
    from monitor.scan import scan
    from monitor.storage import Storage
    from monitor.storage.rebuild import read_new

    with _quiet("monitor.storage.migrate", "monitor.scan"):
        storage = Storage.open(url)
        try:
            return scan(settings, storage, clock=clock), read_new(storage)
        finally:
            storage.close()


def _refuse_empty(settings: Settings, new: NewStore, kept: Kept) -> None:
    if not new.stories and kept.old_stories:
        raise MonitorError(f"rebuild: the drop folder {settings.drop.folder} gave no stories while "
                           f"the store holds {kept.old_stories}; nothing changed")


def _publish(settings: Settings) -> None:
    from monitor.publish import Publisher
    from monitor.storage import Storage

    storage = Storage.open(settings.state.database_url)
    publisher = Publisher(settings, storage)
    if settings.feed.hub:
        from monitor.notify import websub

        publisher.listeners.append(websub.listener(settings.feed))
    try:
        publisher.write_files(force=True)
    except OSError as exc:
        raise MonitorError(f"rebuild: the new store is in place, but the feed file {settings.feed.path} "
                           f"could not be written: {exc.strerror or exc}") from None
    finally:
        storage.close()


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Leave out the INFO lines of the build ("schema upgraded from empty", the scan's
    summary): the command prints its own summary once. Warnings (rejected files) stay."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        if not logger.isEnabledFor(logging.DEBUG):
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _carry_over(old: OldStore, new: NewStore) -> tuple[Adoption, Kept, str | None, bool]:
    """The plan from whatever of the old store can be read: all, the stories only, or nothing."""
    from monitor.storage.rebuild import Adoption

    if old.problem is not None:
        return Adoption(), Kept(new_ids=len(new.stories)), old.problem, False
    try:
        stories = old.stories()
        ids = plan_ids(stories, old.versions(), new)
    except StorageError as exc:
        return Adoption(), Kept(new_ids=len(new.stories)), str(exc), False
    try:
        outbox = old.messages()
        gone = old.unsubscribed()
    except StorageError as exc:
        adoption, kept = plan(stories, ids, new, [])
        return adoption, kept, str(exc), True
    adoption, kept = plan(stories, ids, new, outbox)
    adoption = dataclasses.replace(adoption, unsubscribed=gone)
    return adoption, kept, None, True


def _backup_name(path: Path, now: dt.datetime) -> Path:
    base = path.with_name(f"{path.name}.before-rebuild-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}")
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


# -- the plan (pure) -----------------------------------------------------------------


@dataclass
class Matches:
    """Old texts found in the new store, and which new story each old story points to."""

    moved: dict[str, str] = field(default_factory=dict)  # old text hash: new text hash
    seen_at: dict[str, dt.datetime] = field(default_factory=dict)  # new text hash: first seen
    first_seen: dict[int, dt.datetime] = field(default_factory=dict)  # new story id: first seen
    # Old story id: (0 if by the text that created it else 1, new version id, new story id).
    anchor: dict[int, tuple[int, int, int]] = field(default_factory=dict)


def plan_ids(stories: dict[int, OldStory], versions: Iterable[OldVersion], new: NewStore,
             rehash: Callable[[Item], str] = text_hash) -> Matches:
    """Find every old version in the new store: by its stored hash, else by its text hashed
    with today's rules (a change of normalisation changes hashes, not texts)."""
    m = Matches()
    for v in versions:
        h = v.text_hash if v.text_hash in new.versions else rehash(v.item)
        hit = new.versions.get(h)
        if hit is None:
            continue  # its bulletin is gone from the folder, or is read differently now
        vid, sid = hit
        m.moved[v.text_hash] = h
        m.seen_at[h] = min(m.seen_at.get(h, v.seen_at), v.seen_at)
        m.first_seen[sid] = min(m.first_seen.get(sid, v.seen_at), v.seen_at)
        story = stories.get(v.story_id)
        if story is None:
            continue
        # The text that created the old story decides where its id goes; any other of
        # its texts only when that one is gone.
        ref = (0 if story_uid(v.text_hash) == story.uid else 1, vid, sid)
        if v.story_id not in m.anchor or ref < m.anchor[v.story_id]:
            m.anchor[v.story_id] = ref
    return m


def plan(stories: dict[int, OldStory], m: Matches, new: NewStore,
         outbox: list[OldMessage]) -> tuple[Adoption, Kept]:
    """Which new story keeps which old id, the times it keeps, and the outbox in new terms."""
    from monitor.storage.rebuild import Adoption

    claims: dict[int, list[tuple[int, int, int]]] = {}
    for old_id, (tier, vid, sid) in m.anchor.items():
        claims.setdefault(sid, []).append((tier, vid, old_id))
    uids: dict[int, str] = {}
    for sid, refs in claims.items():
        natural = new.stories[sid][0]
        if all(stories[old_id].uid != natural for *_, old_id in refs):
            # Another text creates the story now (a late copy, or rehashed texts): it keeps
            # the old id; of two old stories the new rules merged, the one whose text came first.
            uids[sid] = stories[min(refs)[2]].uid
    # An id is never given twice (ids come from text hashes, so this guards the odd case).
    natural_ids = {uid for sid, (uid, _) in new.stories.items() if sid not in uids}
    uids = {sid: uid for sid, uid in uids.items() if uid not in natural_ids}
    final = {sid: uids.get(sid, uid) for sid, (uid, _) in new.stories.items()}

    by_uid = {s.uid: s for s in stories.values()}
    updated = {}
    for sid, (_, current) in new.stories.items():
        before = by_uid.get(final[sid])
        if before is not None and m.moved.get(before.current_hash) == current:
            updated[sid] = before.updated  # the same text as before: not an update for a reader
    carried, delivered, not_found = _outbox(m, new, outbox)
    marks = _version_marks(new, carried)
    old_ids = set(by_uid)
    kept_ids = old_ids & set(final.values())
    kept = Kept(old_stories=len(stories), ids_kept=len(kept_ids), gone=len(stories) - len(m.anchor),
                merged=len(m.anchor) - sum(stories[o].uid in kept_ids for o in m.anchor),
                new_ids=sum(uid not in old_ids for uid in final.values()),
                digests=sum(message.row.get("status") != START for message, _ in carried),
                delivered=delivered, not_found=not_found)
    return Adoption(uids=uids, first_seen=m.first_seen, updated=updated, seen_at=m.seen_at,
                    messages=[(message, rows, mark) for (message, rows), mark in zip(carried, marks, strict=True)]
                    ), kept


def _version_marks(new: NewStore, carried: list[tuple[OldMessage, list[tuple[int, str, str]]]]) -> list[int]:
    """The `version_upto` of each message: where its subscriber's next one starts reading.

    A subscriber's mark is the highest of its own rows and everyone's (the baselines), and
    old marks count old version ids, so the last row of each (channel, subscriber) gets
    the new mark and the others 0. The next message must see every story whose current
    text is not the last one delivered to that subscriber (by it or by a baseline: news
    after its last message, a story the new rules split off), and need see no other: the
    mark sits just below the newest version of the earliest such story, or at the top
    when there is none. A subscriber that never got anything keeps 0."""
    newest: dict[int, int] = {}
    for vid, sid in new.versions.values():
        newest[sid] = max(newest.get(sid, 0), vid)
    last: dict[tuple[str, str], int] = {}
    for n, (message, _) in enumerate(carried):
        last[message.key] = n
    marks = [0] * len(carried)
    for key, n in last.items():
        delivered: dict[int, str] = {}
        for message, rows in carried[:n + 1]:
            if message.key in (key, (EVERYONE, EVERYONE)):
                for sid, h, _section in rows:
                    delivered[sid] = h  # in outbox order: the last one that carried the story wins
        due = [newest[sid] for sid, (_, current) in new.stories.items() if delivered.get(sid) != current]
        marks[n] = min(due) - 1 if due else max(newest.values(), default=0)
    return marks


def _outbox(m: Matches, new: NewStore, outbox: list[OldMessage]
            ) -> tuple[list[tuple[OldMessage, list[tuple[int, str, str]]]], int, int]:
    """Each old message with the texts it delivered as (new story id, text hash, section)."""
    current = {sid: h for sid, (_, h) in new.stories.items()}
    used: set[tuple[str, str, str]] = set()  # (channel, subscriber, text hash): delivered once each
    carried = []
    delivered = not_found = 0
    for message in outbox:
        rows: dict[int, tuple[str, str]] = {}
        for old_hash, section in message.texts:
            h = m.moved.get(old_hash)
            if h is None or (*message.key, h) in used:
                not_found += h is None
                continue
            sid = new.versions[h][1]
            # Two texts of one message in one story (merged by the new rules): the current
            # one is what the next message compares against.
            if sid not in rows or h == current[sid]:
                rows[sid] = (h, section)
        used.update((*message.key, h) for h, _ in rows.values())
        delivered += len(rows)
        carried.append((message, [(sid, h, section) for sid, (h, section) in rows.items()]))
    return carried, delivered, not_found
