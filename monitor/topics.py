"""Topics and search at the edges: the documents topics add, and the answers to /search.

A topic is a named saved search from the config (`[[topics]]`): its feed
`/topics/<name>.atom` (also a file beside the main feed, `topics/<name>.atom`) and its
page `/topics/<name>` hold the newest `max_entries` matching stories, so they cost
what the main feed costs, not what the whole match costs. `/feeds.opml` lists every
feed. The rendering is pure (monitor.feed, monitor.page, monitor.opml); the store
answers the query (Storage.newest_matching, Storage.search).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from monitor import opml, page, query
from monitor.config import Settings
from monitor.feed import EPOCH, render, write_atomically

if TYPE_CHECKING:
    from monitor.storage import Storage

ATOM_TYPE = "application/atom+xml; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
OPML_TYPE = "text/x-opml; charset=utf-8"
PER_PAGE = 20
CORRECTIONS_PATH = "corrections.atom"  # the corrections feed (issue 13's publisher)


@dataclass(frozen=True)
class Document:
    """One rendered document: its type, bytes and newest change (Last-Modified)."""

    ctype: str
    body: bytes
    newest: dt.datetime = EPOCH


def topic_documents(settings: Settings, storage: Storage) -> dict[str, Document]:
    """PUBLISHER: every document topics add, by URL path, rendered once per change of the
    store. Today the service's refresh and the scan's feed-file publish call this; it is
    the one piece the publisher (monitor/publish.py) takes over."""
    feed = settings.feed
    docs: dict[str, Document] = {}
    for topic in settings.topics:
        stories = storage.newest_matching(query.parse(topic.query), feed.max_entries)
        newest = max((s.updated for s in stories), default=EPOCH)
        atom = render(feed, stories, path=f"topics/{topic.name}.atom", title=f"{feed.title}: {topic.name}",
                      page=f"topics/{topic.name}")
        docs[f"/topics/{topic.name}.atom"] = Document(ATOM_TYPE, atom, newest)
        html = page.topic_page(feed.title, topic.name, topic.query, stories).encode()
        docs[f"/topics/{topic.name}"] = Document(HTML_TYPE, html, newest)
    docs["/feeds.opml"] = Document(OPML_TYPE, opml.render(feed.title, feed_list(settings)))
    return docs


def feed_list(settings: Settings) -> list[tuple[str, str, str]]:
    """Every feed: (title, feed URL, page URL), the main feed first, then corrections, then topics."""
    base, title = settings.feed.base_url, settings.feed.title
    feeds = [(title, base + "feed.atom", base), (f"{title}: corrections", base + CORRECTIONS_PATH, base)]
    feeds += [(f"{title}: {t.name}", f"{base}topics/{t.name}.atom", f"{base}topics/{t.name}")
              for t in settings.topics]
    return feeds


def topic_file(settings: Settings, name: str) -> Path:
    return settings.feed.path.parent / "topics" / f"{name}.atom"


def write_topic_files(settings: Settings, docs: Mapping[str, Document]) -> None:
    """Each topic feed as a file beside the main feed, replaced atomically when it changed."""
    for topic in settings.topics:
        data = docs[f"/topics/{topic.name}.atom"].body
        path = topic_file(settings, topic.name)
        try:
            if path.read_bytes() == data:
                continue
        except FileNotFoundError:
            pass
        write_atomically(path, data)


def publish_topics(settings: Settings, storage: Storage) -> dict[str, Document]:
    """Render the topic documents and write the topic feed files; the documents, for HTTP."""
    docs = topic_documents(settings, storage)
    write_topic_files(settings, docs)
    return docs


# -- search: dynamic, one store read per request -------------------------------------------


def search_page(settings: Settings, storage: Storage, q: str, page_no: int) -> bytes:
    parsed = query.parse(q)
    page_no = max(1, page_no)
    results = storage.search(parsed, offset=(page_no - 1) * PER_PAGE, limit=PER_PAGE)
    snippets = [page.snippet_html(query.snippet(parsed, hit.matched)) for hit in results.hits]
    return page.search_page(settings.feed.title, q, results, page=page_no, per_page=PER_PAGE,
                            snippets=snippets).encode()


def search_feed(settings: Settings, storage: Storage, q: str) -> Document:
    """The search as a feed: its newest matching stories (a subscription follows new ones)."""
    feed = settings.feed
    stories = storage.newest_matching(query.parse(q), feed.max_entries)
    body = render(feed, stories, path=f"search.atom?q={quote(q)}", title=f"{feed.title}: search {q[:80]}",
                  page=f"search?q={quote(q)}")
    return Document(ATOM_TYPE, body, max((s.updated for s in stories), default=EPOCH))


def topic_counts(settings: Settings, storage: Storage) -> list[tuple[str, str, int]]:
    """(name, query, stories matching) of every topic, in config order (`monitor status`)."""
    return [(t.name, t.query, storage.match_count(query.parse(t.query))) for t in settings.topics]
