"""WebSub publish notifications (W3C WebSub section 7 and PubSubHubbub 0.4's hub.mode=publish).

After a feed changed, the publisher tells the hub which feed URLs to fetch again:
`POST hub.mode=publish&hub.url=<feed>` (form-encoded), answered 2xx. A failed ping is
tried again with backoff, in a thread of its own, so a slow hub never holds up a scan.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlencode

if TYPE_CHECKING:
    from monitor.config import FeedSettings

log = logging.getLogger(__name__)

TIMEOUT = 10.0
DELAYS = (1.0, 5.0, 30.0)  # waits before the 2nd, 3rd and 4th try


def ping(hub: str, urls: Sequence[str], *, timeout: float = TIMEOUT) -> str | None:
    """One publish notification; None when the hub took it, else why not (no secrets in a hub URL)."""
    body = urlencode([("hub.mode", "publish"), *(("hub.url", u) for u in urls)]).encode()
    request = urllib.request.Request(hub, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read(65536)
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"cannot reach the hub: {getattr(exc, 'reason', None) or exc}"


def publish(hub: str, urls: Sequence[str], *, delays: Sequence[float] = DELAYS,
            sleep: Callable[[float], None] = time.sleep) -> bool:
    """Ping until the hub takes it or the tries run out; True when it did."""
    for attempt, delay in enumerate((0.0, *delays)):
        if delay:
            sleep(delay)
        problem = ping(hub, urls)
        if problem is None:
            log.info("websub: hub %s notified of %s", hub, ", ".join(urls))
            return True
        log.warning("websub: hub %s not notified (try %s): %s", hub, attempt + 1, problem)
    return False


_threads: list[threading.Thread] = []


def feed_changed(hub: str, feed_urls: Sequence[str]) -> None:
    """The one call the publisher makes after writing a changed feed; nothing without a hub.

    The ping runs in a daemon thread: a scan never waits for the hub, and a stopping service
    does not either. A short command calls `drain` before it exits.
    """
    if not hub:
        return
    thread = threading.Thread(target=publish, args=(hub, list(feed_urls)), name="websub", daemon=True)
    thread.start()
    _threads[:] = [t for t in _threads if t.is_alive()] + [thread]


def listener(feed: FeedSettings) -> Callable[[frozenset[str]], None]:
    """A `Publisher` listener: the feeds whose bytes changed in a publication, as URLs
    under `base_url`, in one ping (main, corrections, a newly full archive alike)."""

    def changed(paths: frozenset[str]) -> None:
        urls = [feed.base_url + p.lstrip("/") for p in sorted(paths) if p.endswith(".atom")]
        if urls:
            feed_changed(feed.hub, urls)

    return changed


def drain(timeout: float = 60.0) -> None:
    """Wait (up to `timeout` seconds in all) for the pings under way."""
    deadline = time.monotonic() + timeout
    for thread in list(_threads):
        thread.join(max(0.0, deadline - time.monotonic()))
