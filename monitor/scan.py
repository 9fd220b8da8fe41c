"""One pass over the drop folder: list, read what changed, ingest file by file.

Files are read, decided and recorded in groups, one transaction each (Storage.grouped):
each file's decisions and the record that it was read commit together with the rest of
its group, so a crash at any moment leaves whole groups or none of them, and the next
pass picks up exactly the files that were not recorded. A group ends after GROUP_FILES
files or GROUP_SECONDS, or when the folder has nothing more to read, so a single new
file is committed (and published) at once. On a pass with many files, a helper process
reads and fingerprints the next files meanwhile (monitor/prepare.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from monitor import dropfolder, prepare
from monitor.config import Settings
from monitor.dropfolder import shown
from monitor.errors import StorageError
from monitor.identity import known_fingerprint
from monitor.idle import Clock, utcnow
from monitor.models import FileInfo, FileOutcome, Rejected, ScanReport
from monitor.publish import Publisher

if TYPE_CHECKING:
    from monitor.storage import Storage

log = logging.getLogger(__name__)

# One commit per file cost a fifth of ingest (the WAL frames and checkpoints of the index
# pages each file touches). A group's commit writes every index page its files touched,
# and with keys spread over the whole index (band keys, text hashes) that is nearly a
# page per key: 50 files a group wrote 2.2 GB of WAL for 10,000 bulletins, groups of up
# to 500 files (about a second of work) 0.9 GB, and ingest took a sixth less time. A
# group holds the write lock: GROUP_SECONDS bounds how long another instance waits for it.
GROUP_FILES = 500
GROUP_SECONDS = 1.0
# Allocations between two runs of the cyclic garbage collector's youngest generation
# during a pass (Python's default is 700).
PASS_GC_THRESHOLD = 10_000


def scan(settings: Settings, storage: Storage, *, clock: Clock = utcnow,
         stop: threading.Event | None = None, ahead: prepare.Ahead | None = None) -> ScanReport:
    """Read every new or changed, settled file once; return the counts. `ahead`: a helper
    started already (by `monitor scan`, before the store was opened), else the pass starts
    one if it has files enough; either way it ends with the pass's last file, so that its
    memory is not held while the pass indexes and records (peak RSS of the two together)."""
    started = clock()
    report = ScanReport()
    # Names unchanged since they were recorded are left out by the listing: never opened.
    todo = dropfolder.to_read(settings.drop.folder, storage.file_states(), storage.rejected_files())
    helper = ahead if ahead is not None else prepare.ahead_for(settings.drop, todo, started)
    with helper as ahead, _fewer_collections():
        while todo:
            if stop is not None and stop.is_set():
                report = report._replace(interrupted=True)
                break
            group = functools.partial(_group, settings, storage, ahead, todo, report, clock, stop)
            # A group that lost a race runs again from its first file and the report it started with.
            try:
                report, done = storage.grouped(group)
            except StorageError:
                # All or nothing per group: a group the store could not take (a full disk, say)
                # is tried again one file at a time, so what fits is kept and the file that does
                # not is the one the error names.
                report, done = storage.grouped(functools.partial(group, limit=1))
            todo = todo[done:]
    if (report.new or report.revised) and not report.interrupted:
        _fold(storage)
    storage.record_scan(report, started, clock())
    return report


def _fold(storage: Storage) -> None:
    """The recent index keys folded into the main ones, when due (monitor/storage/keys.py;
    about once per eighth of the store's growth, a few seconds at a million stories). What
    the pass stored is committed already, and the lookups read both tiers, so a fold the
    store cannot take now (a full disk, say) is left for a later pass, as is one at a
    pass that was told to stop."""
    try:
        storage.fold_keys()
    except StorageError as exc:
        log.warning("folding the recent index keys left for a later pass: %s", exc)


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """A pass allocates rows, tuples and sets by the million, nearly all freed at once by
    their reference counts and none in a cycle: the cyclic collector's default of a pass
    every 700 allocations spent 0.6 s of a 15 s pass on 10,000 bulletins walking them."""
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], PASS_GC_THRESHOLD), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def _group(settings: Settings, storage: Storage, ahead: prepare.Ahead | None, todo: list[dropfolder.Entry],
           report: ScanReport, clock: Clock, stop: threading.Event | None,
           limit: int = GROUP_FILES) -> tuple[ScanReport, int]:
    """The files from the head of `todo` that one group takes; returns the report and how many.
    Files another instance recorded meanwhile (and files left for a later pass) do not count
    towards GROUP_FILES: instances that started together take turns at the lock, each
    passing over the files the others did, instead of ending their groups on them."""
    began = time.monotonic()
    taken = 0
    for done, entry in enumerate(todo):
        if done and (taken >= limit or time.monotonic() - began >= GROUP_SECONDS
                     or (stop is not None and stop.is_set())):
            return report, done
        report, wrote = _one(settings, storage, entry, report, clock, ahead)
        taken += wrote
    return report, len(todo)


def _one(settings: Settings, storage: Storage, entry: dropfolder.Entry, report: ScanReport,
         clock: Clock, ahead: prepare.Ahead | None = None) -> tuple[ScanReport, bool]:
    info = entry.info
    now = clock()
    if entry.problem:
        return _reject(storage, entry, None, entry.problem, report, now), True
    if info.size > settings.drop.max_bytes:
        reason = f"too large: {info.size} bytes, [drop] max_bytes is {settings.drop.max_bytes}"
        return _reject(storage, entry, None, reason, report, now), True
    waiting = _settle(settings, storage, info, now)
    if waiting is not None:
        return report._replace(skipped=report.skipped + 1, observing=report.observing + (waiting == "observing")), False
    # Parsed before the store is asked anything, so that one read answers both whether
    # these bytes were ingested already and which of their texts the store has.
    prepared = ahead.take(entry) if ahead is not None else None
    if prepared is None:
        data = _read(settings, storage, entry, report, now)
        if not isinstance(data, bytes):
            return data
        prepared = prepare.digest(data)
    sha, hashes = prepared.sha256, prepared.hashes
    report = report._replace(files_read=report.files_read + 1)
    copies, stored = storage.known_content(sha, hashes)
    if copies is not None:
        # The same bytes were ingested under another name or before a touch: all repeats.
        storage.record_file(info, sha, items=copies, now=now)
        return _add(report, FileOutcome(unchanged=copies)), False
    if isinstance(prepared.parsed, Rejected):
        return _reject(storage, entry, sha, prepared.parsed.reason, report, now), True
    # Exact repeats are common (producers carry yesterday's briefs again) and are decided
    # on their hash alone: only the other items pay for shingles and index keys. A text
    # the store has now it still has under the write lock, as nothing is ever deleted.
    entries = [(item, known_fingerprint(h) if h in stored else prepared.fingerprint(i))
               for i, (item, h) in enumerate(zip(prepared.items, hashes, strict=True))]
    outcome = storage.ingest(info, sha, entries, now, rows=prepared.rows)
    if outcome is None:
        log.debug("%s: already ingested by another instance", shown(info.path))
        return report, False
    log.debug("%s: %s items, %s new, %s revised", shown(info.path), len(entries), outcome.new, outcome.revised)
    return _add(report, outcome), True


def _read(settings: Settings, storage: Storage, entry: dropfolder.Entry, report: ScanReport,
          now: dt.datetime) -> bytes | tuple[ScanReport, bool]:
    """The file's bytes, or what _one returns for a file that cannot be read now."""
    try:
        return dropfolder.read(entry, settings.drop.max_bytes)
    except PermissionError:
        return _reject(storage, entry, None, dropfolder.UNREADABLE, report, now), True
    except (FileNotFoundError, dropfolder.FileChanged) as exc:
        log.info("%s: %s, left for a later pass", shown(entry.info.path), getattr(exc, "strerror", None) or exc)
        return report._replace(skipped=report.skipped + 1), False
    except OSError as exc:
        return _reject(storage, entry, None, f"cannot read: {exc.strerror or exc}", report, now), True


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
    return report._replace(rejected=report.rejected + 1,
                           rejections=(*report.rejections, (entry.info.path, reason)))


def _add(report: ScanReport, outcome: FileOutcome) -> ScanReport:
    return report._replace(new=report.new + outcome.new, revised=report.revised + outcome.revised,
                           unchanged=report.unchanged + outcome.unchanged)


def scan_and_publish(settings: Settings, storage: Storage, *, clock: Clock = utcnow,
                     stop: threading.Event | None = None, ahead: prepare.Ahead | None = None) -> ScanReport:
    """`monitor scan`: a pass, then the feed files written if it changed anything (or they are stale)."""
    t0 = time.perf_counter()
    report = scan(settings, storage, clock=clock, stop=stop, ahead=ahead)
    publisher = Publisher(settings, storage)
    if settings.feed.hub:
        from monitor.notify import websub

        publisher.listeners.append(websub.listener(settings.feed))
    publisher.write_files(force=report.changed)
    log.debug("scan and publish took %.3fs", time.perf_counter() - t0)
    return report
