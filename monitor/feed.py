"""Atom bytes from stories (RFC 4287), with feedgen. Pure apart from the library.

feedgen's sharp edges (STANDARDS.md): it wants aware datetimes, it refuses characters
XML 1.0 forbids, add_entry() prepends unless told otherwise, and `updated` defaults
to now. Every value here comes from the stories, so the same store gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from feedgen.feed import FeedGenerator

from monitor.config import FeedSettings
from monitor.models import Story

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Atom requires a non-empty title and author name, and feedgen raises without them: a
# title made only of characters XML cannot carry (U+FFFE in a bulletin, say) would
# otherwise stop every later scan from publishing.
UNTITLED = "(untitled)"
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """Drop the characters XML 1.0 cannot carry at all."""
    return _NOT_XML.sub("", text)


def escape_html(text: str) -> str:
    """Bulletin text for any HTML (feed content, pages, mail): shown as text, never markup."""
    return html.escape(xml_safe(text), quote=True)


def feed_id(settings: FeedSettings) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, settings.base_url + 'feed.atom')}"


def story_key(uid: str) -> str:
    """The uuid part of a story id, which names its page."""
    return uid.rsplit(":", 1)[-1]


def story_path(uid: str) -> str:
    """The path of a story's page, relative to the site root."""
    return f"stories/{story_key(uid)}"


def story_url(base_url: str, uid: str) -> str:
    return base_url + story_path(uid)


def content_html(paragraphs: Sequence[str]) -> str:
    """One <p> per paragraph; bulletin text is always escaped, never live markup."""
    return "".join(f"<p>{escape_html(p)}</p>" for p in paragraphs)


def render(settings: FeedSettings, stories: Sequence[Story]) -> bytes:
    """The feed document for these stories, newest `updated` first."""
    ordered = sorted(stories, key=lambda s: (s.updated, s.uid), reverse=True)[: settings.max_entries]
    fg = FeedGenerator()
    fg.id(feed_id(settings))
    fg.title(xml_safe(settings.title).strip() or FeedSettings.title)
    fg.author({"name": xml_safe(settings.author).strip() or FeedSettings.author})
    fg.link(href=settings.base_url + "feed.atom", rel="self", type="application/atom+xml")
    fg.link(href=settings.base_url, rel="alternate", type="text/html")
    if settings.hub:
        fg.link(href=settings.hub, rel="hub")  # WebSub discovery (section 4)
    fg.updated(max((s.updated for s in ordered), default=EPOCH))
    for story in ordered:
        entry = fg.add_entry(order="append")
        entry.id(story.uid)
        entry.title(xml_safe(story.title).strip() or UNTITLED)
        entry.link(href=story_url(settings.base_url, story.uid), rel="alternate")
        entry.content(content_html(story.paragraphs), type="html")
        entry.updated(story.updated)
        if story.published is not None:
            entry.published(dt.datetime.combine(story.published, dt.time(), tzinfo=dt.UTC))
    return fg.atom_str(pretty=True, encoding="UTF-8")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` so that a reader sees the old bytes or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
