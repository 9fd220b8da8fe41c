"""Who gets stories: the `[[subscribers]]` of the config, and `[digest] recipients` as before.

Each address in `[digest] recipients` is an implicit subscriber named by its address, on
the `[digest]` schedule, with everything: an existing config means what it meant. With
no recipients and no email subscriber, the digest goes to the Maildir under state/ (the
implicit subscriber "maildir"), as a fresh install always did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from monitor.config import Settings

MAILDIR = "maildir"


@dataclass(frozen=True)
class Recipient:
    name: str
    channel: str  # "email" or "apprise"
    address: str | None = None  # email; None: the local Maildir
    url: str = field(default="", repr=False)  # Apprise: carries tokens, never shown
    topics: tuple[str, ...] = ()  # empty: everything
    cadence: str = "daily"
    crontab: str = ""
    timezone: str = "UTC"
    implicit: bool = False  # from [digest] recipients (or the Maildir): on the [digest] schedule

    @property
    def label(self) -> str:
        """How logs, status and /healthz name it: never the Apprise URL, only its scheme."""
        if self.channel == "apprise":
            scheme = urlsplit(self.url).scheme or "?"
            return f"{self.name} ({scheme}://…)"
        return self.name if self.address in (None, self.name) else f"{self.name} <{self.address}>"


def recipients(settings: Settings) -> list[Recipient]:
    explicit = [Recipient(s.name, s.channel, s.email or None, s.apprise_url, s.topics, s.cadence, s.crontab,
                          s.timezone) for s in settings.subscribers]
    if not settings.digest.enabled:
        return explicit
    d = settings.digest
    names = {r.name for r in explicit}
    implicit = [Recipient(a, "email", a, cadence="daily", crontab=d.schedule, timezone=d.timezone, implicit=True)
                for a in dict.fromkeys(d.recipients) if a not in names]
    if not implicit and not any(r.channel == "email" for r in explicit) and not settings.smtp.host:
        implicit = [Recipient(MAILDIR, "email", None, crontab=d.schedule, timezone=d.timezone, implicit=True)]
    return explicit + implicit
