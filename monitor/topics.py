"""What topics and search add to the publisher's documents (monitor.publish), rendered here.

A topic is a named saved search from the config (`[[topics]]`): its feed
`/topics/<name>.atom` (also a file beside the main feed, `topics/<name>.atom`) and its
page `/topics/<name>` hold the newest `max_entries` matching stories, so they cost
what the main feed costs, not what the whole match costs. `/feeds.opml` lists every
feed. `/search` and `/search.atom` are made on request. The rendering is pure
(monitor.feed, monitor.page, monitor.opml); the store answers the query
(Storage.newest_matching, Storage.search).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote

from monitor import feed, opml, page, query
from monitor.config import Settings, TopicSettings

if TYPE_CHECKING:
    from monitor.storage import Storage

PER_PAGE = 20


def topic_feed(settings: Settings, storage: Storage, path: str, topic: TopicSettings) -> bytes:
    """A topic's feed at `path`: its newest `max_entries` matching stories."""
    fs = settings.feed
    stories = storage.newest_matching(query.parse(topic.query), fs.max_entries)
    return feed.document(fs, [feed.plain_entry(fs.base_url, s) for s in stories], path=path, title=topic.name,
                         page=f"topics/{topic.name}")


def topic_page(settings: Settings, storage: Storage, topic: TopicSettings, links: page.Links) -> bytes:
    stories = storage.newest_matching(query.parse(topic.query), settings.feed.max_entries)
    return page.topic_page(settings.feed.title, topic.name, topic.query, stories, links).encode()


def feed_list(settings: Settings, links: page.Links) -> list[tuple[str, str, str]]:
    """Every feed: (title, feed URL, page URL), the main feed first, then corrections, then topics."""
    base, title = settings.feed.base_url, settings.feed.title
    feeds = [(title, base + links.feed, base), (f"{title}: corrections", base + links.corrections, base)]
    feeds += [(f"{title}: {name}", f"{base}topics/{name}.atom", f"{base}topics/{name}") for name in links.topics]
    return feeds


def opml_list(settings: Settings, links: page.Links) -> bytes:
    return opml.render(settings.feed.title, feed_list(settings, links))


# -- search: on request, one store read per request -----------------------------------------


def search_params(raw: str) -> tuple[str, int]:
    """`q` and `page` from a query string; anything malformed counts as absent, never an error."""
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, max_num_fields=50, errors="replace")
    except ValueError:
        return "", 1
    values = dict(reversed(pairs))  # the first of each name
    number = values.get("page", "")
    return values.get("q", ""), int(number) if number.isdigit() and 0 < len(number) < 6 and int(number) > 0 else 1


def search_page(settings: Settings, storage: Storage, q: str, page_no: int, links: page.Links) -> bytes:
    parsed = query.parse(q)
    page_no = max(1, page_no)
    results = storage.search(parsed, offset=(page_no - 1) * PER_PAGE, limit=PER_PAGE)
    snippets = [page.snippet_html(query.snippet(parsed, hit.matched)) for hit in results.hits]
    return page.search_page(settings.feed.title, q, results, links, page=page_no, per_page=PER_PAGE,
                            snippets=snippets).encode()


def search_feed(settings: Settings, storage: Storage, q: str) -> bytes:
    """The search as a feed: its newest matching stories (a subscription follows new ones)."""
    fs = settings.feed
    stories = storage.newest_matching(query.parse(q), fs.max_entries)
    return feed.document(fs, [feed.plain_entry(fs.base_url, s) for s in stories], path=f"search.atom?q={quote(q)}",
                         title=f"search {q[:80]}", page=f"search?q={quote(q)}")


def topic_counts(settings: Settings, storage: Storage) -> list[tuple[str, str, int]]:
    """(name, query, stories matching) of every topic, in config order (`monitor status`)."""
    return [(t.name, t.query, storage.match_count(query.parse(t.query))) for t in settings.topics]
