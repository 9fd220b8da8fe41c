"""The email channel: the digest message (composed pure) and its sending (SMTP or Maildir).

Composing turns a Selection of stories into an EmailMessage and touches nothing else;
`EmailChannel.send` hands the stored bytes to monitor.mail, the only module that talks
SMTP, and reads its answer as an Outcome.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import ipaddress
import re
from collections.abc import Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from monitor import mail
from monitor.config import DigestSettings, FeedSettings, Settings, TopicSettings
from monitor.errors import DeliveryError
from monitor.feed import escape_html, story_url, xml_safe
from monitor.models import Story
from monitor.notify import unsubscribe
from monitor.notify.abc import SENT, Channel, Item, Outcome, Selection, selection
from monitor.notify.subscribers import MAILDIR
from monitor.publish import FEED
from monitor.storage.outbox import Claim, PendingMessage
from monitor.worddiff import diff_html, diff_text, word_diff

if TYPE_CHECKING:
    from monitor.notify.subscribers import Recipient


def subject(prefix: str, selection: Selection) -> str:
    parts = [f"{n} {label}" for n, label in ((selection.new_count, "new"), (selection.revised_count, "revised"))
             if n]
    return f"{prefix}: {', '.join(parts) or 'nothing new'}"


def list_id(feed: FeedSettings) -> str:
    """RFC 2919 List-Id from the feed: `Title <title-slug.host>`."""
    label = re.sub(r"[^a-z0-9]+", "-", feed.title.lower()).strip("-") or "bulletins"
    name = re.sub(r'[<>"\\\s]+', " ", xml_safe(feed.title)).strip()
    return f"{name} <{label}.{list_domain(feed)}>" if name else f"<{label}.{list_domain(feed)}>"


def list_domain(feed: FeedSettings) -> str:
    """The feed's host when it is a real domain name, else `monitor.localhost`."""
    host = (urlsplit(feed.base_url).hostname or "").lower()
    try:
        ipaddress.ip_address(host)
        host = ""
    except ValueError:
        pass
    if "." not in host or not re.fullmatch(r"[a-z0-9.-]+", host):
        return "monitor.localhost"
    return host


def new_message_id(feed: FeedSettings) -> str:
    """Random each call: made once per digest and stored (STANDARDS.md)."""
    return email.utils.make_msgid(idstring="digest", domain=list_domain(feed))


def build_message(selection: Selection, *, digest: DigestSettings, feed: FeedSettings,
                  message_id: str, date: dt.datetime, to: str | None = None,
                  unsubscribe: str | None = None, topics: Sequence[TopicSettings] = ()) -> EmailMessage:
    """The digest as multipart/alternative: text/plain first, then the same in text/html.

    One message per subscriber, so `To` is that subscriber (the sender for the Maildir) and
    `unsubscribe` is that subscriber's signed one-click link (RFC 8058). Each of `topics`
    gets a section listing this digest's stories that match it.
    """
    msg = EmailMessage()
    msg["Subject"] = subject(digest.subject, selection)
    msg["From"] = digest.sender
    msg["To"] = to or digest.sender
    msg["Date"] = email.utils.format_datetime(date.astimezone(dt.UTC))
    msg["Message-ID"] = message_id
    msg["List-Id"] = list_id(feed)
    if unsubscribe:
        msg["List-Unsubscribe"] = f"<{unsubscribe}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies, please
    sections = topic_sections(selection, topics)
    msg.set_content(render_text(selection, digest=digest, feed=feed, topics=sections))
    msg.add_alternative(render_html(selection, digest=digest, feed=feed, topics=sections), subtype="html")
    return msg


def story_date(story: Story, tz: str = "UTC") -> str:
    """The bulletin's own date, else the day the story was first seen (in the digest's time zone)."""
    return (story.published or story.first_seen.astimezone(ZoneInfo(tz)).date()).isoformat()


def excerpt(story: Story) -> str:
    """A brief whole; an article's first paragraph (its title is shown apart)."""
    return story.paragraphs[0] if story.paragraphs else ""


def _full_text(story: Story) -> str:
    head = [story.title] if story.kind == "article" else []
    return " ".join([*head, *story.paragraphs])


def topic_sections(selection: Selection, topics: Sequence[TopicSettings]) -> list[tuple[str, list[Story]]]:
    """Per topic, in config order: the stories of this digest (new, then revised) that match it,
    decided by monitor.query exactly as the store decides a search."""
    if not topics:
        return []
    from monitor import query
    from monitor.notify.topics import story_matches

    shown = [*selection.new, *(rev.story for rev in selection.revised)]
    sections = []
    for topic in topics:
        parsed = query.parse(topic.query)
        sections.append((topic.name, [s for s in shown if story_matches(parsed, s)]))
    return sections


def render_text(selection: Selection, *, digest: DigestSettings, feed: FeedSettings,
                topics: Sequence[tuple[str, list[Story]]] = ()) -> str:
    tz = digest.timezone
    lines = [subject(digest.subject, selection), ""]
    if selection.new:
        lines += _heading(f"New ({selection.new_count})")
        for story in selection.new:
            lines += [_t(story.title), story_date(story, tz), "", _t(excerpt(story)),
                      f"Full entry: {story_url(feed.base_url, story.uid)}", ""]
    if selection.revised:
        lines += _heading(f"Revised ({selection.revised_count})")
        for rev in selection.revised:
            story = rev.story
            changes = diff_text(word_diff(_full_text(rev.mailed), _full_text(story)))
            lines += [_t(story.title), f"{story_date(story, tz)}, revised {_day(story.updated, tz)}", "",
                      f"What changed: {_t(changes)}", f"Full entry: {story_url(feed.base_url, story.uid)}", ""]
    for name, found in topics:
        lines += _heading(f"Topic: {name} ({len(found)})")
        lines += [f"- {_t(s.title)}: {story_url(feed.base_url, s.uid)}" for s in found] or ["(none in this digest)"]
        lines += [f"Feed: {feed.base_url}topics/{name}.atom", ""]
    more = selection.more_new + selection.more_revised
    if more:
        lines += [f"…and {more} more ({_more(selection)}): {feed.base_url}{FEED}", ""]
    lines += ["-- ", f"{feed.title}: {feed.base_url}"]
    return "\n".join(lines) + "\n"


def render_html(selection: Selection, *, digest: DigestSettings, feed: FeedSettings,
                topics: Sequence[tuple[str, list[Story]]] = ()) -> str:
    tz = digest.timezone
    parts = ['<!DOCTYPE html>\n<html><head><meta charset="utf-8">',
             f"<title>{_h(subject(digest.subject, selection))}</title></head><body>",
             f"<h1>{_h(subject(digest.subject, selection))}</h1>"]
    if selection.new:
        parts.append(f"<h2>New ({selection.new_count})</h2>")
        parts += [_story_html(s, feed, s.uid, story_date(s, tz), excerpt=excerpt(s)) for s in selection.new]
    if selection.revised:
        parts.append(f"<h2>Revised ({selection.revised_count})</h2>")
        for rev in selection.revised:
            changes = diff_html(word_diff(_full_text(rev.mailed), _full_text(rev.story)))
            when = f"{story_date(rev.story, tz)}, revised {_day(rev.story.updated, tz)}"
            parts.append(_story_html(rev.story, feed, rev.story.uid, when, changes=changes))
    for name, found in topics:
        items = "".join(f'<li><a href="{_h(story_url(feed.base_url, s.uid))}">{_h(s.title)}</a></li>' for s in found)
        parts.append(f'<h2>Topic: {_h(name)} ({len(found)})</h2>'
                     + (f"<ul>{items}</ul>" if found else "<p>(none in this digest)</p>")
                     + f'<p><a href="{_h(feed.base_url)}topics/{_h(name)}.atom">Topic feed</a></p>')
    more = selection.more_new + selection.more_revised
    if more:
        parts.append(f'<p>…and {more} more ({_more(selection)}): '
                     f'<a href="{_h(feed.base_url + FEED)}">see the feed</a></p>')
    parts.append(f'<hr><p><a href="{_h(feed.base_url)}">{_h(feed.title)}</a></p></body></html>')
    return "\n".join(parts) + "\n"


def _story_html(story: Story, feed: FeedSettings, uid: str, when: str, *, excerpt: str = "",
                changes: str = "") -> str:
    url = _h(story_url(feed.base_url, uid))
    body = f"<p>{_h(excerpt)}</p>" if excerpt else f"<p>What changed: {changes}</p>"
    return (f'<div class="story"><h3>{_h(story.title)}</h3><p><small>{_h(when)}</small></p>{body}'
            f'<p><a href="{url}">Full entry</a></p></div>')


def _heading(title: str) -> list[str]:
    return [title, "-" * len(title), ""]


def _more(selection: Selection) -> str:
    parts = [f"{n} {label}" for n, label in ((selection.more_new, "new"), (selection.more_revised, "revised")) if n]
    return ", ".join(parts)


def _day(when: dt.datetime, tz: str) -> str:
    return when.astimezone(ZoneInfo(tz)).date().isoformat()


def _t(value: str) -> str:
    """Bulletin text in the plain part: no control characters (terminal escapes)."""
    return xml_safe(value).replace("\r", "")


_h = escape_html  # bulletin text in the HTML part: always escaped, never live markup


# -- the channel -------------------------------------------------------------------------


class EmailChannel(Channel):
    name = "email"

    def compose(self, items: Sequence[Item], who: Recipient, settings: Settings, now: dt.datetime) -> list[Claim]:
        sel, carried = selection(items, settings.digest.max_stories)
        message_id = new_message_id(settings.feed)
        secret = settings.digest.unsubscribe_secret
        link = unsubscribe.link(settings.feed.base_url, secret, who.name) if secret else None
        # Dates in the mail are days in the subscriber's own time zone.
        digest = settings.digest._replace(timezone=who.timezone)
        # A subscriber to some topics gets their sections; one to everything, every topic's.
        topics = [t for t in settings.topics if not who.topics or t.name in who.topics]
        msg = build_message(sel, digest=digest, feed=settings.feed, message_id=message_id, date=now,
                            to=who.address, unsubscribe=link, topics=topics)
        return [Claim(message_id, msg.as_string(), who.address, sel.new_count, sel.revised_count, carried)]

    def send(self, message: PendingMessage, who: Recipient, settings: Settings) -> Outcome:
        if not settings.smtp.host:
            # The file name comes from the subscriber and Message-ID: a retry after a crash is a no-op.
            key = message.message_key
            if message.subscriber != MAILDIR:
                key = f"{message.subscriber} {key}"
            mail.deliver_maildir(settings.digest.outbox, message.payload, key)
            return SENT
        if not message.address:
            return Outcome("refused", "no address (a Maildir digest, and [smtp] host is set now)")
        try:
            delivery = mail.send_smtp(settings.smtp, settings.digest.sender, (message.address,), message.payload)
        except mail.RecipientsRefused as exc:
            return _refusal(*exc.refused[message.address])
        except DeliveryError as exc:
            return Outcome("retry", str(exc), stop=True)
        if message.address in delivery.refused:
            return _refusal(*delivery.refused[message.address])
        return SENT

    def preview(self, message: PendingMessage, raw: bool) -> str:
        if raw:
            return message.payload
        parsed = email.message_from_string(message.payload, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        heads = "".join(f"{k}: {parsed[k]}\n" for k in ("Subject", "From", "To", "List-Unsubscribe") if parsed[k])
        return f"{heads}\n{text}"


def _refusal(code: int, reason: str) -> Outcome:
    return Outcome("refused" if code >= 500 else "retry", f"{code} {reason}")
