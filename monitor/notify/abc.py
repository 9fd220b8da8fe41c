"""What every channel is: compose (pure) what a subscriber is due, and send one message.

A channel never decides what is due or records what went out: the delivery run
(monitor.digest) does, through the channel-neutral outbox, so a new channel is one
module with a `Channel` subclass registered in monitor.notify.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from monitor.models import Story
from monitor.storage.outbox import Claim, DueVersion, PendingMessage

if TYPE_CHECKING:
    from monitor.config import Settings
    from monitor.notify.subscribers import Recipient


@dataclass(frozen=True)
class Item:
    """One story version due for a subscriber; `before` is the text it was sent last (a correction)."""

    version: DueVersion
    story: Story
    before: Story | None = None


@dataclass(frozen=True)
class Revision:
    story: Story  # as it is now
    mailed: Story  # the text that went out last time


@dataclass(frozen=True)
class Selection:
    """The stories of one digest: the ones shown in full, and how many more there are."""

    new: tuple[Story, ...] = ()
    revised: tuple[Revision, ...] = ()
    more_new: int = 0
    more_revised: int = 0

    @property
    def new_count(self) -> int:
        return len(self.new) + self.more_new

    @property
    def revised_count(self) -> int:
        return len(self.revised) + self.more_revised

    @property
    def empty(self) -> bool:
        return not (self.new_count or self.revised_count)


def selection(items: Sequence[Item], limit: int) -> tuple[Selection, tuple[tuple[DueVersion, str], ...]]:
    """The first `limit` items in full, the rest counted; and the section each version goes out in."""
    shown, rest = items[:limit], items[limit:]
    sel = Selection(new=tuple(i.story for i in shown if i.before is None),
                    revised=tuple(Revision(i.story, i.before) for i in shown if i.before is not None),
                    more_new=sum(i.before is None for i in rest),
                    more_revised=sum(i.before is not None for i in rest))
    sections = tuple((i.version, "new" if i.before is None else "revised") for i in shown)
    return sel, sections + tuple((i.version, "more") for i in rest)


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: `sent`, `retry` (kept pending) or `refused` (for good).

    `stop` says the channel itself failed (server down): the run sends nothing more on it.
    `reason` is fixed text of ours, never the remote's reply, which can echo secrets.
    """

    status: str
    reason: str = ""
    stop: bool = False


SENT = Outcome("sent")


class Channel(ABC):
    name: ClassVar[str]
    # Retries wait longer after each failure (alerts); False: every run retries (digests,
    # whose runs the service spaces by [digest] retry_seconds).
    backoff: ClassVar[bool] = False

    @abstractmethod
    def compose(self, items: Sequence[Item], who: Recipient, settings: Settings, now: dt.datetime) -> list[Claim]:
        """The messages that carry these items (newest first) to this subscriber. Pure."""

    @abstractmethod
    def send(self, message: PendingMessage, who: Recipient, settings: Settings) -> Outcome:
        """One attempt to hand one stored message to the remote."""

    def preview(self, message: PendingMessage, raw: bool) -> str:
        """What `monitor digest --dry-run` shows of a message."""
        return message.payload
