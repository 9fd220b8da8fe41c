"""The pass over a drop folder where nothing changed, without the ingest machinery.

`monitor scan` from cron, every minute, over a folder that gained nothing: the
process must cost little more than listing the folder. `idle_pass` decides that from
the store's ledger (monitor.storage.ledger, no SQLAlchemy) and the listing alone, and
imports nothing of parsing, identity or the feed; when there is anything to do the
caller makes the full pass (monitor.scan).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from monitor import dropfolder
from monitor.config import Settings
from monitor.models import ScanReport

if TYPE_CHECKING:
    from monitor.storage.ledger import Ledger

log = logging.getLogger("monitor.scan")

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Changes(Protocol):
    def last_change(self) -> dt.datetime | None: ...


def idle_pass(settings: Settings, ledger: Ledger, *, clock: Clock = utcnow) -> ScanReport | None:
    """The pass `scan_and_publish` would make when nothing changed, from the ledger alone.

    Records the pass and returns its (empty) report when every listed name is recorded
    with its size and mtime and the feed file is current; otherwise changes nothing and
    returns None, and the caller makes the full pass with `Storage`.
    """
    started = clock()
    seen = ledger.file_states()
    if dropfolder.list_entries(settings.drop.folder, seen):
        return None  # a new, changed, still settling or rejected-and-changed name
    if not settings.feed.path.exists() or feed_is_stale(settings.feed.path, ledger):
        return None
    report = ScanReport()
    finished = clock()
    ledger.record_scan(report, started, finished)
    log.info("scan: %s in %.2fs", report.summary(), (finished - started).total_seconds())
    return report


def feed_is_stale(path: Path, storage: Changes) -> bool:
    """A story changed after the feed file was written: a pass died between its commit
    and the rename (a crash, a kill), so the next pass must write the feed even though
    it finds nothing new itself."""
    changed = storage.last_change()
    try:
        return changed is not None and int(changed.timestamp() * 1e9) > path.stat().st_mtime_ns
    except FileNotFoundError:
        return True
