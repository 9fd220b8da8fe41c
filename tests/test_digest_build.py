"""Building the digest message: stories in, EmailMessage out (no I/O)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import re
from html.parser import HTMLParser

import pytest

from monitor.config import DigestSettings, FeedSettings
from monitor.feed import story_url
from monitor.models import Story
from monitor.notify.abc import Revision, Selection
from monitor.notify.email import build_message, diff_text, list_id, new_message_id, word_diff

FEED = FeedSettings(title="CSTO Bulletins", base_url="https://news.example.org/csto/")
DIGEST = DigestSettings(subject="CSTO bulletins", sender="Digest <digest@example.org>")
WHEN = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


def story(n: int, *paragraphs: str, kind: str = "brief", title: str | None = None,
          published: dt.date | None = None) -> Story:
    return Story(uid=f"urn:uuid:00000000-0000-4000-8000-{n:012d}", kind=kind,  # type: ignore[arg-type]
                 title=title or paragraphs[0][:40], paragraphs=paragraphs, published=published,
                 first_seen=WHEN - dt.timedelta(days=1), updated=WHEN - dt.timedelta(hours=n))


BRIEF = story(1, "On 20 December a joint training session was held in Minsk.", published=dt.date(2024, 12, 20))
ARTICLE = story(2, "The Council met in Minsk.", "It adopted a statement.", kind="article",
                title="Meeting of the Council", published=dt.date(2024, 9, 2))
HOSTILE = story(3, 'Alert <script>alert("x")</script> & <b>bold</b> \x1b[31m red')
OLD = story(4, "The exercise took place in Kyrgyzstan with two thousand servicemen.")
NEW = story(4, "The exercise took place in Kazakhstan with three thousand servicemen.")


def build(selection: Selection, message_id: str = "<digest-1@example.org>") -> email.message.EmailMessage:
    msg = build_message(selection, digest=DIGEST, feed=FEED, message_id=message_id, date=WHEN)
    # What a mail client sees: the bytes parsed back.
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def parts(msg: email.message.EmailMessage) -> tuple[str, str]:
    assert msg.get_content_type() == "multipart/alternative"
    kids = list(msg.iter_parts())
    assert [k.get_content_type() for k in kids] == ["text/plain", "text/html"]  # RFC 2046 5.1.4 order
    return kids[0].get_content(), kids[1].get_content()


def visible_text(markup: str) -> str:
    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.out: list[str] = []

        def handle_data(self, data: str) -> None:
            self.out.append(data)

    parser = Text()
    parser.feed(markup)
    return " ".join(" ".join(parser.out).split())


def test_headers_and_subject() -> None:
    msg = build(Selection(new=(BRIEF, ARTICLE), revised=(Revision(NEW, OLD),)))
    assert msg["Subject"] == "CSTO bulletins: 2 new, 1 revised"
    assert msg["From"] == "Digest <digest@example.org>"
    assert msg["To"] == "Digest <digest@example.org>"  # subscribers are envelope recipients only
    assert msg["Message-ID"] == "<digest-1@example.org>"
    assert email.utils.parsedate_to_datetime(msg["Date"]) == WHEN
    assert msg["List-Id"] == "CSTO Bulletins <csto-bulletins.news.example.org>"
    assert msg["Auto-Submitted"] == "auto-generated"


@pytest.mark.parametrize(("selection", "expected"), [
    (Selection(new=(BRIEF,)), "CSTO bulletins: 1 new"),
    (Selection(revised=(Revision(NEW, OLD),)), "CSTO bulletins: 1 revised"),
    (Selection(new=(BRIEF,), more_new=9, more_revised=2), "CSTO bulletins: 10 new, 2 revised"),
])
def test_subject_counts_everything_due(selection: Selection, expected: str) -> None:
    assert build(selection)["Subject"] == expected


def test_both_parts_carry_the_same_stories() -> None:
    plain, markup = parts(build(Selection(new=(BRIEF, ARTICLE), revised=(Revision(NEW, OLD),))))
    shown = visible_text(markup)
    for text in ("On 20 December a joint training session was held in Minsk.", "Meeting of the Council",
                 "The Council met in Minsk.", "2024-12-20", "2024-09-02"):
        assert text in plain
        assert text in shown
    # An article: its first paragraph only, then the link to the whole entry.
    assert "It adopted a statement." not in plain and "It adopted a statement." not in shown
    for s in (BRIEF, ARTICLE, NEW):
        url = story_url(FEED.base_url, s.uid)
        assert f"Full entry: {url}" in plain
        assert f'href="{url}"' in markup
    assert plain.index("New (2)") < plain.index("Revised (1)")
    assert markup.index("<h2>New (2)</h2>") < markup.index("<h2>Revised (1)</h2>")


def test_revision_shows_a_word_diff_against_the_mailed_text() -> None:
    plain, markup = parts(build(Selection(revised=(Revision(NEW, OLD),))))
    assert "[-Kyrgyzstan-] {+Kazakhstan+}" in plain
    assert "[-two-] {+three+}" in plain
    assert '<del style="color:#a00">Kyrgyzstan</del> <ins style="color:#060">Kazakhstan</ins>' in markup


def test_bulletin_text_is_escaped_in_html_and_cleaned_in_plain() -> None:
    plain, markup = parts(build(Selection(new=(HOSTILE,))))
    assert "<script>" not in markup and "<b>bold</b>" not in markup
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in markup
    assert 'Alert <script>alert("x")</script> & <b>bold</b>' in visible_text(markup)
    assert "\x1b" not in plain and "\x1b" not in markup  # no terminal escapes from a bulletin
    assert "<script>" in plain  # plain text is shown as text


def test_a_backlog_is_summarised_with_a_link_to_the_feed() -> None:
    plain, markup = parts(build(Selection(new=(BRIEF,), more_new=40, more_revised=3)))
    assert f"…and 43 more (40 new, 3 revised): {FEED.base_url}feed.atom" in plain
    assert f'href="{FEED.base_url}feed.atom"' in markup
    assert plain.count("Full entry:") == 1


def test_non_ascii_text_survives_the_round_trip() -> None:
    ru = story(5, "11 декабря 2024 года в Москве прошло заседание «Рабочей группы».")
    msg = build(Selection(new=(ru,)))
    plain, markup = parts(msg)
    assert "прошло заседание «Рабочей группы»" in plain
    assert "прошло заседание «Рабочей группы»" in visible_text(markup)
    assert msg.as_bytes().isascii()  # 7-bit on the wire: any server takes it


def test_message_ids_are_unique_and_in_the_feed_domain() -> None:
    ids = {new_message_id(FEED) for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"<[^<>@\s]+@news\.example\.org>", i) for i in ids)
    local = FeedSettings(title="Bulletins", base_url="http://127.0.0.1:8080/")
    assert new_message_id(local).endswith("@monitor.localhost>")
    assert list_id(local) == "Bulletins <bulletins.monitor.localhost>"


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("a b c d", "a b X d", "a b [-c-] {+X+} d"),
    ("a b c", "a b c d e", "a b c {+d e+}"),
    ("x a b c", "a b c", "[-x-] a b c"),
    # Long unchanged runs are cut to the words around each change.
    (" ".join(f"w{i}" for i in range(40)), " ".join(f"w{i}" for i in range(40)).replace("w20", "CHANGED"),
     "… w15 w16 w17 w18 w19 [-w20-] {+CHANGED+} w21 w22 w23 w24 w25 …"),
])
def test_word_diff(old: str, new: str, expected: str) -> None:
    assert diff_text(word_diff(old, new)) == expected


def test_word_diff_is_short_for_a_rewrite() -> None:
    old = " ".join(f"a{i}" for i in range(500))
    new = " ".join(f"b{i}" for i in range(500))
    pieces = word_diff(old, new)
    assert sum(len(w.split()) for k, w in pieces if k != "gap") <= 80
    assert pieces[-1] == ("gap", "…")


def test_dates_are_days_in_the_digest_time_zone() -> None:
    late = Story(uid="urn:uuid:00000000-0000-4000-8000-000000000009", kind="brief", title="Late news",
                 paragraphs=("Late news from the evening.",), published=None,
                 first_seen=dt.datetime(2026, 11, 19, 23, 30, tzinfo=dt.UTC),
                 updated=dt.datetime(2026, 11, 19, 23, 30, tzinfo=dt.UTC))
    tokyo = DigestSettings(subject="CSTO bulletins", timezone="Asia/Tokyo")
    msg = build_message(Selection(new=(late,)), digest=tokyo, feed=FEED, message_id="<x@example.org>", date=WHEN)
    assert "2026-11-20" in msg.get_body(("plain",)).get_content()
    assert "2026-11-19" in build(Selection(new=(late,))).get_body(("plain",)).get_content()
