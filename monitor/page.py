"""The HTML pages for people: the front page and one page per story. Pure.

Everything that comes from a bulletin (and the configured title) goes through
`esc`, so a bulletin can never put live markup on the page. Links are relative, so
the pages work under whatever host and port a proxy or compose file puts in front.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from urllib.parse import quote

from monitor.feed import escape_html, story_path
from monitor.models import SearchResults, Story

STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.6rem;margin-bottom:.2rem}
.sub{margin:0 0 1.5rem}
.sub a{background:#f26522;color:#fff;padding:.2rem .6rem;border-radius:.3rem;text-decoration:none}
ol{list-style:none;padding:0}
li{margin:.6rem 0;padding:.4rem 0;border-bottom:1px solid #eee}
time{color:#666;font-size:.9rem;display:block}
.empty{color:#666}
.sub small a{background:none;color:#06c;padding:0;text-decoration:underline}
form.search{display:flex;gap:.4rem;margin:0 0 1rem}
form.search input{flex:1;font:inherit;padding:.3rem .5rem}
form.search button{font:inherit}
.snip{margin:.2rem 0;color:#333}
mark{background:#ffe28a;padding:0 .1rem}
.note{color:#a04000;font-size:.9rem}
nav.pages a{margin-right:1rem}
"""


esc = escape_html

def _date(story: Story) -> str:
    shown = story.published.isoformat() if story.published else story.updated.date().isoformat()
    revised = story.updated > story.first_seen
    note = f", revised {story.updated:%Y-%m-%d %H:%M} UTC" if revised else ""
    return f'<time datetime="{story.updated.isoformat()}">{esc(shown)}{note}</time>'


def _document(title: str, body: str, root: str, *, q: str = "", feeds: str = "") -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title>"
        f'<link rel="alternate" type="application/atom+xml" title="{title}" href="{root}feed.atom">{feeds}'
        f"<style>{STYLE}</style></head>\n<body>\n{search_box(root, q)}\n{body}\n</body></html>\n"
    )


def search_box(root: str, q: str = "") -> str:
    """On every page: a GET form to /search (the query comes back in the box, escaped)."""
    return (f'<form class="search" action="{root}search" method="get" role="search">'
            f'<input type="search" name="q" value="{esc(q)}" placeholder="Search stories" '
            'aria-label="Search stories"><button type="submit">Search</button></form>')


def index(feed_title: str, stories: Sequence[Story], *, generated: dt.datetime | None = None,
          topics: Sequence[str] = ()) -> str:
    """The front page: title, subscribe link, the topics, the latest stories (newest first)."""
    title = esc(feed_title)
    items = "\n".join(
        f'<li><a href="{esc(story_path(s.uid))}">{esc(s.title)}</a>{_date(s)}</li>' for s in stories
    )
    listing = f"<ol>\n{items}\n</ol>" if stories else '<p class="empty">No stories yet.</p>'
    stamp = f"<p><small>Updated {generated:%Y-%m-%d %H:%M} UTC.</small></p>" if generated else ""
    topic_list = "".join(f'<li><a href="topics/{esc(name)}">{esc(name)}</a></li>' for name in topics)
    topic_html = f'<h2>Topics</h2>\n<ul class="topics">{topic_list}</ul>\n' if topics else ""
    body = (
        f"<h1>{title}</h1>\n"
        '<p class="sub"><a href="feed.atom">Subscribe (Atom feed)</a> '
        '<small><a href="feeds.opml">all feeds (OPML)</a></small></p>\n'
        f"{topic_html}<h2>Latest stories</h2>\n{listing}\n{stamp}"
    )
    return _document(title, body, "")


def story_page(feed_title: str, story: Story) -> str:
    """One story: its title, date and every paragraph of its current text."""
    paragraphs = "\n".join(f"<p>{esc(p)}</p>" for p in story.paragraphs)
    body = (
        f'<p><a href="../">{esc(feed_title)}</a></p>\n'
        f"<article><h1>{esc(story.title)}</h1>\n{_date(story)}\n{paragraphs}\n</article>"
    )
    return _document(f"{esc(story.title)} - {esc(feed_title)}", body, "../")


def search_page(feed_title: str, q: str, results: SearchResults, *, page: int, per_page: int,
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
            items.append(f'<li><a href="{esc(story_path(s.uid))}">{esc(s.title)}</a>{_date(s)}'
                         f'<p class="snip">{snip}</p>{note}</li>')
        listing = "<ol>\n" + "\n".join(items) + "\n</ol>"
    count = f"{results.total:,}{'+' if results.capped else ''}"
    summary = (f"<p>{count} {'story matches' if results.total == 1 else 'stories match'}. "
               f'<a href="{esc(atom)}">Subscribe to this search (Atom feed)</a></p>') if q.strip() else ""
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="{esc(_search_url(q, page - 1))}">Previous results</a>')
    if page * per_page < results.total:
        links.append(f'<a rel="next" href="{esc(_search_url(q, page + 1))}">More results</a>')
    nav = f'<nav class="pages">{"".join(links)}</nav>' if links else ""
    body = (f'<p><a href="./">{title}</a></p>\n<h1>Search</h1>\n{summary}\n{listing}\n{nav}')
    feed_link = (f'<link rel="alternate" type="application/atom+xml" title="{esc(feed_title)}: search" '
                 f'href="{esc(atom)}">') if q.strip() else ""
    return _document(f"Search: {esc(q[:100])} - {title}", body, "", q=q, feeds=feed_link)


def topic_page(feed_title: str, name: str, q: str, stories: Sequence[Story]) -> str:
    """A topic: its query, a subscribe link to its feed, its newest stories."""
    items = "\n".join(
        f'<li><a href="../{esc(story_path(s.uid))}">{esc(s.title)}</a>{_date(s)}</li>' for s in stories)
    listing = f"<ol>\n{items}\n</ol>" if stories else '<p class="empty">No story matches yet.</p>'
    body = (f'<p><a href="../">{esc(feed_title)}</a></p>\n<h1>Topic: {esc(name)}</h1>\n'
            f"<p>Stories matching <code>{esc(q)}</code>.</p>\n"
            f'<p class="sub"><a href="{esc(name)}.atom">Subscribe (Atom feed)</a></p>\n{listing}')
    feed_link = (f'<link rel="alternate" type="application/atom+xml" title="{esc(feed_title)}: {esc(name)}" '
                 f'href="{esc(name)}.atom">')
    return _document(f"{esc(name)} - {esc(feed_title)}", body, "../", feeds=feed_link)


def snippet_html(runs: Sequence[tuple[str, bool]]) -> str:
    """A snippet (monitor.query.snippet): escaped first, then the matches marked."""
    return "".join(f"<mark>{esc(text)}</mark>" if hit else esc(text) for text, hit in runs)


def _search_url(q: str, page: int) -> str:
    return f"search?q={quote(q)}" + (f"&page={page}" if page > 1 else "")
