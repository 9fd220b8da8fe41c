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
from monitor.dropfolder import shown
from monitor.identity import fingerprint, known_fingerprint, normalized_paragraphs, text_hash
from monitor.idle import Clock, utcnow
from monitor.models import FileInfo, FileOutcome, Rejected, ScanReport
from monitor.publish import Publisher

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
    storage.record_scan(report, started, clock())
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
    waiting = _settle(settings, storage, info, now)
    if waiting is not None:
        return replace(report, skipped=report.skipped + 1, observing=report.observing + (waiting == "observing"))
    try:
        data = dropfolder.read(entry, settings.drop.max_bytes)
    except PermissionError:
        return _reject(storage, entry, None, dropfolder.UNREADABLE, report, now)
    except (FileNotFoundError, dropfolder.FileChanged) as exc:
        log.info("%s: %s, left for a later pass", shown(info.path), getattr(exc, "strerror", None) or exc)
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
        log.debug("%s: already ingested by another instance", shown(info.path))
        return report
    log.debug("%s: %s items, %s new, %s revised", shown(info.path), len(entries), outcome.new, outcome.revised)
    return _add(report, outcome)


def _settle(settings: Settings, storage: Storage, info: FileInfo, now: dt.datetime) -> str | None:
    """None when the file has been still for `settle_seconds`, else why it waits: "writing"
    (a recent mtime) or "observing". An mtime in the future (the producer's clock is ahead)
    cannot tell how long the file has been still, so observations do: the same size and
    mtime at every pass since it was first seen, for that long (kept in the store, so
    `monitor scan` from cron settles it too, and `monitor status` can list it)."""
    now_ns = int(now.timestamp() * 1e9)
    settle = settings.drop.settle_seconds
    if not dropfolder.in_future(info, now_ns):
        if dropfolder.is_settled(info, now_ns, settle):
            return None
        log.debug("%s: modified less than %ss ago, left for a later pass", shown(info.path), settle)
        return "writing"
    since = storage.observe(info, now)
    if since is not None and dropfolder.observed_still(int(since.timestamp() * 1e9), now_ns, settle):
        return None
    log.debug("%s: modified in the future (clock skew?); read once it is unchanged for %ss", shown(info.path), settle)
    return "observing"


def _reject(storage: Storage, entry: dropfolder.Entry, sha: str | None, reason: str, report: ScanReport,
            now: dt.datetime) -> ScanReport:
    log.warning("%s: rejected: %s", shown(entry.info.path), reason)
    storage.record_file(entry.info, sha, reason=reason, now=now)
    return replace(report, rejected=report.rejected + 1,
                   rejections=(*report.rejections, (entry.info.path, reason)))


def _add(report: ScanReport, outcome: FileOutcome) -> ScanReport:
    return replace(report, new=report.new + outcome.new, revised=report.revised + outcome.revised,
                   unchanged=report.unchanged + outcome.unchanged)


def scan_and_publish(settings: Settings, storage: Storage, *, clock: Clock = utcnow,
                     stop: threading.Event | None = None) -> ScanReport:
    """`monitor scan`: a pass, then the feed files written if it changed anything (or they are stale)."""
    t0 = time.perf_counter()
    report = scan(settings, storage, clock=clock, stop=stop)
    publisher = Publisher(settings, storage)
    if settings.feed.hub:
        from monitor.notify import websub

        publisher.listeners.append(websub.listener(settings.feed))
    publisher.write_files(force=report.changed)
    log.debug("scan and publish took %.3fs", time.perf_counter() - t0)
    return report
