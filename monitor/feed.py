"""Atom bytes from entries (RFC 4287, archives of RFC 5005), with feedgen. Pure apart from the library.

Which documents exist and what goes in each is the publisher's (monitor.publish); this
module turns the store's stories and their versions into entries, and entries into bytes.

feedgen's sharp edges (STANDARDS.md): it wants aware datetimes, it refuses characters
XML 1.0 forbids, add_entry() prepends unless told otherwise, and `updated` defaults
to now. Every value here comes from the stories, so the same store gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from feedgen.feed import FeedGenerator
from lxml import etree

from monitor.config import FeedSettings
from monitor.escape import escape_html, xml_safe
from monitor.models import Event, Story, Version
from monitor.worddiff import DIFF_WORDS, diff_html, word_diff

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Atom requires a non-empty title and author name, and feedgen raises without them: a
# title made only of characters XML cannot carry (U+FFFE in a bulletin, say) would
# otherwise stop every later scan from publishing.
UNTITLED = "(untitled)"
ATOM_NS = "http://www.w3.org/2005/Atom"
HISTORY_NS = "http://purl.org/syndication/history/1.0"  # RFC 5005
CORRECTION_NAMESPACE = uuid.UUID("3d0f4c2e-8a51-4f6b-b1d7-2c9e6a5f0b13")
# In a feed that carries corrections beside the stories (`corrections_in_main`), a
# correction's entry is a microsecond newer than its story's: it reads first, and ingest
# keeps versions two microseconds apart so that no two entries share an `updated`.
CORRECTION_OFFSET = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Entry:
    """One Atom entry, ready to write: every value comes from the store."""

    id: str
    title: str
    link: str
    content: str  # HTML, bulletin text escaped
    updated: dt.datetime
    published: dt.datetime | None = None


def feed_id(base_url: str, path: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, base_url + path)}"


def story_key(uid: str) -> str:
    """The uuid part of a story id, which names its page."""
    return uid.rsplit(":", 1)[-1]


def story_path(uid: str) -> str:
    """The path of a story's page (its history), relative to the site root."""
    return f"stories/{story_key(uid)}"


def story_url(base_url: str, uid: str) -> str:
    return base_url + story_path(uid)


def content_html(paragraphs: Sequence[str]) -> str:
    """One <p> per paragraph; bulletin text is always escaped, never live markup."""
    return "".join(f"<p>{escape_html(p)}</p>" for p in paragraphs)


def diff_of(old: Version, new: Version, *, limit: int = DIFF_WORDS) -> str:
    """The word diff from one text of a story to the next, as HTML (<del>/<ins>, escaped).
    An article's title is part of its text: a corrected title shows too."""
    return diff_html(word_diff(_words(old), _words(new), limit=limit))


def _words(version: Version) -> str:
    head = (version.title,) if version.kind == "article" else ()
    return "\n".join((*head, *version.paragraphs))


def correction_note(event: Event) -> str:
    """"Corrected <date>:" and what changed, for the top of a revised story's content."""
    assert event.previous is not None
    day = event.version.seen_at.date().isoformat()
    return f'<p class="correction"><strong>Corrected {day}:</strong> {diff_of(event.previous, event.version)}</p>'


def story_entry(base_url: str, event: Event) -> Entry:
    """A story's entry (its stable id) as it stood at this event; a revision opens with its note."""
    v = event.version
    note = correction_note(event) if event.previous is not None else ""
    return Entry(id=event.uid, title=v.title, link=story_url(base_url, event.uid),
                 content=note + content_html(v.paragraphs), updated=v.seen_at, published=_day(v.published))


def correction_entry(base_url: str, event: Event, *, in_main: bool = False) -> Entry:
    """A revision as an entry of its own: a new id, so every reader shows it as unread."""
    v = event.version
    entry_id = f"urn:uuid:{uuid.uuid5(CORRECTION_NAMESPACE, event.key)}"
    history = story_url(base_url, event.uid)
    link = f'<p><a href="{escape_html(history)}">Every version of this story</a></p>'
    updated = v.seen_at + CORRECTION_OFFSET if in_main else v.seen_at
    return Entry(id=entry_id, title=f"Correction: {v.title}", link=history,
                 content=correction_note(event) + content_html(v.paragraphs) + link, updated=updated,
                 published=updated)


def plain_entry(base_url: str, story: Story) -> Entry:
    """A story's entry as it stands now, without a correction note (a topic's or a search's feed)."""
    return Entry(id=story.uid, title=story.title, link=story_url(base_url, story.uid),
                 content=content_html(story.paragraphs), updated=story.updated, published=_day(story.published))


def _day(day: dt.date | None) -> dt.datetime | None:
    return None if day is None else dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def document(settings: FeedSettings, entries: Sequence[Entry], *, path: str, title: str | None = None,
             links: Sequence[tuple[str, str]] = (), archive: bool = False, page: str = "") -> bytes:
    """An Atom feed document at `path` (under base_url) of these entries, newest first.

    `links` are more (rel, path) links, such as RFC 5005's prev-archive; `archive` marks
    the document as an RFC 5005 archive (its content never changes); `page` is the HTML
    page it belongs to (a topic's), the front page by default."""
    ordered = sorted(entries, key=lambda e: (e.updated, e.id), reverse=True)
    base = settings.base_url
    fg = FeedGenerator()
    fg.id(feed_id(base, path))
    name = xml_safe(settings.title).strip() or FeedSettings._field_defaults["title"]
    fg.title(f"{name}: {xml_safe(title)}" if title else name)  # a search's title is its query
    fg.author({"name": xml_safe(settings.author).strip() or FeedSettings._field_defaults["author"]})
    fg.link(href=base + path, rel="self", type="application/atom+xml")
    fg.link(href=base + page, rel="alternate", type="text/html")
    if settings.hub:
        fg.link(href=settings.hub, rel="hub")  # WebSub discovery (section 4)
    fg.updated(max((e.updated for e in ordered), default=EPOCH))
    for item in ordered:
        entry = fg.add_entry(order="append")
        entry.id(item.id)
        entry.title(xml_safe(item.title).strip() or UNTITLED)
        entry.link(href=item.link, rel="alternate")
        entry.content(xml_safe(item.content), type="html")
        entry.updated(item.updated)
        if item.published is not None:
            entry.published(item.published)
    if not links and not archive:
        return fg.atom_str(pretty=True, encoding="UTF-8")
    return _extend(fg.atom_str(pretty=False, encoding="UTF-8"), base, links, archive)


def _extend(data: bytes, base: str, links: Sequence[tuple[str, str]], archive: bool) -> bytes:
    """The links feedgen refuses (it knows five rel values) and RFC 5005's archive marker."""
    root = etree.fromstring(data)
    at = max(i for i, child in enumerate(root) if child.tag == f"{{{ATOM_NS}}}link") + 1
    extra = [etree.Element(f"{{{ATOM_NS}}}link", rel=rel, href=base + href, type="application/atom+xml")
             for rel, href in links]
    if archive:
        extra.insert(0, etree.Element(f"{{{HISTORY_NS}}}archive", nsmap={"fh": HISTORY_NS}))
    root[at:at] = extra
    etree.indent(root, space="  ")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


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
