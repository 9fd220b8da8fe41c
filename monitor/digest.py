"""The email digest: building the message (pure), and the outbox run that sends it.

`build_message` turns a Selection of stories into an EmailMessage and touches nothing
else. `send_pending` is the run: retry the digests already claimed, then claim what
is due as one new digest (committed before a byte goes out) and send it. A digest is
marked sent only after the server accepted it, so a crash or a failure anywhere
leaves it pending and the next run sends the same message, Message-ID and all.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from monitor import mail
from monitor.config import DigestSettings, FeedSettings, Settings, TopicSettings
from monitor.errors import ConfigError, DeliveryError
from monitor.feed import escape_html, story_url, xml_safe
from monitor.models import Story
from monitor.publish import FEED
from monitor.storage import Storage
from monitor.storage.outbox import Outgoing, PendingDigest, Selection
from monitor.worddiff import diff_html, diff_text, word_diff

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- building (pure) -------------------------------------------------------------------


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
                  message_id: str, date: dt.datetime, topics: Sequence[TopicSettings] = ()) -> EmailMessage:
    """The digest as multipart/alternative: text/plain first, then the same in text/html."""
    msg = EmailMessage()
    msg["Subject"] = subject(digest.subject, selection)
    msg["From"] = digest.sender
    # Subscribers are envelope recipients only, like a mailing list: none sees the others.
    msg["To"] = digest.sender
    msg["Date"] = email.utils.format_datetime(date.astimezone(dt.UTC))
    msg["Message-ID"] = message_id
    msg["List-Id"] = list_id(feed)
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

    shown = [*selection.new, *(rev.story for rev in selection.revised)]
    sections = []
    for topic in topics:
        parsed = query.parse(topic.query)
        sections.append((topic.name, [s for s in shown if query.matches(
            parsed, s.title if s.kind == "article" else None, s.paragraphs)]))
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



# -- the outbox run ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    message_id: str
    new: int
    revised: int


@dataclass(frozen=True)
class DigestResult:
    sent: tuple[Sent, ...] = ()  # digests that went out completely in this run
    refused: tuple[tuple[str, str], ...] = ()  # (address, reply): refused for good (5xx), not retried
    pending: int = 0  # digests still waiting after this run (retried by the next one)
    error: str | None = None  # why the last attempt failed
    busy: bool = False  # another runner held the lock and is doing the work

    @property
    def ok(self) -> bool:
        return self.error is None and self.pending == 0


def check_settings(settings: Settings) -> None:
    """What the config file cannot check alone: recipients and a password when a server is set."""
    if settings.smtp.host and not settings.digest.recipients:
        raise ConfigError(settings.source, "[digest] recipients", "empty, but [smtp] host is set: nobody to send to")
    if settings.smtp.host and settings.smtp.username and not settings.smtp.password:
        raise ConfigError(settings.source, "[smtp] username",
                          "set, but MONITOR_SMTP_PASSWORD is empty in the environment")


def send_pending(settings: Settings, storage: Storage, *, clock: Clock = utcnow) -> DigestResult:
    """Retry the pending digests, then claim and send what is due. One runner at a time."""
    check_settings(settings)
    with storage.digest_runner_lock() as held:
        if not held:
            log.info("digest: another runner is at work; leaving it to that one")
            return DigestResult(busy=True)
        run = _Run()
        for digest in storage.pending_digests():
            if not _deliver(settings, storage, digest, clock, run):
                # The server is down or failing: no new digest on top of this one.
                return run.result(len(storage.pending_digests()))
        now = clock()
        claimed = storage.claim_digest(now, settings.digest.max_stories, composer(settings, now))
        if claimed is None:
            log.info("digest: nothing new or revised since the last digest")
        else:
            _deliver(settings, storage, claimed, clock, run)
        return run.result(len(storage.pending_digests()))


def preview(settings: Settings, storage: Storage, *, clock: Clock = utcnow) -> list[PendingDigest]:
    """The messages a run would send now, in order; writes nothing."""
    now = clock()
    out = storage.pending_digests()
    fresh = storage.claim_digest(now, settings.digest.max_stories, composer(settings, now), preview=True)
    return out + ([fresh] if fresh is not None else [])


def baseline(settings: Settings, storage: Storage, *, clock: Clock = utcnow) -> int:
    """Record everything stored now as already mailed; return how many stories that covered."""
    count = storage.baseline_digest(clock())
    log.info("digest baseline: %s stories recorded as already mailed", count)
    return count


def run_digest_command(settings: Settings, dry_run: bool) -> int:
    """`monitor digest [--dry-run]`: exit 0 when sent or nothing to send, 1 when some stay pending."""
    check_settings(settings)
    # Never creates a store: a digest of a mistyped path would say "nothing to send" (exit 3 instead).
    storage = Storage.open(settings.state.database_url, create=False)
    try:
        if dry_run:
            messages = preview(settings, storage)
            if not messages:
                print("digest: nothing to send", file=sys.stderr)
            for digest in messages:
                sys.stdout.write(digest.message)
                sys.stdout.write("\n")
            return 0
        result = send_pending(settings, storage)
    finally:
        storage.close()
    where = f"SMTP {settings.smtp.host}:{settings.smtp.port}" if settings.smtp.host else str(settings.digest.outbox)
    if result.busy:
        print("digest: another digest runner is sending now; nothing done here")
    for sent in result.sent:
        print(f"digest: sent {sent.message_id} ({sent.new} new, {sent.revised} revised) via {where}")
    for address, reply in result.refused:
        print(f"digest: {address} refused for good: {reply}", file=sys.stderr)
    if not result.sent and not result.pending and not result.busy:
        print("digest: nothing to send")
    if result.error:
        print(f"monitor: digest not delivered, kept for the next run: {result.error}", file=sys.stderr)
    elif result.pending:
        print(f"monitor: {result.pending} digest(s) still pending for some recipients", file=sys.stderr)
    return 0 if result.ok else 1


class _Run:
    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.refused: list[tuple[str, str]] = []
        self.error: str | None = None

    def result(self, pending: int) -> DigestResult:
        return DigestResult(sent=tuple(self.sent), refused=tuple(self.refused), pending=pending, error=self.error)


def composer(settings: Settings, now: dt.datetime) -> Callable[[Selection], Outgoing]:
    def compose(selection: Selection) -> Outgoing:
        message_id = new_message_id(settings.feed)
        msg = build_message(selection, digest=settings.digest, feed=settings.feed, message_id=message_id, date=now,
                            topics=settings.topics)
        return Outgoing(message_id, msg.as_string(), settings.digest.recipients)

    return compose


def _deliver(settings: Settings, storage: Storage, digest: PendingDigest, clock: Clock, run: _Run) -> bool:
    """One attempt. False when the server could not be used at all (the run stops there)."""
    assert digest.id is not None
    try:
        if settings.smtp.host:
            delivery = mail.send_smtp(settings.smtp, settings.digest.sender, digest.recipients, digest.message)
            final = {a: f"{code} {reply}" for a, (code, reply) in delivery.refused.items() if code >= 500}
            for address, (code, reply) in sorted(delivery.refused.items()):
                level, what = (logging.WARNING, "refused for good") if code >= 500 else (logging.INFO, "will retry")
                log.log(level, "digest %s: %s %s: %s %s", digest.message_id, address, what, code, reply)
            done = storage.record_delivery(digest.id, clock(), accepted=delivery.accepted, refused=final)
            run.refused += sorted(final.items())
        else:
            if not mail.deliver_maildir(settings.digest.outbox, digest.message, digest.message_id):
                log.info("digest %s was in the Maildir already (a retry after a crash)", digest.message_id)
            done = storage.record_delivery(digest.id, clock(), accepted=(), refused={}, everyone=True)
    except DeliveryError as exc:
        storage.record_failure(digest.id, str(exc))
        log.error("digest %s not delivered, stays pending: %s", digest.message_id, exc)
        run.error = str(exc)
        # Refused recipients are about addresses, not the server: the run goes on.
        return isinstance(exc, mail.RecipientsRefused)
    if done:
        run.sent.append(Sent(digest.message_id, digest.new_count, digest.revised_count))
        log.info("digest %s sent (%s new, %s revised)", digest.message_id, digest.new_count, digest.revised_count)
    return True
