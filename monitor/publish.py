"""The one publisher: which documents exist, rendering each once per change, files and HTTP.

Documents, by URL path under `[feed] base_url`:

* `feed.atom`: one entry per story (its stable id), the newest `max_entries`; a revised
  story's content opens with its correction note. With `[feed] corrections_in_main` the
  corrections of those stories are entries here too. Links to the newest archive.
* `corrections.atom`: one entry per revision, each with an id of its own, so that every
  reader shows a correction as a new unread item.
* `archive/<first>-<last>.atom`: RFC 5005 archives of the timeline (every text that
  became a story's current one, numbered in the order written), `max_entries` per
  document: `archive/1-100.atom`, `archive/101-200.atom`, ... The timeline only grows at
  its end and only full archives are published, so the document a URL names never
  changes: cacheable. Since an archive is no longer than the subscription document, the
  texts after the newest archive are all in the latter: together they reach every story.
* `/`, `pages/<n>`: the listing, in the feed's order; `stories/<uuid>`: a story's history.
* `topics/<name>.atom` and `topics/<name>`: each topic's feed (also a file) and page, the
  newest `max_entries` stories matching its query; `feeds.opml`: every feed, for one import.
* `search?q=...` and `search.atom?q=...`: a search's results and its feed, made on request
  (monitor.topics renders both).

A further feed (a search, a topic) is one more entry of `Publisher.feeds` (and of `files`
if it is also written to disk); a document made on request is one more case of `on_request`
(and of `ON_REQUEST`, the paths the HTTP server hands it).

The scan (`monitor scan`), the service's refresh and `monitor feed` all come here. The
feed files (`[feed] path` and `corrections.atom` beside it) are written atomically; the
service also gets a `Snapshot` of the feeds and the front page, which its HTTP server
answers from memory, and the documents made on request through `on_request` (kept until
the next change); `listeners` are told which paths changed after each publication (the
hook for pushing to a WebSub hub).

Importing this module is cheap (the idle scan asks it which files to check); the
renderers (feedgen, lxml) are imported when something is rendered.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.config import Settings
from monitor.errors import PublishError

if TYPE_CHECKING:
    from monitor.documents import Document, Snapshot
    from monitor.models import Event
    from monitor.page import Links
    from monitor.storage import Storage

log = logging.getLogger(__name__)

FEED = "feed.atom"
CORRECTIONS = "corrections.atom"
ARCHIVE = "archive/{}-{}.atom"  # the first and last timeline positions it holds
ARCHIVE_CACHE = "public, max-age=86400"  # stable once published; a day bounds a base_url change
ATOM_TYPE = "application/atom+xml; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
OPML_TYPE = "text/x-opml; charset=utf-8"
OPML = "feeds.opml"
# Documents made on request (histories, older pages, archives) kept until the next change.
CACHED_ON_REQUEST = 512
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_ARCHIVE_PATH = re.compile(r"/archive/([1-9][0-9]{0,11})-([1-9][0-9]{0,11})\.atom")
_PAGE_PATH = re.compile(r"/pages/([2-9]|[1-9][0-9]{1,8})")
_STORY_PATH = re.compile(r"/stories/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
_SEARCH_PATH = re.compile(r"/search(\.atom)?")
# Every path `on_request` may answer, for the HTTP server's routes.
ON_REQUEST = re.compile("|".join(p.pattern for p in (_ARCHIVE_PATH, _PAGE_PATH, _STORY_PATH, _SEARCH_PATH)))


def files(settings: Settings) -> dict[str, Path]:
    """The feeds that are also files, by URL path: the main feed at `[feed] path`, the others beside it."""
    main = settings.feed.path
    on_disk = {"/" + FEED: main, "/" + CORRECTIONS: main.with_name(CORRECTIONS)}
    for topic in settings.topics:
        path = topic_feed_path(topic.name)
        on_disk["/" + path] = main.parent / path
    return on_disk


def topic_feed_path(name: str) -> str:
    return f"topics/{name}.atom"


Listener = Callable[[frozenset[str]], None]


class Publisher:
    def __init__(self, settings: Settings, storage: Storage | Callable[[], Storage]) -> None:
        """`storage`, or a function that gives the store of the moment (the service's keeper
        reopens a store that was deleted or replaced)."""
        self.settings = settings
        self._storage = storage
        # Called with the URL paths whose bytes changed, after the files are written.
        self.listeners: list[Listener] = []
        self._key: tuple[int, dt.datetime | None] | None = None
        self._published: dict[str, bytes] = {}
        self.story_count = 0  # as of the last refresh
        self._archived = 0  # full archives at the last publication
        self._newest = EPOCH
        self._snapshot: Snapshot | None = None
        self._made: dict[str, Document | None] = {}  # on request, since the last change

    @property
    def storage(self) -> Storage:
        return self._storage() if callable(self._storage) else self._storage

    # -- the documents ------------------------------------------------------------

    def main_feed(self) -> bytes:
        from monitor import feed

        fs = self.settings.feed
        events = self.storage.current_events(fs.max_entries)
        entries = [feed.story_entry(fs.base_url, e) for e in events]
        if fs.corrections_in_main and events:
            oldest = min(e.version.seen_at for e in events)
            entries += [feed.correction_entry(fs.base_url, e, in_main=True)
                        for e in self.storage.corrections(fs.max_entries) if e.version.seen_at >= oldest]
        full = self.storage.event_count() // fs.max_entries
        links = [("prev-archive", self.archive_path(full)), ("next", self.archive_path(full))] if full else []
        return feed.document(fs, entries, path=FEED, links=links)

    def archive_path(self, n: int) -> str:
        size = self.settings.feed.max_entries
        return ARCHIVE.format((n - 1) * size + 1, n * size)

    def corrections_feed(self) -> bytes:
        from monitor import feed

        fs = self.settings.feed
        entries = [feed.correction_entry(fs.base_url, e) for e in self.storage.corrections(fs.max_entries)]
        return feed.document(fs, entries, path=CORRECTIONS, title="corrections")

    def archive(self, n: int) -> Document | None:
        """Archive `n` (from 1, oldest), once it is full; None before."""
        from monitor import feed
        from monitor.documents import Document

        size = self.settings.feed.max_entries
        events = self.storage.events((n - 1) * size, size) if n >= 1 else []
        if len(events) < size:
            return None
        latest: dict[str, Event] = {e.uid: e for e in events}  # a story's last state in this slice
        fs = self.settings.feed
        links = [("current", FEED)]
        if n > 1:
            links += [("prev-archive", self.archive_path(n - 1)), ("next", self.archive_path(n - 1))]
        body = feed.document(fs, [feed.story_entry(fs.base_url, e) for e in latest.values()],
                             path=self.archive_path(n), title=f"archive {n}", links=links, archive=True)
        return Document.build(body, ATOM_TYPE, events[-1].version.seen_at, cache_control=ARCHIVE_CACHE)

    def listing(self, n: int) -> bytes | None:
        """Page `n` of the listing (1 is the front page); None past the last."""
        from monitor import page

        size = self.settings.feed.max_entries
        stories = self.storage.stories_page(size + 1, (n - 1) * size)
        if n > 1 and not stories:
            return None
        newest = stories[0].updated if stories else None
        return page.listing(self.settings.feed.title, stories[:size], links(self.settings), page=n,
                            older=len(stories) > size, generated=newest).encode()

    def history(self, key: str) -> bytes | None:
        from monitor import page

        found = self.storage.history(f"urn:uuid:{key}")
        if found is None:
            return None
        story, versions = found
        return page.history(self.settings.feed.title, story, versions, links(self.settings)).encode()

    # -- publishing ---------------------------------------------------------------------

    def feeds(self) -> dict[str, bytes]:
        """The feeds rendered at every change, by URL path (one more feed is one more line)."""
        from monitor import topics

        feeds = {"/" + FEED: self.main_feed(), "/" + CORRECTIONS: self.corrections_feed()}
        for topic in self.settings.topics:
            feeds["/" + topic_feed_path(topic.name)] = topics.topic_feed(self.settings, self.storage,
                                                                         topic_feed_path(topic.name), topic)
        return feeds

    def pages(self) -> dict[str, tuple[str, bytes]]:
        """The other documents rendered at every change, with their content types: the front
        page, each topic's page and the OPML list of every feed."""
        from monitor import topics

        front = self.listing(1)
        assert front is not None
        nav = links(self.settings)
        pages = {"/": (HTML_TYPE, front), "/" + OPML: (OPML_TYPE, topics.opml_list(self.settings, nav))}
        for topic in self.settings.topics:
            pages[f"/topics/{topic.name}"] = (HTML_TYPE, topics.topic_page(self.settings, self.storage, topic, nav))
        return pages

    def write_files(self, *, force: bool = False) -> frozenset[str]:
        """`monitor scan`: write the feed files if the store changed since they were
        written (or they are missing or older than the config); the paths that changed."""
        from monitor.idle import feed_is_stale

        if not force and not feed_is_stale(self.settings, self.storage):
            return frozenset()
        return self._write(self.feeds())

    def refresh(self, *, force: bool = False) -> Snapshot:
        """The service: render everything again if the store changed (here or in another
        instance), write the files, and return the snapshot to serve."""
        key = (self.storage.story_count(), self.storage.last_change())
        self.story_count = key[0]
        if self._snapshot is not None and not force and key == self._key:
            return self._snapshot
        from monitor.documents import Document, Snapshot

        feeds, pages = self.feeds(), self.pages()
        self._newest = key[1] or EPOCH
        fixed = {path: Document.build(data, ATOM_TYPE, self._newest) for path, data in feeds.items()}
        fixed.update((path, Document.build(data, ctype, self._newest)) for path, (ctype, data) in pages.items())
        full = self.storage.event_count() // self.settings.feed.max_entries
        new_archives = frozenset("/" + self.archive_path(n) for n in range(self._archived + 1, full + 1))
        self._archived = full
        self._snapshot = Snapshot(documents=fixed)
        self._made = {}
        self._write(feeds, also=new_archives)
        # Only once the files are written: after a PublishError the next refresh writes
        # them again, though the store has not changed since.
        self._key = key
        return self._snapshot

    @property
    def snapshot(self) -> Snapshot | None:
        """What the last refresh rendered, its files written or not."""
        return self._snapshot

    def last_published(self) -> Snapshot:
        """While the store cannot be read (damaged at start): the feed files the last good
        publication wrote, so readers keep what they had (an empty feed where there is none)."""
        from monitor import feed, page, topics
        from monitor.documents import Document, Snapshot

        documents = {}
        for path, file in files(self.settings).items():
            try:
                data = file.read_bytes()
            except OSError:
                data = feed.document(self.settings.feed, [], path=path.lstrip("/"))
            documents[path] = Document.build(data, ATOM_TYPE, EPOCH)
        nav = links(self.settings)
        documents["/"] = Document.build(page.listing(self.settings.feed.title, [], nav).encode(), HTML_TYPE, EPOCH)
        documents["/" + OPML] = Document.build(topics.opml_list(self.settings, nav), OPML_TYPE, EPOCH)
        return Snapshot(documents=documents)

    def _write(self, documents: Mapping[str, bytes], *, also: frozenset[str] = frozenset()) -> frozenset[str]:
        from monitor.feed import write_atomically

        on_disk = files(self.settings)
        # A file is what the last publication wrote, also one of an earlier process (`monitor
        # scan`, a restart): compared with it, an unchanged feed is no change to tell listeners.
        written: dict[str, bytes | None] = {}
        for name, data in documents.items():
            path = on_disk.get(name)
            if path is None:
                continue  # served only
            try:
                try:
                    written[name] = path.read_bytes()
                except FileNotFoundError:
                    written[name] = None
                if written[name] == data:
                    path.touch()  # current as of now: the idle scan compares the times
                    continue
                write_atomically(path, data)
            except OSError as exc:  # a write's own error (ENOSPC) names no file: this one does
                raise PublishError(f"cannot write the feed file {path}: {exc.strerror or exc}; "
                                   "the stories are stored, and the next pass writes it again") from None
        changed = frozenset(p for p, data in documents.items()
                            if self._published.get(p, written.get(p)) != data) | also
        self._published.update(documents)
        for listener in self.listeners:
            try:
                listener(changed)
            except Exception:  # a listener (a hub ping) never stops publishing
                log.exception("publish listener failed for %s", sorted(changed))
        return changed

    def on_request(self, path: str, query: str = "") -> Document | None:
        """A document made when asked for (`ON_REQUEST`), kept until the next change; None if
        there is none at that path. `query` is the request's query string, which only a
        search reads. Called from the HTTP server's worker threads."""
        key = path
        if _SEARCH_PATH.fullmatch(path):
            from monitor.topics import search_params

            q, page_no = search_params(query)
            key = f"{path}?{page_no}&{q}"  # one entry however the same search is spelled
        if key in self._made:
            return self._made[key]
        doc = self._make(path, key)
        made = self._made  # the one of this publication, even if a refresh swaps it meanwhile
        if len(made) >= CACHED_ON_REQUEST:
            made.clear()
        made[key] = doc
        return doc

    def _make(self, path: str, key: str) -> Document | None:
        from monitor.documents import Document

        if match := _SEARCH_PATH.fullmatch(path):
            return self._search(atom=match.group(1) is not None, key=key)
        if match := _ARCHIVE_PATH.fullmatch(path):
            first, last = int(match.group(1)), int(match.group(2))
            size = self.settings.feed.max_entries
            # Only the ranges this config cuts: any other would be a second URL for the same entries.
            if last % size or first != last - size + 1:
                return None
            return self.archive(last // size)
        if match := _PAGE_PATH.fullmatch(path):
            body = self.listing(int(match.group(1)))
        elif match := _STORY_PATH.fullmatch(path):
            body = self.history(match.group(1))
        else:
            return None
        return None if body is None else Document.build(body, HTML_TYPE, self._newest)

    def _search(self, *, atom: bool, key: str) -> Document:
        from monitor import topics
        from monitor.documents import Document

        number, _, q = key.partition("?")[2].partition("&")
        if atom:
            return Document.build(topics.search_feed(self.settings, self.storage, q), ATOM_TYPE, self._newest)
        body = topics.search_page(self.settings, self.storage, q, int(number), links(self.settings))
        return Document.build(body, HTML_TYPE, self._newest)


def links(settings: Settings | None = None) -> Links:
    """The site's feed paths, for pages; without settings (the unsubscribe page) no topic list."""
    from monitor.page import Links

    names = tuple(t.name for t in settings.topics) if settings else ()
    return Links(feed=FEED, corrections=CORRECTIONS, opml=OPML, topics=names)
