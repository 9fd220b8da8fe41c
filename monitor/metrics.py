"""The service's Prometheus metrics, in a registry of its own.

A private CollectorRegistry (not prometheus-client's global one) keeps two services in
one process, and the tests, from counting into each other, and leaves out the default
process/platform collectors nobody asked for.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from monitor.models import ScanReport

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Scans take milliseconds when nothing changed and seconds for a large burst.
SCAN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stories_stored = Gauge("monitor_stories_stored", "Stories in the store.", registry=r)
        self.stories_new = Counter("monitor_stories_new", "Stories seen for the first time.", registry=r)
        self.stories_revised = Counter("monitor_stories_revised", "Stories whose text was revised.", registry=r)
        self.scans = Counter("monitor_scans", "Scans of the drop folder, by result (ok, interrupted, error).",
                             ["result"], registry=r)
        self.scan_seconds = Histogram("monitor_scan_duration_seconds", "Duration of one scan, publishing included.",
                                      buckets=SCAN_BUCKETS, registry=r)
        self.files_rejected = Counter("monitor_files_rejected", "Files rejected as not a usable bulletin.",
                                      registry=r)
        self.last_success = Gauge("monitor_last_successful_scan_timestamp_seconds",
                                  "Unix time at which the last successful scan finished.", registry=r)
        self.feed_requests = Counter("monitor_feed_requests", "Requests for the main feed, by HTTP status.",
                                     ["status"], registry=r)
        for result in ("ok", "interrupted", "error"):
            self.scans.labels(result)  # present at 0 from the start, so rates work at once
        for status in ("200", "304"):
            self.feed_requests.labels(status)

    def scan_done(self, report: ScanReport, seconds: float, finished_unix: float, *, published: bool = True) -> None:
        """A pass that stored what it read; not `published` when its feed files could not
        be written, which is no successful scan."""
        self.scans.labels("error" if not published else "interrupted" if report.interrupted else "ok").inc()
        self.scan_seconds.observe(seconds)
        self.stories_new.inc(report.new)
        self.stories_revised.inc(report.revised)
        self.files_rejected.inc(report.rejected)
        if published:
            self.last_success.set(finished_unix)

    def scan_failed(self, seconds: float) -> None:
        self.scans.labels("error").inc()
        self.scan_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
