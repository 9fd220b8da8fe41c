"""The HTML pages for people: the listing (front page and older pages) and each story's history. Pure.

Everything that comes from a bulletin (and the configured title) goes through
`esc`, so a bulletin can never put live markup on the page. Links are relative, so
the pages work under whatever host and port a proxy or compose file puts in front.
The listing is in the feed's order (latest change first) and shows that date first,
so the order is visible; the story's own date follows it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from monitor.escape import escape_html
from monitor.feed import diff_of, story_path
from monitor.models import SearchResults, Story, Version

esc = escape_html
# Every version of a story is on its history page, so its diffs are not cut short.
HISTORY_DIFF_WORDS = 2000

STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.6rem;margin-bottom:.2rem}
.sub{margin:0 0 1.5rem}
.sub a{background:#f26522;color:#fff;padding:.2rem .6rem;border-radius:.3rem;text-decoration:none;margin-right:.4rem}
ol{list-style:none;padding:0}
li{margin:.6rem 0;padding:.4rem 0;border-bottom:1px solid #eee}
.when{color:#666;font-size:.9rem;display:block}
.empty{color:#666}
.pages{display:flex;justify-content:space-between;margin:1rem 0}
.version{border-top:1px solid #ddd;margin-top:1.5rem;padding-top:.5rem}
.diff{background:#f7f7f7;padding:.4rem .6rem;border-radius:.3rem}
del{color:#a00}
ins{color:#060;text-decoration:none;border-bottom:1px solid #060}
.sub small a{background:none;color:#06c;padding:0;text-decoration:underline}
form.search{display:flex;gap:.4rem;margin:0 0 1rem}
form.search input{flex:1;font:inherit;padding:.3rem .5rem}
form.search button{font:inherit}
.snip{margin:.2rem 0;color:#333}
mark{background:#ffe28a;padding:0 .1rem}
.note{color:#a04000;font-size:.9rem}
"""


@dataclass(frozen=True)
class Links:
    """The site's paths (from the publisher) as seen from the site root."""

    feed: str
    corrections: str
    opml: str = "feeds.opml"
    topics: tuple[str, ...] = ()  # the topic names, in config order (their pages are topics/<name>)


def _stamp(when: dt.datetime) -> str:
    """A time as shown, with its machine-readable twin: the two always say the same."""
    when = when.astimezone(dt.UTC)
    return f'<time datetime="{when.strftime("%Y-%m-%dT%H:%MZ")}">{when:%Y-%m-%d %H:%M} UTC</time>'


def _day(day: dt.date) -> str:
    return f'<time datetime="{day.isoformat()}">{day:%-d %B %Y}</time>'


def when(story: Story) -> str:
    """The latest change (the listing's order), then the story's own date."""
    what = "corrected" if story.updated > story.first_seen else "added"
    own = f" · dated {_day(story.published)}" if story.published else ""
    return f'<span class="when">{what} {_stamp(story.updated)}{own}</span>'


def _document(title: str, body: str, root: str, feed_title: str, links: Links, *, q: str = "",
              feeds: str = "") -> str:
    """A page; `feeds` is more <link rel=alternate> markup (a topic's or a search's feed)."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title>"
        f'<link rel="alternate" type="application/atom+xml" title="{esc(feed_title)}" '
        f'href="{root}{links.feed}">'
        f'<link rel="alternate" type="application/atom+xml" title="{esc(feed_title)}: corrections" '
        f'href="{root}{links.corrections}">{feeds}'
        f"<style>{STYLE}</style></head>\n<body>\n{search_box(root, q)}\n{body}\n</body></html>\n"
    )


def search_box(root: str, q: str = "") -> str:
    """On every page: a GET form to /search (the query comes back in the box, escaped)."""
    return (f'<form class="search" action="{root}search" method="get" role="search">'
            f'<input type="search" name="q" value="{esc(q)}" placeholder="Search stories" '
            'aria-label="Search stories"><button type="submit">Search</button></form>')


def listing(feed_title: str, stories: Sequence[Story], links: Links, *, page: int = 1, older: bool = False,
            generated: dt.datetime | None = None) -> str:
    """A page of the listing: the front page (page 1) or an older one, at /pages/<n>."""
    root = "" if page == 1 else "../"
    items = "\n".join(f'<li><a href="{root}{esc(story_path(s.uid))}">{esc(s.title)}</a>{when(s)}</li>'
                      for s in stories)
    listing = f"<ol>\n{items}\n</ol>" if stories else '<p class="empty">No stories yet.</p>'
    newer = "" if page == 1 else f'<a href="{root}{"" if page == 2 else f"pages/{page - 1}"}">← Newer stories</a>'
    older_link = f'<a href="{root}pages/{page + 1}">Older stories →</a>' if older else ""
    nav = f'<nav class="pages"><span>{newer}</span><span>{older_link}</span></nav>' if newer or older_link else ""
    stamp = f"<p><small>Updated {_stamp(generated)}.</small></p>" if generated else ""
    heading = "Latest stories" if page == 1 else f"Older stories (page {page})"
    body = (
        f"<h1>{esc(feed_title)}</h1>\n"
        f'<p class="sub"><a href="{root}{links.feed}">Subscribe (Atom feed)</a>'
        f'<a href="{root}{links.corrections}">Corrections (Atom feed)</a>'
        f'<small><a href="{root}{links.opml}">all feeds (OPML)</a></small></p>\n'
        f"{_topic_list(links) if page == 1 else ''}<h2>{heading}</h2>\n{listing}\n{nav}\n{stamp}"
    )
    title = esc(feed_title) if page == 1 else f"{esc(feed_title)}: page {page}"
    return _document(title, body, root, feed_title, links)


def history(feed_title: str, story: Story, versions: Sequence[Version], links: Links) -> str:
    """A story: its current text, then every earlier text, newest first, each with when it
    was first seen, the bulletin that carried it, and what changed from the one before."""
    parts = [f'<p><a href="../">{esc(feed_title)}</a></p>',
             f"<article><h1>{esc(story.title)}</h1>\n{when(story)}",
             "\n".join(f"<p>{esc(p)}</p>" for p in story.paragraphs), "</article>"]
    if len(versions) > 1:
        parts.append(f"<h2>History: {len(versions)} versions</h2>")
    for n, version in enumerate(versions):
        parts.append(_version(len(versions) - n, version, versions[n + 1] if n + 1 < len(versions) else None,
                              current=n == 0, alone=len(versions) == 1))
    return _document(f"{esc(story.title)} - {esc(feed_title)}", "\n".join(parts), "../", feed_title, links)


def _version(number: int, version: Version, before: Version | None, *, current: bool, alone: bool) -> str:
    label = "current version" if current else "earlier version"
    meta = (f"first seen {_stamp(version.seen_at)} in <code>{esc(version.bulletin)}</code>")
    if alone:
        return f'<p class="when">{meta}</p>'
    head = f'<section class="version" id="v{number}"><h3>Version {number} ({label})</h3><p class="when">{meta}</p>'
    if before is None:
        change = "<p>The first text seen.</p>"
    else:
        change = (f'<p class="diff"><strong>Changes from version {number - 1}:</strong> '
                  f"{diff_of(before, version, limit=HISTORY_DIFF_WORDS)}</p>")
    text = "" if current else (f"<details><summary>Full text of version {number}</summary>"
                               + "".join(f"<p>{esc(p)}</p>" for p in version.paragraphs) + "</details>")
    return f"{head}\n{change}\n{text}</section>"


def unsubscribe_page(feed_title: str, subscriber: str | None, links: Links, *, done: bool) -> str:
    """The page behind a digest's unsubscribe link: a button that POSTs (RFC 8058), or the result.

    A GET never unsubscribes (mail scanners follow links); only the POST does.
    """
    if subscriber is None:
        body = "<h1>Link not valid</h1>\n<p>This unsubscribe link is not valid (altered or not ours).</p>"
    elif done:
        body = (f"<h1>Unsubscribed</h1>\n<p>{esc(subscriber)} gets no more digests from "
                f"{esc(feed_title)}.</p>")
    else:
        body = (f"<h1>Unsubscribe</h1>\n<p>Stop the digests from {esc(feed_title)} to {esc(subscriber)}?</p>\n"
                '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">Unsubscribe</button></form>')
    return _document(f"Unsubscribe - {esc(feed_title)}", body, "../", feed_title, links)
def _topic_list(links: Links) -> str:
    if not links.topics:
        return ""
    items = "".join(f'<li><a href="topics/{esc(name)}">{esc(name)}</a></li>' for name in links.topics)
    return f'<h2>Topics</h2>\n<ul class="topics">{items}</ul>\n'


def search_page(feed_title: str, q: str, results: SearchResults, links: Links, *, page: int, per_page: int,
                snippets: Sequence[str]) -> str:
    """The results of one search, one page of them; `snippets` are ready HTML (see snippet_html)."""
    title = esc(feed_title)
    atom = f"search.atom?q={quote(q)}"
    if not results.hits:
        what = "Type words to search for." if not q.strip() else "No story matches."
        listing = f'<p class="empty">{what}</p>'
    else:
        items = []
        for hit, snip in zip(results.hits, snippets, strict=True):
            s = hit.story
            note = "" if hit.current else '<span class="note">found in an earlier version</span>'
            items.append(f'<li><a href="{esc(story_path(s.uid))}">{esc(s.title)}</a>{when(s)}'
                         f'<p class="snip">{snip}</p>{note}</li>')
        listing = "<ol>\n" + "\n".join(items) + "\n</ol>"
    count = f"{results.total:,}{'+' if results.capped else ''}"
    summary = (f"<p>{count} {'story matches' if results.total == 1 else 'stories match'}. "
               f'<a href="{esc(atom)}">Subscribe to this search (Atom feed)</a></p>') if q.strip() else ""
    nav_links = []
    if page > 1:
        nav_links.append(f'<a rel="prev" href="{esc(_search_url(q, page - 1))}">Previous results</a>')
    if page * per_page < results.total:
        nav_links.append(f'<a rel="next" href="{esc(_search_url(q, page + 1))}">More results</a>')
    nav = f'<nav class="pages">{"".join(nav_links)}</nav>' if nav_links else ""
    body = (f'<p><a href="./">{title}</a></p>\n<h1>Search</h1>\n{summary}\n{listing}\n{nav}')
    feed_link = (f'<link rel="alternate" type="application/atom+xml" title="{esc(feed_title)}: search" '
                 f'href="{esc(atom)}">') if q.strip() else ""
    return _document(f"Search: {esc(q[:100])} - {title}", body, "", feed_title, links, q=q, feeds=feed_link)


def topic_page(feed_title: str, name: str, q: str, stories: Sequence[Story], links: Links) -> str:
    """A topic: its query, a subscribe link to its feed, its newest stories."""
    items = "\n".join(
        f'<li><a href="../{esc(story_path(s.uid))}">{esc(s.title)}</a>{when(s)}</li>' for s in stories)
    listing = f"<ol>\n{items}\n</ol>" if stories else '<p class="empty">No story matches yet.</p>'
    body = (f'<p><a href="../">{esc(feed_title)}</a></p>\n<h1>Topic: {esc(name)}</h1>\n'
            f"<p>Stories matching <code>{esc(q)}</code>.</p>\n"
            f'<p class="sub"><a href="{esc(name)}.atom">Subscribe (Atom feed)</a></p>\n{listing}')
    feed_link = (f'<link rel="alternate" type="application/atom+xml" title="{esc(feed_title)}: {esc(name)}" '
                 f'href="{esc(name)}.atom">')
    return _document(f"{esc(name)} - {esc(feed_title)}", body, "../", feed_title, links, feeds=feed_link)


def snippet_html(runs: Sequence[tuple[str, bool]]) -> str:
    """A snippet (monitor.query.snippet): escaped first, then the matches marked."""
    return "".join(f"<mark>{esc(text)}</mark>" if hit else esc(text) for text, hit in runs)


def _search_url(q: str, page: int) -> str:
    return f"search?q={quote(q)}" + (f"&page={page}" if page > 1 else "")
