"""The dynamic HTTP routes: answers computed per request, in the server's worker threads.

Documents (the feeds, the front page, whatever else the snapshot carries) never get
here: `monitor.server` answers them from memory on its event loop. What is left may
read the store or the metrics registry, so it runs in a small thread pool where a slow
store holds up only these routes, never the feed: health, metrics, the documents
the publisher makes on request (a story's history, older pages, feed archives, a search),
which get the same validators, gzip and 304 as the snapshot's, and a digest's unsubscribe
link (the one route that takes a POST). To add a route, add a `Route` to
`ROUTES`: a full-match pattern, the handler, the methods it takes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from monitor.documents import (
    HTML_HEADERS,
    HTML_TYPE,
    JSON_TYPE,
    TEXT_TYPE,
    Document,
    Snapshot,
    accepts_gzip,
    not_modified,
)
from monitor.errors import StorageError
from monitor.metrics import CONTENT_TYPE as METRICS_TYPE
from monitor.metrics import Metrics
from monitor.publish import ON_REQUEST

log = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store"}
# A digest's one-click link: /unsubscribe/<name>.<mac> (monitor.notify.unsubscribe).
UNSUBSCRIBE = re.compile(r"/unsubscribe/([A-Za-z0-9_-]{1,400}\.[A-Za-z0-9_-]{1,100})")


class Site(Protocol):
    """What the server needs from the service."""

    metrics: Metrics

    def snapshot(self) -> Snapshot: ...

    def health(self) -> tuple[int, dict[str, Any]]: ...

    def document(self, path: str, query: str = "") -> Document | None:
        """A document the publisher makes on request; None if there is none at that path
        (`query`, the request's query string, is read by a search).
        Raises StorageError when the store cannot be read."""

    def unsubscribe(self, token: str, confirm: bool) -> str | None:
        """The subscriber a valid token names (None for a forged one); with `confirm`, stop
        its mail. Raises StorageError when the store cannot be written."""

    @property
    def title(self) -> str:
        """The site's name, as the pages show it."""


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


def published(site: Site, request: Request, match: re.Match[str]) -> Response:
    try:
        doc = site.document(request.path, request.query)
    except StorageError as exc:
        log.warning("%s: %s", request.path, exc)
        return text(503, "store unavailable")
    if doc is None:
        return text(404, "not found")
    variant = doc.gzipped if accepts_gzip(request.headers.get("accept-encoding")) else doc.identity
    headers = {"ETag": variant.etag, "Last-Modified": doc.last_modified, "Cache-Control": doc.cache_control,
               "Vary": "Accept-Encoding"}
    if not_modified(doc, request.headers.get("if-none-match"), request.headers.get("if-modified-since")):
        return Response(304, None, b"", headers)
    if variant is doc.gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(200, doc.ctype, variant.body, headers)


def unsubscribe(site: Site, request: Request, match: re.Match[str]) -> Response:
    """GET: the confirmation page with its button (mail scanners follow links, so a GET
    changes nothing); POST: unsubscribe (RFC 8058 one-click; the form body is not needed)."""
    from monitor import page
    from monitor.publish import links

    confirm = request.method == "POST"
    try:
        name = site.unsubscribe(match.group(1), confirm)
    except StorageError as exc:
        log.warning("unsubscribe: %s", exc)
        return text(503, "store unavailable, try again later")
    body = page.unsubscribe_page(site.title, name, links(), done=confirm).encode()
    # The confirmation page's button posts back here: the one form this site has.
    csp = HTML_HEADERS["Content-Security-Policy"].replace("form-action 'none'", "form-action 'self'")
    return Response(200 if name else 403, HTML_TYPE, body, {"Content-Security-Policy": csp, **NO_STORE})


ROUTES: tuple[Route, ...] = (
    Route(re.compile(re.escape("/healthz")), healthz),
    Route(re.compile(re.escape("/metrics")), metrics),
    Route(ON_REQUEST, published),
    Route(UNSUBSCRIBE, unsubscribe, frozenset({"GET", "HEAD", "POST"})),
)


def find(path: str) -> tuple[Route, re.Match[str]] | None:
    for route in ROUTES:
        if match := route.pattern.fullmatch(path):
            return route, match
    return None
