"""The Apprise channel: an alert per new or corrected story, or one short batch for many.

Any service Apprise knows (Slack, Telegram, Matrix, ntfy, webhooks, ...) by its URL.
The URL carries tokens, so it comes from the environment only (see config), is never
stored (the outbox keeps the subscriber's name) and never reaches a log line, a status
or an error: Apprise's own logger is kept to itself, and what we say of a failure is a
fixed reason with at most the HTTP status code.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from monitor.config import Settings
from monitor.feed import story_url, xml_safe
from monitor.models import Story
from monitor.notify.abc import SENT, Channel, Item, Outcome
from monitor.publish import FEED
from monitor.storage.outbox import Claim, PendingMessage
from monitor.worddiff import diff_text, word_diff

if TYPE_CHECKING:
    from monitor.notify.subscribers import Recipient

# More stories than this in one pass make one batch, not a burst of alerts.
BATCH_OVER = 5
BATCH_LISTED = 10
# The remote said no for good: another try would get the same answer.
_FINAL = {400, 401, 403, 404, 405, 410, 413, 422}
_CODE = re.compile(r"error=(\d{3})")

# Apprise logs URLs (with their tokens) at debug level and hosts at warning level, and
# urllib3 (under requests) logs each request's path: neither reaches our log.
for _name in ("apprise", "urllib3"):
    logging.getLogger(_name).propagate = False


def alert_text(item: Item, base_url: str) -> tuple[str, str]:
    """Title and body of the alert for one story. Pure."""
    story, link = item.story, story_url(base_url, item.story.uid)
    if item.before is None:
        return f"New: {_t(story.title)}", f"{_t(_lead(story))}\n{link}"
    changes = diff_text(word_diff(_full(item.before), _full(story)))
    return f"Corrected: {_t(story.title)}", f"{_t(_lead(story))}\nWhat changed: {_t(changes)}\n{link}"


def batch_text(items: Sequence[Item], base_url: str) -> tuple[str, str]:
    """Title and body of one alert for many stories: counts, the first titles with links. Pure."""
    new = sum(i.before is None for i in items)
    parts = [f"{n} {label}" for n, label in ((new, "new"), (len(items) - new, "corrected")) if n]
    lines = [f"{'New' if i.before is None else 'Corrected'}: {_t(i.story.title)} {story_url(base_url, i.story.uid)}"
             for i in items[:BATCH_LISTED]]
    if len(items) > BATCH_LISTED:
        lines.append(f"…and {len(items) - BATCH_LISTED} more: {base_url}{FEED}")
    return f"{', '.join(parts)} stories", "\n".join(lines)


def _lead(story: Story) -> str:
    """A brief whole (its headline is a shortened copy, without the date); an article's title."""
    return story.paragraphs[0] if story.kind == "brief" and story.paragraphs else story.title


def _full(story: Story) -> str:
    head = [story.title] if story.kind == "article" else []
    return " ".join([*head, *story.paragraphs])


def _t(text: str) -> str:
    return xml_safe(text).replace("\r", "")


class AppriseChannel(Channel):
    name = "apprise"
    backoff = True

    def compose(self, items: Sequence[Item], who: Recipient, settings: Settings, now: dt.datetime) -> list[Claim]:
        base = settings.feed.base_url
        if len(items) > BATCH_OVER:
            title, body = batch_text(items, base)
            new = sum(i.before is None for i in items)
            carried = tuple((i.version, "new" if i.before is None else "revised") for i in items)
            return [Claim(uuid.uuid4().hex, json.dumps({"title": title, "body": body}), None, new,
                          len(items) - new, carried)]
        out = []
        for item in reversed(items):  # oldest first: a chat reads top to bottom
            title, body = alert_text(item, base)
            section = "new" if item.before is None else "revised"
            out.append(Claim(uuid.uuid4().hex, json.dumps({"title": title, "body": body}), None,
                             int(item.before is None), int(item.before is not None), ((item.version, section),)))
        return out

    def send(self, message: PendingMessage, who: Recipient, settings: Settings) -> Outcome:
        import apprise

        notifier = apprise.Apprise()
        if not notifier.add(who.url):
            return Outcome("refused", "Apprise does not accept this URL")
        data = json.loads(message.payload)
        with apprise.LogCapture(level=logging.WARNING) as captured:
            ok = notifier.notify(title=data["title"], body=data["body"], body_format=apprise.NotifyFormat.TEXT)
        if ok:
            return SENT
        codes = [int(c) for c in _CODE.findall(captured.getvalue())]
        if codes and codes[-1] in _FINAL:
            return Outcome("refused", f"HTTP {codes[-1]}")
        return Outcome("retry", f"HTTP {codes[-1]}" if codes else "no answer or connection failed")

    def preview(self, message: PendingMessage, raw: bool) -> str:
        if raw:
            return message.payload + "\n"
        data = json.loads(message.payload)
        return f"{data['title']}\n{data['body']}\n"
