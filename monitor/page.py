"""The HTML pages for people: the front page and one page per story. Pure.

Everything that comes from a bulletin (and the configured title) goes through
`esc`, so a bulletin can never put live markup on the page. Links are relative, so
the pages work under whatever host and port a proxy or compose file puts in front.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from monitor.feed import escape_html, story_path
from monitor.models import Story

STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.6rem;margin-bottom:.2rem}
.sub{margin:0 0 1.5rem}
.sub a{background:#f26522;color:#fff;padding:.2rem .6rem;border-radius:.3rem;text-decoration:none}
ol{list-style:none;padding:0}
li{margin:.6rem 0;padding:.4rem 0;border-bottom:1px solid #eee}
time{color:#666;font-size:.9rem;display:block}
.empty{color:#666}
"""


esc = escape_html

def _date(story: Story) -> str:
    shown = story.published.isoformat() if story.published else story.updated.date().isoformat()
    revised = story.updated > story.first_seen
    note = f", revised {story.updated:%Y-%m-%d %H:%M} UTC" if revised else ""
    return f'<time datetime="{story.updated.isoformat()}">{esc(shown)}{note}</time>'


def _document(title: str, body: str, root: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title>"
        f'<link rel="alternate" type="application/atom+xml" title="{title}" href="{root}feed.atom">'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def index(feed_title: str, stories: Sequence[Story], *, generated: dt.datetime | None = None) -> str:
    """The front page: title, subscribe link, the latest stories (newest first)."""
    title = esc(feed_title)
    items = "\n".join(
        f'<li><a href="{esc(story_path(s.uid))}">{esc(s.title)}</a>{_date(s)}</li>' for s in stories
    )
    listing = f"<ol>\n{items}\n</ol>" if stories else '<p class="empty">No stories yet.</p>'
    stamp = f"<p><small>Updated {generated:%Y-%m-%d %H:%M} UTC.</small></p>" if generated else ""
    body = (
        f"<h1>{title}</h1>\n"
        '<p class="sub"><a href="feed.atom">Subscribe (Atom feed)</a></p>\n'
        f"<h2>Latest stories</h2>\n{listing}\n{stamp}"
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


def unsubscribe_page(feed_title: str, subscriber: str | None, *, done: bool) -> str:
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
    return _document(f"Unsubscribe - {esc(feed_title)}", body, "../")
