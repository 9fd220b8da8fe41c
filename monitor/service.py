"""`monitor run`: scheduled scans, instant pickup, the feed over HTTP, a clean stop.

Threads, and what each may touch:
- the scheduler's workers run the jobs (scan, pickup, digest); `_work` lets one job at a
  time do store work, so a digest never interleaves with a scan in this process (the
  store's own locks handle other processes);
- the watchdog thread only turns filesystem events into a pickup job (a hint; the
  interval scan stays the source of truth, since network mounts give no events);
- the HTTP loop and its workers read the current `Snapshot` (one attribute, swapped whole after a
  scan), so a feed request never touches the store and a slow client never blocks a scan;
- the main thread waits for SIGTERM/SIGINT, then stops everything in order.

All jobs are wired in one place: `wire_jobs` and `schedule_pickup`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from monitor.config import Settings, base_url_port
from monitor.crontab import crontab_trigger
from monitor.documents import Document, Snapshot
from monitor.errors import ConfigError, MonitorError, PublishError, StorageError
from monitor.keeper import Keeper
from monitor.metrics import Metrics
from monitor.models import ScanReport
from monitor.notify import websub
from monitor.publish import FEED, Publisher
from monitor.scan import scan, utcnow
from monitor.server import Server
from monitor.storage import Storage

log = logging.getLogger(__name__)

# A pickup scan runs this long after a file's settle time, so that its mtime is
# surely older than `settle_seconds` when the scan looks at it.
PICKUP_MARGIN = 0.5
# The scheduler waits for a running job without a time limit (APScheduler issue 157);
# jobs stop at a file boundary, and this is the backstop if one still hangs (a stuck SMTP
# server, say), so that the process always ends within the 10 s promised to the operator.
STOP_DEADLINE = 9.0
# Filesystem events that cannot mean a new or changed bulletin (our own reads cause some).
IGNORED_EVENTS = {EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE, EVENT_TYPE_DELETED}
STALE_INTERVALS = 3


def run(settings: Settings) -> int:
    """Run the service until SIGTERM or SIGINT; the exit status."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # APScheduler logs two INFO lines per job run: noise every few seconds.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if settings.digest.enabled or settings.subscribers:
        _check_digest_settings(settings)
    _warn_base_url(settings)
    keeper = Keeper(settings.state.database_url)
    try:
        keeper.start()
        return Service(settings, keeper).serve()
    finally:
        keeper.storage.close()


def _check_digest_settings(settings: Settings) -> None:
    """Refuse to start on a digest config the first digest run would refuse (exit 2, not a log line at 08:00)."""
    try:
        from monitor.digest import check_settings
    except ImportError:
        return
    check_settings(settings)


def _warn_base_url(settings: Settings) -> None:
    """Links in the feed point at [feed] base_url; a port other than the one served is
    right only behind a proxy or a port mapping, and a typo otherwise."""
    port = base_url_port(settings.feed.base_url)
    if settings.http.enabled and port is not None and port != settings.http.port:
        log.warning("[feed] base_url %s names port %s, but the server listens on port %s: the feed's links "
                    "point elsewhere unless a proxy or port mapping forwards %s here",
                    settings.feed.base_url, port, settings.http.port, port)


def health_status(now: dt.datetime, since: dt.datetime, store_error: str | None,
                  scan_seconds: float) -> tuple[int, list[str]]:
    """HTTP status and problems: 503 if the store is unreachable or scans are stale.

    `since` is the end of the last successful scan, or the start of the service before
    the first one, so a service that just started gets the same grace as a running one.
    """
    problems = []
    if store_error is not None:
        problems.append(f"store: {store_error}")
    age = (now - since).total_seconds()
    if age > STALE_INTERVALS * scan_seconds:
        problems.append(f"no successful scan for {age:.0f}s ({STALE_INTERVALS} intervals of {scan_seconds:g}s)")
    return (503 if problems else 200), problems


@dataclass
class ScanState:
    """What /healthz tells about scans; changed only under Service._state_lock."""

    started: dt.datetime
    running: bool = False
    finished: dt.datetime | None = None
    ok: bool | None = None
    summary: str = ""
    error: str | None = None
    last_success: dt.datetime | None = None
    seconds: float = 0.0


class Service:
    def __init__(self, settings: Settings, store: Keeper | Storage) -> None:
        self.settings = settings
        self.keeper = store if isinstance(store, Keeper) else Keeper.around(store)
        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self._work = threading.Lock()
        self._state_lock = threading.Lock()
        self._state = ScanState(started=utcnow())
        self._hint_lock = threading.Lock()
        self._pickup_at: dt.datetime | None = None  # a pickup job is scheduled for then
        self._wanted: dt.datetime | None = None  # the latest moment any event asked a scan for
        self._failing: str | None = None  # the error of the last pass, if it failed outside the store
        self._story_count = 0
        # The keeper's store of the moment: it reopens a store deleted or replaced under it.
        self.publisher = Publisher(settings, lambda: self.keeper.storage)
        if settings.feed.hub:
            self.publisher.listeners.append(websub.listener(settings.feed))
        self._snapshot: Snapshot | None = None
        # Subscribers with cadence "immediate": delivered to right after a pass that found news.
        self._immediate = tuple(s.name for s in settings.subscribers if s.cadence == "immediate")
        self.scheduler = BackgroundScheduler(timezone=dt.UTC, executors={"default": ThreadPoolExecutor(4)})
        wire_jobs(self.scheduler, self)
        try:
            self.refresh(force=True)
        except StorageError as exc:  # a damaged store: serve the last feed file until it is fixed
            self.keeper.failed(exc)
            self._snapshot = self.publisher.last_published()
        except PublishError as exc:  # served over HTTP meanwhile; each pass writes the files again
            log.error("publishing failed: %s", exc)
            self._failing = str(exc)

    @property
    def storage(self) -> Storage:
        return self.keeper.storage

    # -- what the HTTP server reads -------------------------------------------

    def snapshot(self) -> Snapshot:
        assert self._snapshot is not None  # built in __init__
        return self._snapshot

    def document(self, path: str, query: str = "") -> Document | None:
        with self.keeper.using():  # the store is not swapped under a read
            return self.publisher.on_request(path, query)

    def health(self) -> tuple[int, dict[str, Any]]:
        now = utcnow()
        store_error = self.keeper.problem()
        with self._state_lock:
            st = ScanState(**vars(self._state))
        status, problems = health_status(now, st.last_success or st.started, store_error,
                                         self.settings.schedule.scan_seconds)
        failing, refused = self._delivery_report() if store_error is None else ([], [])
        if failing:
            status, problems = 503, [*problems, *failing]
        job = self.scheduler.get_job("scan")
        pickup = self.scheduler.get_job("pickup")
        return status, {
            "status": "ok" if status == 200 else "unhealthy",
            "problems": problems,
            "store": {"ok": store_error is None, "error": store_error,
                      "stories": self._story_count, "notice": self.keeper.notice},
            "last_scan": None if st.finished is None else {
                "finished": _iso(st.finished), "ok": st.ok, "seconds": round(st.seconds, 3),
                "result": st.summary, "error": st.error,
            },
            "last_successful_scan": _iso(st.last_success),
            "scan_running": st.running,
            "next_scan": _iso(job.next_run_time if job else None),
            "next_pickup": _iso(pickup.next_run_time if pickup else None),
            "scan_seconds": self.settings.schedule.scan_seconds,
            "deliveries": {"ok": not (failing or refused), "failing": failing, "refused": refused},
            "time": _iso(now),
        }

    def _delivery_report(self) -> tuple[list[str], list[str]]:
        from monitor.digest import delivery_report

        try:
            with self.keeper.using() as storage:  # an HTTP read, like the documents'
                return delivery_report(self.settings, storage)
        except StorageError as exc:
            return [f"deliveries unknown: {exc}"], []

    @property
    def title(self) -> str:
        return self.settings.feed.title

    def unsubscribe(self, token: str, confirm: bool) -> str | None:
        """The subscriber a valid token names (None for a forged one); with `confirm`, stop its mail."""
        from monitor.notify.unsubscribe import verify

        name = verify(self.settings.digest.unsubscribe_secret, token)
        if name is not None and confirm:
            with self.keeper.using() as storage:  # the store is not swapped under the write
                if storage.unsubscribe(name, utcnow()):
                    log.info("unsubscribed: %s (one-click link)", name)
        return name

    # -- jobs -----------------------------------------------------------------

    def scan_job(self, *, pickup: bool = False) -> None:
        """The interval scan, and the body of every pickup."""
        if not self._acquire_work():
            return
        try:
            started = utcnow()
            if pickup:
                with self._hint_lock:
                    # This scan lists the folder from now on; later events need a pickup of their own.
                    self._pickup_at = None
            changed = self._scan_once()
            if changed and self._immediate:
                self._deliver(self._immediate)
        finally:
            self._work.release()
        self._rearm(started)

    def pickup_job(self) -> None:
        self.scan_job(pickup=True)

    def digest_job(self, names: tuple[str, ...] | None = None) -> None:
        """Deliver what is due to these subscribers (None: the implicit ones of [digest]),
        after retrying whatever is pending for anyone."""
        if not self._acquire_work():
            return
        try:
            self._deliver(names)
        finally:
            self._work.release()

    def _deliver(self, names: tuple[str, ...] | None) -> None:
        try:
            # Imported here: the digest is optional, and a broken one must not stop the scans.
            from monitor.digest import send_pending
            from monitor.notify.subscribers import recipients

            if names is None:
                names = tuple(r.name for r in recipients(self.settings) if r.implicit)
            result = send_pending(self.settings, self.storage, only=names)
            log.debug("delivery job: %s", result)
            retry = result.pending > 0 and not result.busy
        except Exception as exc:
            log.error("digest failed, retrying in %gs: %s", self.settings.digest.retry_seconds, exc,
                      exc_info=not isinstance(exc, MonitorError))
            retry = True
        if retry and not self.stop_event.is_set():
            delay = dt.timedelta(seconds=self.settings.digest.retry_seconds)
            schedule_digest_retry(self.scheduler, self, utcnow() + delay)

    def retry_job(self) -> None:
        """Retry what is pending; claim nothing new for anyone."""
        self.digest_job(names=())

    def _acquire_work(self) -> bool:
        while not self._work.acquire(timeout=0.2):
            if self.stop_event.is_set():
                return False
        if self.stop_event.is_set():
            self._work.release()
            return False
        return True

    def _scan_once(self) -> bool:
        """One pass; True when it found something new or revised."""
        with self._state_lock:
            self._state.running = True
        t0 = time.perf_counter()
        report: ScanReport | None = None
        error = None
        try:
            report = scan(self.settings, self.keeper.before_pass(), stop=self.stop_event)
            self.keeper.succeeded()
            self.refresh(force=report.changed)
        except StorageError as exc:  # said once by the keeper; the next pass starts afresh
            error = str(exc)
            self.keeper.failed(exc)
        except Exception as exc:  # the next run tries again; /healthz turns 503 if it goes on
            error = str(exc) or type(exc).__name__
            # Said once: an unreadable drop folder is not an ERROR line every 30 s.
            level = logging.DEBUG if error == self._failing else logging.ERROR
            # A report with an error: the pass stored its work and the feed files failed.
            log.log(level, "%s failed: %s", "scan" if report is None else "publishing", error,
                    exc_info=not isinstance(exc, (MonitorError, OSError)))
            self._failing = error
        ok = report is not None and error is None
        seconds = time.perf_counter() - t0
        if report is not None and (report.observing or report.skipped):
            # A file still settling (dropped just before the service started, say: no event
            # follows) or left for later is read once it can have settled, not at the next
            # interval pass.
            self._look_again(self.settings.drop.settle_seconds + PICKUP_MARGIN)
        if ok and self._failing is not None:
            log.info("scans succeed again")
            self._failing = None
        if report is not None:
            # A pass that did something is news; an idle one (every 30 s) is not.
            busy = report.files_read or report.rejected or report.changed
            log.log(logging.INFO if busy else logging.DEBUG, "scan: %s in %.2fs", report.summary(), seconds)
        now = utcnow()
        if report is not None:
            self.metrics.scan_done(report, seconds, now.timestamp(), published=error is None)
        else:
            self.metrics.scan_failed(seconds)
        with self._state_lock:
            st = self._state
            st.running, st.finished, st.ok, st.seconds, st.error = False, now, ok, seconds, error
            st.summary = report.summary() if report else ""
            if ok:
                st.last_success = now
        return report is not None and report.changed

    def refresh(self, *, force: bool = False) -> None:
        """Publish again if the store changed (here or in another instance): the files and
        the snapshot the HTTP server reads."""
        try:
            self.publisher.refresh(force=force)
        finally:  # served though a feed file could not be written (PublishError)
            self._snapshot = self.publisher.snapshot or self._snapshot
            self._story_count = count = self.publisher.story_count
            self.metrics.stories_stored.set(count)

    # -- instant pickup --------------------------------------------------------

    def hint(self) -> None:
        """A filesystem event: make sure a scan runs once the file can have settled."""
        if self.stop_event.is_set():
            return
        due = utcnow() + dt.timedelta(seconds=self.settings.drop.settle_seconds + PICKUP_MARGIN)
        with self._hint_lock:
            self._wanted = due if self._wanted is None else max(self._wanted, due)
            if self._pickup_at is not None:
                return  # the pending pickup sees this file; if unsettled then, _rearm follows up
            self._pickup_at = due
        self._schedule(due)

    def _schedule(self, due: dt.datetime) -> None:
        if self.stop_event.is_set() or not schedule_pickup(self.scheduler, self, due):
            with self._hint_lock:
                self._pickup_at = None

    def _look_again(self, seconds: float) -> None:
        """Ask for a pickup after this pass, as an event would (see _rearm)."""
        due = utcnow() + dt.timedelta(seconds=seconds)
        with self._hint_lock:
            self._wanted = due if self._wanted is None else max(self._wanted, due)

    def _rearm(self, started: dt.datetime) -> None:
        """After a scan: one more pickup if an event asked for a later look than this scan's."""
        with self._hint_lock:
            # An event at t asked for a scan at t + settle + margin. This scan, which began at
            # `started`, saw that file settled if t + settle <= started (and listed it: t <= started).
            if self._wanted is None or self._pickup_at is not None:
                return
            if self._wanted - dt.timedelta(seconds=PICKUP_MARGIN) <= started:
                return
            due = max(self._wanted, utcnow())
            self._pickup_at = due
        self._schedule(due)

    def _watch(self) -> Any:
        handler = _Hints(self.hint)
        observer = Observer()
        try:
            observer.schedule(handler, str(self.settings.drop.folder), recursive=False)
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit: the interval scan still works
            log.warning("no filesystem events for %s (%s); scanning every %gs only",
                        self.settings.drop.folder, exc, self.settings.schedule.scan_seconds)
            return None
        return observer

    # -- life cycle ----------------------------------------------------------------

    def serve(self) -> int:
        server = None
        http = self.settings.http
        if http.enabled:
            try:
                server = Server(http.host, http.port, self)
            except OSError as exc:
                log.error("cannot listen on %s:%s: %s", http.host, http.port, exc.strerror or exc)
                return 1
        previous = _install_signals(self.stop_event)
        try:
            self.scheduler.start()
            observer = self._watch()
            if server is not None:
                server.start()
                log.info("serving http://%s:%s/ (feed at /%s)", http.host, server.port, FEED)
            log.info("monitor running: drop folder %s, scan every %gs, settle %gs%s",
                     self.settings.drop.folder.resolve(), self.settings.schedule.scan_seconds,
                     self.settings.drop.settle_seconds,
                     ", digest " + self.settings.digest.schedule if self.settings.digest.enabled else "")
            if not self.settings.digest.unsubscribe_secret and any(
                    r.channel == "email" and r.address for r in _recipients(self.settings)):
                log.warning("digests carry no unsubscribe link: MONITOR_UNSUBSCRIBE_SECRET is not set")
            while not self.stop_event.wait(0.5):
                pass
            self._stop(observer, server)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _stop(self, observer: Any, server: Server | None) -> None:
        log.info("stopping: finishing the current file")
        backstop = threading.Timer(STOP_DEADLINE, _force_exit)
        backstop.daemon = True
        backstop.start()
        if observer is not None:
            observer.stop()
        self.scheduler.shutdown(wait=True)
        if observer is not None:
            observer.join(timeout=2)
        if server is not None:
            server.stop()
        backstop.cancel()
        log.info("stopped")


# -- the scheduler's jobs, all in one place ---------------------------------------------


def wire_jobs(scheduler: BackgroundScheduler, service: Service) -> None:
    """The interval scan, and the digest when enabled. Pickups come from schedule_pickup."""
    settings = service.settings
    # APScheduler's default grace is 1 s, which silently drops runs missed while the
    # process was busy or the machine asleep; coalescing turns a backlog into one run.
    grace = max(1, math.ceil(settings.schedule.misfire_grace_seconds))
    scheduler.add_job(
        service.scan_job, IntervalTrigger(seconds=settings.schedule.scan_seconds, timezone=dt.UTC),
        id="scan", name="scan", next_run_time=utcnow(),  # the first scan right at start
        max_instances=1, coalesce=True, misfire_grace_time=grace,
    )
    if settings.digest.enabled:
        try:
            trigger = crontab_trigger(settings.digest.schedule, ZoneInfo(settings.digest.timezone))
        except ValueError as exc:
            raise ConfigError(settings.source, "[digest] schedule", f"not a crontab line: {exc}") from None
        # A digest missed while the machine slept is still due: once, however late.
        scheduler.add_job(service.digest_job, trigger, id="digest", name="digest",
                          max_instances=1, coalesce=True, misfire_grace_time=None)
    wire_subscriber_jobs(scheduler, service)


def wire_subscriber_jobs(scheduler: BackgroundScheduler, service: Service) -> None:
    """One job per schedule of the `[[subscribers]]` with a daily or weekly cadence."""
    groups: dict[tuple[str, str], list[str]] = {}
    for sub in service.settings.subscribers:
        if sub.cadence != "immediate":
            groups.setdefault((sub.crontab, sub.timezone), []).append(sub.name)
    for n, ((line, tz), names) in enumerate(sorted(groups.items()), 1):
        try:
            trigger = crontab_trigger(line, ZoneInfo(tz))
        except ValueError as exc:
            raise ConfigError(service.settings.source, f"[[subscribers]] {names[0]}: schedule",
                              f"not a crontab line: {exc}") from None
        scheduler.add_job(service.digest_job, trigger, args=(tuple(names),), id=f"deliver-{n}",
                          name=f"deliver to {', '.join(names)}", max_instances=1, coalesce=True,
                          misfire_grace_time=None)


def schedule_digest_retry(scheduler: BackgroundScheduler, service: Service, when: dt.datetime) -> None:
    """A digest left pending (server down, 4xx) is retried soon, not at the next daily run."""
    try:
        scheduler.add_job(service.retry_job, DateTrigger(run_date=when, timezone=dt.UTC), id="digest-retry",
                          name="digest retry", replace_existing=True, max_instances=1, coalesce=True,
                          misfire_grace_time=None)
    except Exception as exc:  # the scheduler is shutting down
        log.debug("digest retry not scheduled: %s", exc)


def schedule_pickup(scheduler: BackgroundScheduler, service: Service, when: dt.datetime) -> bool:
    """One pending one-shot scan (id "pickup")."""
    try:
        # Two instances: one may be scanning while the next waits for it (the work lock)
        # instead of being skipped; hint() never lets more than one wait.
        scheduler.add_job(service.pickup_job, DateTrigger(run_date=when, timezone=dt.UTC), id="pickup",
                          name="pickup", replace_existing=True, max_instances=2, coalesce=True,
                          misfire_grace_time=None)
    except Exception as exc:  # the scheduler is shutting down: the interval scan (or none) follows
        log.debug("pickup not scheduled: %s", exc)
        return False
    return True


class _Hints(FileSystemEventHandler):
    def __init__(self, hint: Any) -> None:
        self._hint = hint

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in IGNORED_EVENTS:
            self._hint()


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("%s received", signal.Signals(signum).name)
        stop.set()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _recipients(settings: Settings) -> list[Any]:
    from monitor.notify.subscribers import recipients

    return recipients(settings)


def _force_exit() -> None:
    log.error("a job did not stop within %gs; exiting anyway", STOP_DEADLINE)
    os._exit(1)


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None
