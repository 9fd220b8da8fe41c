"""The delivery run: for every subscriber, on every channel, what is due goes out once.

`send_pending` retries the messages already claimed, then for each subscriber reads
what it has not been sent (no lock held), composes it (pure, the channel's job), claims
it (one short write transaction: the message and one delivery row per story version),
and sends it. A message is marked sent only after the remote accepted it, so a crash
anywhere leaves it pending and the next run sends the same bytes again; a crash after
the remote accepted and before the mark repeats that one message once.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from monitor.config import Settings
from monitor.errors import ConfigError
from monitor.notify import channel
from monitor.notify.abc import Item
from monitor.notify.subscribers import Recipient, recipients
from monitor.notify.topics import TopicMatcher, default_matcher
from monitor.storage import Storage
from monitor.storage.outbox import Due, PendingMessage

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
MAX_BACKOFF = 6 * 3600.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Sent:
    message_id: str
    subscriber: str
    new: int
    revised: int
    channel: str = "email"


@dataclass(frozen=True)
class DigestResult:
    sent: tuple[Sent, ...] = ()  # messages that went out in this run
    refused: tuple[tuple[str, str], ...] = ()  # (subscriber label, reason): refused for good, not retried
    pending: int = 0  # messages still waiting after this run (retried by the next one)
    error: str | None = None  # why the last attempt failed
    busy: bool = False  # another runner held the lock and is doing the work

    @property
    def ok(self) -> bool:
        return self.error is None and self.pending == 0


def check_settings(settings: Settings) -> None:
    """What the config file cannot check alone: recipients, a password, the subscribers' schedules."""
    emails = settings.digest.recipients or any(s.email for s in settings.subscribers)
    if settings.smtp.host and settings.digest.enabled and not emails:
        raise ConfigError(settings.source, "[digest] recipients", "empty, but [smtp] host is set: nobody to send to")
    if settings.smtp.host and settings.smtp.username and not settings.smtp.password:
        raise ConfigError(settings.source, "[smtp] username",
                          "set, but MONITOR_SMTP_PASSWORD is empty in the environment")
    from monitor.crontab import crontab_trigger

    for sub in settings.subscribers:
        if sub.cadence != "immediate":
            try:
                crontab_trigger(sub.crontab, ZoneInfo(sub.timezone))
            except ValueError as exc:
                raise ConfigError(settings.source, f"[[subscribers]] {sub.name}: schedule",
                                  f"not a crontab line: {exc}") from None


@dataclass
class _Run:
    settings: Settings
    storage: Storage
    clock: Clock
    matcher: TopicMatcher
    sent: list[Sent] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    stopped: set[str] = field(default_factory=set)  # channels that failed as a whole in this run

    def result(self) -> DigestResult:
        return DigestResult(sent=tuple(self.sent), refused=tuple(self.refused),
                            pending=len(self.storage.pending_messages()), error=self.error)


def send_pending(settings: Settings, storage: Storage, *, only: Collection[str] | None = None,
                 clock: Clock = utcnow, matcher: TopicMatcher | None = None) -> DigestResult:
    """Retry what is pending, then claim and send what is due for `only` these subscribers
    (by name; None: every subscriber, whatever its cadence). One runner at a time."""
    check_settings(settings)
    with storage.digest_runner_lock() as held:
        if not held:
            log.info("delivery: another runner is at work; leaving it to that one")
            return DigestResult(busy=True)
        everyone = recipients(settings)
        storage.register_subscribers([(r.channel, r.name) for r in everyone], clock())
        stopped = storage.unsubscribed()
        by_key = {(r.channel, r.name): r for r in everyone if r.name not in stopped}
        run = _Run(settings, storage, clock, matcher or default_matcher(settings.topics))
        for message in storage.pending_messages():
            who = by_key.get((message.channel, message.subscriber))
            if who is not None and message.channel not in run.stopped and _is_due(message, clock()):
                _deliver(run, message, who)
        for who in by_key.values():
            if (only is None or who.name in only) and who.channel not in run.stopped:
                for message in _claim(run, who):
                    if who.channel not in run.stopped:
                        _deliver(run, message, who)
        if not run.sent and not run.error:
            log.debug("delivery: nothing new or revised for anyone")
        return run.result()


def _is_due(message: PendingMessage, now: dt.datetime) -> bool:
    return message.next_attempt is None or message.next_attempt <= now


def _claim(run: _Run, who: Recipient) -> list[PendingMessage]:
    """Read what `who` is due (no lock), compose it, and store it as pending."""
    due = run.storage.due(who.channel, who.name)
    if not due.versions:
        return []
    items = _items(run, who, due)
    now = run.clock()
    claims = channel(who.channel).compose(items, who, run.settings, now) if items else []
    claimed = run.storage.claim(who.channel, who.name, due, claims, now)
    if claimed is None:
        log.info("delivery to %s: claimed by another runner meanwhile", who.label)
        return []
    return claimed


def _items(run: _Run, who: Recipient, due: Due) -> list[Item]:
    hashes = [v.current for v in due.versions] + [v.delivered for v in due.versions if v.delivered]
    texts = run.storage.stories_by_hash(hashes)
    items = [Item(v, texts[v.current], texts.get(v.delivered) if v.delivered else None) for v in due.versions]
    if who.topics:
        wanted = run.matcher.matching(who.topics, [i.story for i in items])
        items = [i for i in items if i.story.uid in wanted]
    return items


def _deliver(run: _Run, message: PendingMessage, who: Recipient) -> None:
    """One attempt, recorded. The reason logged is the channel's fixed text, never the remote's."""
    assert message.id is not None
    ch = channel(message.channel)
    outcome = ch.send(message, who, run.settings)
    now = run.clock()
    if outcome.status == "sent":
        run.storage.record_sent(message.id, now)
        run.sent.append(Sent(message.message_key, who.name, message.new_count, message.revised_count,
                             message.channel))
        log.info("%s %s to %s sent (%s new, %s revised)", message.channel, message.message_key, who.label,
                 message.new_count, message.revised_count)
    elif outcome.status == "refused":
        run.storage.record_refused(message.id, now, outcome.reason)
        run.refused.append((who.label, outcome.reason))
        log.warning("%s %s to %s refused for good: %s", message.channel, message.message_key, who.label,
                    outcome.reason)
    else:
        wait = None
        if ch.backoff:
            seconds = min(run.settings.digest.retry_seconds * 2 ** message.attempts, MAX_BACKOFF)
            wait = now + dt.timedelta(seconds=seconds)
        run.storage.record_failure(message.id, outcome.reason, wait)
        run.error = outcome.reason
        log.error("%s %s to %s not delivered, stays pending: %s", message.channel, message.message_key, who.label,
                  outcome.reason)
        if outcome.stop:
            run.stopped.add(message.channel)


def preview(settings: Settings, storage: Storage, *, clock: Clock = utcnow,
            matcher: TopicMatcher | None = None) -> list[tuple[Recipient, PendingMessage]]:
    """The messages a run would send now, in order; writes nothing."""
    now = clock()
    everyone = recipients(settings)
    stopped = storage.unsubscribed()
    by_key = {(r.channel, r.name): r for r in everyone if r.name not in stopped}
    out = [(by_key[(m.channel, m.subscriber)], m) for m in storage.pending_messages()
           if (m.channel, m.subscriber) in by_key]
    run = _Run(settings, storage, clock, matcher or default_matcher(settings.topics))
    for who in by_key.values():
        due = storage.due(who.channel, who.name)
        items = _items(run, who, due) if due.versions else []
        for c in channel(who.channel).compose(items, who, settings, now) if items else []:
            out.append((who, PendingMessage(None, who.channel, who.name, c.message_key, c.payload, c.address,
                                            c.new_count, c.revised_count)))
    return out


def baseline(settings: Settings, storage: Storage, *, clock: Clock = utcnow) -> int:
    """Record everything stored now as already delivered to everyone; return how many stories that covered."""
    count = storage.baseline_digest(clock())
    log.info("digest baseline: %s stories recorded as already mailed", count)
    return count


def run_digest_command(settings: Settings, dry_run: bool, raw: bool = False) -> int:
    """`monitor digest [--dry-run [--raw]]`: exit 0 when sent or nothing to send, 1 when some stay pending."""
    check_settings(settings)
    # Never creates a store: a digest of a mistyped path would say "nothing to send" (exit 3 instead).
    storage = Storage.open(settings.state.database_url, create=False)
    try:
        if dry_run:
            return _dry_run(settings, storage, raw)
        result = send_pending(settings, storage)
    finally:
        storage.close()
    where = f"SMTP {settings.smtp.host}:{settings.smtp.port}" if settings.smtp.host else str(settings.digest.outbox)
    if result.busy:
        print("digest: another digest runner is sending now; nothing done here")
    for sent in result.sent:
        via = where if sent.channel == "email" else "Apprise"
        print(f"digest: sent {sent.message_id} to {sent.subscriber} ({sent.new} new, {sent.revised} revised) via {via}")
    for label, reason in result.refused:
        print(f"digest: {label} refused for good: {reason}", file=sys.stderr)
    if not result.sent and not result.pending and not result.busy:
        print("digest: nothing to send")
    if result.error:
        print(f"monitor: digest not delivered, kept for the next run: {result.error}", file=sys.stderr)
    elif result.pending:
        print(f"monitor: {result.pending} message(s) still pending", file=sys.stderr)
    return 0 if result.ok else 1


def _dry_run(settings: Settings, storage: Storage, raw: bool) -> int:
    if not any(r.address for r in recipients(settings) if r.channel == "email"):
        where = "[smtp] host is set" if settings.smtp.host else f"digests go to the Maildir {settings.digest.outbox}"
        print(f"digest: no recipients configured ([digest] recipients and [[subscribers]] are empty); {where}",
              file=sys.stderr)
    messages = preview(settings, storage)
    if not messages:
        print("digest: nothing to send", file=sys.stderr)
    for who, message in messages:
        if not raw:
            to = message.address or (f"the Maildir {settings.digest.outbox}" if who.channel == "email" else who.label)
            state = f"pending, {message.attempts} attempts" if message.id is not None else "new"
            print(f"=== {who.channel} to {to} ({state}; {message.new_count} new, {message.revised_count} revised)")
        sys.stdout.write(channel(who.channel).preview(message, raw))
        sys.stdout.write("\n")
    return 0


def delivery_problems(settings: Settings, storage: Storage) -> list[str]:
    """One line per configured subscriber whose mail or alerts are not getting through, for `status`."""
    failing, refused = delivery_report(settings, storage)
    return failing + refused


def delivery_report(settings: Settings, storage: Storage) -> tuple[list[str], list[str]]:
    """What is failing (kept pending, retried) and who was refused for good.

    Named by the subscriber's label, never an Apprise URL; the reason is the channel's fixed
    text, never a remote's reply. A failing delivery is an outage (/healthz 503); a refusal is
    about one address or URL and is reported until a later message to it goes through.
    """
    labels = {(r.channel, r.name): r.label for r in recipients(settings)}
    stopped = storage.unsubscribed()
    failing, refused = [], []
    for st in storage.delivery_states():
        label = labels.get((st.channel, st.subscriber))
        if label is None or st.subscriber in stopped:
            continue
        if st.pending and st.attempts:
            failing.append(f"{st.channel} to {label} not delivered after {st.attempts} attempts "
                           f"({st.pending} waiting): {st.error}")
        elif st.refused and not st.pending:
            refused.append(f"{st.channel} to {label} refused for good: {st.error}")
    return failing, refused
