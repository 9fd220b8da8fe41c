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

from monitor.escape import escape_html
from monitor.feed import diff_of, story_path
from monitor.models import Story, Version

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
"""


@dataclass(frozen=True)
class Links:
    """The site's paths (from the publisher) as seen from the site root."""

    feed: str
    corrections: str


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


def _document(title: str, body: str, root: str, feed_title: str, links: Links) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title>"
        f'<link rel="alternate" type="application/atom+xml" title="{esc(feed_title)}" '
        f'href="{root}{links.feed}">'
        f'<link rel="alternate" type="application/atom+xml" title="{esc(feed_title)}: corrections" '
        f'href="{root}{links.corrections}">'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


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
        f'<a href="{root}{links.corrections}">Corrections (Atom feed)</a></p>\n'
        f"<h2>{heading}</h2>\n{listing}\n{nav}\n{stamp}"
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
