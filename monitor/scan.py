"""One pass over the drop folder: list, read what changed, ingest file by file.

Each file's decisions and the record that the file was read are one transaction
(Storage.ingest), so a crash at any moment leaves whole files or none of them, and the
next pass picks up exactly the files that were not recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from monitor import bulletin, dropfolder
from monitor.config import Settings
from monitor.identity import fingerprint, known_fingerprint, normalized_paragraphs, text_hash
from monitor.idle import Clock, feed_is_stale, utcnow
from monitor.models import FileOutcome, Rejected, ScanReport

if TYPE_CHECKING:
    from monitor.storage import Storage

log = logging.getLogger(__name__)


def scan(settings: Settings, storage: Storage, *, clock: Clock = utcnow,
         stop: threading.Event | None = None) -> ScanReport:
    """Read every new or changed, settled file once; return the counts."""
    started = clock()
    report = ScanReport()
    # Names unchanged since they were recorded are left out by the listing: never opened.
    for entry in dropfolder.to_read(settings.drop.folder, storage.file_states(), storage.rejected_files()):
        if stop is not None and stop.is_set():
            report = replace(report, interrupted=True)
            break
        report = _one(settings, storage, entry, report, clock)
    finished = clock()
    storage.record_scan(report, started, finished)
    log.info("scan: %s in %.2fs", report.summary(), (finished - started).total_seconds())
    return report


def _one(settings: Settings, storage: Storage, entry: dropfolder.Entry, report: ScanReport,
         clock: Clock) -> ScanReport:
    info = entry.info
    now = clock()
    if entry.problem:
        return _reject(storage, entry, None, entry.problem, report, now)
    if info.size > settings.drop.max_bytes:
        reason = f"too large: {info.size} bytes, [drop] max_bytes is {settings.drop.max_bytes}"
        return _reject(storage, entry, None, reason, report, now)
    if not dropfolder.is_settled(info, int(now.timestamp() * 1e9), settings.drop.settle_seconds):
        log.debug("%s: modified less than %ss ago, left for a later pass", info.path, settings.drop.settle_seconds)
        return replace(report, skipped=report.skipped + 1)
    try:
        data = dropfolder.read(entry, settings.drop.max_bytes)
    except PermissionError:
        return _reject(storage, entry, None, dropfolder.UNREADABLE, report, now)
    except (FileNotFoundError, dropfolder.FileChanged) as exc:
        log.info("%s: %s, left for a later pass", info.path, getattr(exc, "strerror", None) or exc)
        return replace(report, skipped=report.skipped + 1)
    except OSError as exc:
        return _reject(storage, entry, None, f"cannot read: {exc.strerror or exc}", report, now)
    sha = hashlib.sha256(data).hexdigest()
    report = replace(report, files_read=report.files_read + 1)
    # Parsed before the store is asked anything, so that one read answers both whether
    # these bytes were ingested already and which of their texts the store has.
    parsed = bulletin.parse(data)
    items = () if isinstance(parsed, Rejected) else parsed.items
    forms = [normalized_paragraphs(item) for item in items]
    hashes = [text_hash(item, form) for item, form in zip(items, forms, strict=True)]
    copies, stored = storage.known_content(sha, hashes)
    if copies is not None:
        # The same bytes were ingested under another name or before a touch: all repeats.
        storage.record_file(info, sha, items=copies, now=now)
        return _add(report, FileOutcome(unchanged=copies))
    if isinstance(parsed, Rejected):
        return _reject(storage, entry, sha, parsed.reason, report, now)
    # Exact repeats are common (producers carry yesterday's briefs again) and are decided
    # on their hash alone: only the other items pay for shingles and index keys. A text
    # the store has now it still has under the write lock, as nothing is ever deleted.
    entries = [(item, known_fingerprint(h) if h in stored else fingerprint(item, form))
               for item, form, h in zip(items, forms, hashes, strict=True)]
    outcome = storage.ingest(info, sha, entries, now)
    if outcome is None:
        log.debug("%s: already ingested by another instance", info.path)
        return report
    log.debug("%s: %s items, %s new, %s revised", info.path, len(entries), outcome.new, outcome.revised)
    return _add(report, outcome)


def _reject(storage: Storage, entry: dropfolder.Entry, sha: str | None, reason: str, report: ScanReport,
            now: dt.datetime) -> ScanReport:
    log.warning("%s: rejected: %s", entry.info.path, reason)
    storage.record_file(entry.info, sha, reason=reason, now=now)
    return replace(report, rejected=report.rejected + 1,
                   rejections=(*report.rejections, (entry.info.path, reason)))


def _add(report: ScanReport, outcome: FileOutcome) -> ScanReport:
    return replace(report, new=report.new + outcome.new, revised=report.revised + outcome.revised,
                   unchanged=report.unchanged + outcome.unchanged)


def publish(settings: Settings, storage: Storage, *, force: bool = False) -> bool:
    """Rewrite the feed file if the store changed (or the file is missing or stale)."""
    path = settings.feed.path
    if not force and not feed_is_stale(settings, storage):
        return False
    # Imported here: feedgen and lxml are a large part of start-up, and an idle pass never renders.
    from monitor.feed import render, write_atomically

    write_atomically(path, render(settings.feed, storage.latest_stories(settings.feed.max_entries)))
    from monitor.notify import websub

    websub.feed_changed(settings.feed.hub, [settings.feed.base_url + "feed.atom"])
    return True


def scan_and_publish(settings: Settings, storage: Storage, *, clock: Clock = utcnow,
                     stop: threading.Event | None = None) -> ScanReport:
    t0 = time.perf_counter()
    report = scan(settings, storage, clock=clock, stop=stop)
    publish(settings, storage, force=report.changed)
    log.debug("scan and publish took %.3fs", time.perf_counter() - t0)
    return report
