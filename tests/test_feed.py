"""feed.document() and the entries: valid Atom from stories, stable bytes, escaping, order, notes."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import feedparser
import pytest
from conftest import render_stories, validate_atom
from lxml import etree

from monitor.config import FeedSettings
from monitor.feed import content_html, story_url, write_atomically, xml_safe
from monitor.models import Story

A = "{http://www.w3.org/2005/Atom}"
SETTINGS = FeedSettings(title="Test bulletins", base_url="https://news.example.org/monitor/",
                        max_entries=10, author="Press office")
T0 = dt.datetime(2025, 3, 5, 9, 30, 0, 123456, tzinfo=dt.UTC)


def story(n: int, *, paragraphs: tuple[str, ...] = ("A paragraph.",), title: str | None = None,
          published: dt.date | None = dt.date(2025, 3, 4), updated: dt.datetime | None = None) -> Story:
    return Story(uid=f"urn:uuid:00000000-0000-5000-8000-{n:012d}", kind="brief", title=title or f"Story {n}",
                 paragraphs=paragraphs, published=published, first_seen=T0,
                 updated=updated or T0 + dt.timedelta(seconds=n))


def render(settings: FeedSettings, stories: list[Story]) -> bytes:
    return render_stories(settings, stories)


def root_of(data: bytes) -> etree._Element:
    return etree.fromstring(data)


def test_feed_metadata() -> None:
    data = render(SETTINGS, [story(1), story(2)])
    validate_atom(data)
    root = root_of(data)
    assert root.findtext(A + "id").startswith(("urn:uuid:", "tag:"))
    assert root.findtext(A + "title") == "Test bulletins"
    assert root.find(A + "author").findtext(A + "name") == "Press office"
    self_links = [link for link in root.findall(A + "link") if link.get("rel") == "self"]
    assert [link.get("href") for link in self_links] == ["https://news.example.org/monitor/feed.atom"]
    # the feed's updated is the newest story's, not the time of rendering
    assert dt.datetime.fromisoformat(root.findtext(A + "updated")) == T0 + dt.timedelta(seconds=2)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")


def test_empty_store_gives_a_valid_feed() -> None:
    data = render(SETTINGS, [])
    assert validate_atom(data) == []
    assert render(SETTINGS, []) == data


def test_entry_fields() -> None:
    s = story(1, paragraphs=("First paragraph.", "Second paragraph."), title="The title",
              published=dt.date(2024, 12, 11))
    (entry,) = validate_atom(render(SETTINGS, [s]))
    assert entry["id"] == s.uid
    assert entry["title"] == "The title"
    assert entry["link"] == story_url(SETTINGS.base_url, s.uid)
    assert entry["link"].startswith(SETTINGS.base_url)
    assert entry["published"].startswith("2024-12-11")
    assert dt.datetime.fromisoformat(entry["updated"]) == s.updated  # sub-second precision kept
    assert entry["content"] == "<p>First paragraph.</p><p>Second paragraph.</p>"
    content = root_of(render(SETTINGS, [s])).find(A + "entry").find(A + "content")
    assert content.get("type") == "html"


def test_story_without_date_has_no_published() -> None:
    (entry,) = validate_atom(render(SETTINGS, [story(1, published=None)]))
    assert entry["published"] == ""


def test_newest_updated_first_whatever_the_input_order() -> None:
    stories = [story(n) for n in (3, 1, 5, 2, 4)]
    entries = validate_atom(render(SETTINGS, stories))
    assert [e["title"] for e in entries] == ["Story 5", "Story 4", "Story 3", "Story 2", "Story 1"]
    assert render(SETTINGS, list(reversed(stories))) == render(SETTINGS, stories)


def test_same_stories_same_bytes() -> None:
    stories = [story(n) for n in range(5)]
    assert render(SETTINGS, stories) == render(SETTINGS, list(stories))


def test_hostile_text_is_escaped_never_live() -> None:
    evil = ("<script>alert(1)</script> & ]]> \x01\x0b\x1f\ufffe <img src=x onerror=alert(2)> "
            "\u202e &amp; <![CDATA[x]]>")
    data = render(SETTINGS, [story(1, paragraphs=(evil, "<p>fake paragraph</p>"), title=evil)])
    (entry,) = validate_atom(data)
    # the content, once the XML is read, is HTML in which the markup is escaped text
    assert entry["content"].startswith("<p>&lt;script&gt;alert(1)&lt;/script&gt; &amp; ]]&gt;")
    assert "<script" not in entry["content"] and "<img" not in entry["content"]
    assert entry["content"].count("<p>") == 2
    assert "&lt;p&gt;fake paragraph&lt;/p&gt;" in entry["content"]
    assert "&amp;amp;" in entry["content"]  # an entity in a bulletin is shown as typed
    # the title is plain text: the reader shows the characters, minus what XML forbids
    assert entry["title"].startswith("<script>alert(1)</script> & ]]> ")
    for bad in "\x01\x0b\x1f\ufffe":
        assert bad not in entry["title"] and bad not in entry["content"]
    # feedparser, as a reader would, finds no live element
    parsed = feedparser.parse(data).entries[0]
    assert "<script" not in parsed.content[0].value
    assert b"<script" not in data


def test_xml_safe_keeps_text_and_removes_forbidden_characters() -> None:
    assert xml_safe("a\x00b\x08c\x0bd\x0ce\x1ff\ufffeg\uffffh") == "abcdefgh"
    assert xml_safe("tab\there\nnew\rline \U0001f600 \u00e9") == "tab\there\nnew\rline \U0001f600 \u00e9"


def test_content_html_one_paragraph_each() -> None:
    assert content_html(["a < b", "c & d"]) == "<p>a &lt; b</p><p>c &amp; d</p>"


def test_very_long_paragraph_renders() -> None:
    long = " ".join(["word"] * 50_000)
    (entry,) = validate_atom(render(SETTINGS, [story(1, paragraphs=(long,))]))
    assert entry["content"] == f"<p>{long}</p>"


def test_ids_are_stable_across_revisions() -> None:
    before = render(SETTINGS, [story(1, paragraphs=("Old text.",))])
    after = render(SETTINGS, [story(1, paragraphs=("New text.",), updated=T0 + dt.timedelta(hours=1))])
    assert validate_atom(before)[0]["id"] == validate_atom(after)[0]["id"]


def test_naive_datetimes_are_never_needed() -> None:
    """Every timestamp in the feed carries a zone (RFC 3339 section 5.6)."""
    root = root_of(render(SETTINGS, [story(1)]))
    for el in root.iter(A + "updated", A + "published"):
        assert dt.datetime.fromisoformat(el.text).tzinfo is not None


def test_write_atomically(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "feed.atom"
    write_atomically(target, b"one")
    write_atomically(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["feed.atom"]  # no temporary left over
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o644)


def test_write_atomically_keeps_the_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "feed.atom"
    write_atomically(target, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feed.atom"]
