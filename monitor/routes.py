"""The dynamic HTTP routes: answers computed per request, in the server's worker threads.

Documents (the feed, the front page, whatever else the snapshot carries) never get
here: `monitor.server` answers them from memory on its event loop. What is left may
read the store or the metrics registry, so it runs in a small thread pool where a slow
store holds up only these routes, never the feed. To add a route, add a `Route` to
`ROUTES`: a full-match pattern, the handler, the methods it takes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from monitor import page
from monitor.documents import HTML_TYPE, JSON_TYPE, TEXT_TYPE, Snapshot
from monitor.errors import StorageError
from monitor.metrics import CONTENT_TYPE as METRICS_TYPE
from monitor.metrics import Metrics
from monitor.models import Story

log = logging.getLogger(__name__)

STORY_PATH = re.compile(r"/stories/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
NO_STORE = {"Cache-Control": "no-store"}


class Site(Protocol):
    """What the server needs from the service."""

    metrics: Metrics

    def snapshot(self) -> Snapshot: ...

    def health(self) -> tuple[int, dict[str, Any]]: ...

    def story(self, uid: str) -> Story | None: ...


class Request(NamedTuple):  # a tuple: built for every request on the server's fast path
    method: str  # upper case, as sent
    path: str  # the target's path, not decoded
    query: str  # after "?", not decoded
    headers: Mapping[str, str]  # names in lower case; repeated fields joined with ", "
    body: bytes = b""  # POST only, at most MAX_BODY bytes


@dataclass(frozen=True)
class Response:
    status: int
    ctype: str | None
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Site, Request, "re.Match[str]"], Response]


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    handler: Handler
    methods: frozenset[str] = frozenset({"GET", "HEAD"})


def text(status: int, message: str) -> Response:
    return Response(status, TEXT_TYPE, message.encode() + b"\n")


def healthz(site: Site, request: Request, match: re.Match[str]) -> Response:
    status, data = site.health()
    return Response(status, JSON_TYPE, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n", NO_STORE)


def metrics(site: Site, request: Request, match: re.Match[str]) -> Response:
    return Response(200, METRICS_TYPE, site.metrics.render(), NO_STORE)


def story_page(site: Site, request: Request, match: re.Match[str]) -> Response:
    key = match.group(1)
    snap = site.snapshot()
    story = snap.stories.get(key)
    if story is None:
        try:
            story = site.story(f"urn:uuid:{key}")  # older than the feed's window
        except StorageError as exc:
            log.warning("story page %s: %s", key, exc)
            return text(503, "store unavailable")
    if story is None:
        return text(404, "not found")
    return Response(200, HTML_TYPE, page.story_page(snap.feed_title, story).encode(), {"Cache-Control": "no-cache"})


ROUTES: tuple[Route, ...] = (
    Route(re.compile(re.escape("/healthz")), healthz),
    Route(re.compile(re.escape("/metrics")), metrics),
    Route(STORY_PATH, story_page),
)


def find(path: str) -> tuple[Route, re.Match[str]] | None:
    for route in ROUTES:
        if match := route.pattern.fullmatch(path):
            return route, match
    return None
