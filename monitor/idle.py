"""The pass over a drop folder where nothing changed, without the ingest machinery.

`monitor scan` from cron, every minute, over a folder that gained nothing: the
process must cost little more than listing the folder. `idle_pass` decides that from
the store's ledger (monitor.storage.ledger, no SQLAlchemy) and the listing alone, and
imports nothing of parsing, identity or the feed; when there is anything to do the
caller makes the full pass (monitor.scan).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from monitor import dropfolder
from monitor.config import Settings
from monitor.models import ScanReport

if TYPE_CHECKING:
    from monitor.storage.ledger import Ledger

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Changes(Protocol):
    def last_change(self) -> dt.datetime | None: ...


def idle_pass(settings: Settings, ledger: Ledger, *,
              clock: Clock = utcnow) -> ScanReport | list[dropfolder.Entry]:
    """The pass `scan_and_publish` would make when nothing changed, from the ledger alone.

    Records the pass and returns its (empty) report when every listed name is recorded
    with its size and mtime and the feed file is current; otherwise changes nothing and
    returns what the listing found to read (perhaps nothing, for a stale feed), and the
    caller makes the full pass with `Storage`.
    """
    started = clock()
    todo = dropfolder.to_read(settings.drop.folder, ledger.file_states(), ledger.rejected_files())
    # A new, changed or still settling name, or an unreadable file readable now; or a feed to write.
    if todo or feed_is_stale(settings, ledger):
        return todo
    report = ScanReport()
    ledger.record_scan(report, started, clock())
    return report


def feed_is_stale(settings: Settings, storage: Changes) -> bool:
    """The feed files must be written again although this pass found nothing new: one is
    missing; or a story changed after they were written (a pass died between its commit
    and the rename: a crash, a kill); or the config file changed after they were written
    (a new title, base URL or number of entries shows at the next pass, not at the next story)."""
    from monitor.publish import files

    try:
        written = min(path.stat().st_mtime_ns for path in files(settings).values())
    except FileNotFoundError:
        return True
    if settings.source != "<defaults>":
        try:
            if Path(settings.source).stat().st_mtime_ns > written:
                return True
        except OSError:
            pass  # the config was read a moment ago; if it is gone now, the feed is as good as it was
    changed = storage.last_change()
    return changed is not None and int(changed.timestamp() * 1e9) > written
