"""What the HTTP server publishes: pre-rendered documents and the snapshot that holds them. Pure.

A `Document` carries its bytes, the gzip of them, a strong ETag for each, Last-Modified
and the response heads, all computed once when the snapshot is built. Answering a
request for it is then a dictionary look-up, a validator comparison and one send: the
fast path of `monitor.server`. Any path in `Snapshot.documents` is served this way.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from monitor import __version__
from monitor.publish import FEED

ATOM_TYPE = "application/atom+xml; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
FEED_PATH = "/" + FEED
SERVER = f"monitor/{__version__}"
# Pages carry only escaped text and inline CSS; the policy makes any markup that
# slipped through inert as well (no script, no plugin, no remote fetch).
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
REASONS = {200: "OK", 304: "Not Modified", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
           503: "Service Unavailable", 505: "HTTP Version Not Supported"}


def content_headers(ctype: str | None) -> dict[str, str]:
    """The headers that go with a content type: the security policy for every HTML answer."""
    if ctype is None:
        return {}
    headers = {"Content-Type": ctype}
    if ctype.startswith("text/html"):
        headers.update(HTML_HEADERS)
    return headers


def response_head(status: int, headers: Mapping[str, str]) -> bytes:
    """Status line and header lines, without Date, Connection and the blank line (added per send)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", f"Server: {SERVER}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


@dataclass(frozen=True, eq=False)  # hashed by identity: a key of the server's per-second answer cache
class Variant:
    """One representation (identity or gzip) of a document, with its two pre-built heads."""

    body: bytes
    etag: str
    ok_head: bytes  # 200
    not_modified_head: bytes  # 304: the same validators and caching headers, no content headers


@dataclass(frozen=True)
class Document:
    """A document served from memory; every header any GET or HEAD needs is computed once."""

    ctype: str
    identity: Variant
    gzipped: Variant
    modified: dt.datetime  # to the second (HTTP dates have no fraction)
    last_modified: str

    cache_control: str = "no-cache"

    @classmethod
    def build(cls, body: bytes, ctype: str, modified: dt.datetime, *, cache_control: str = "no-cache") -> Document:
        modified = modified.astimezone(dt.UTC).replace(microsecond=0)
        last_modified = email.utils.format_datetime(modified, usegmt=True)
        digest = hashlib.sha256(body).hexdigest()
        # A different content-coding is a different representation, so a different strong tag.
        identity = _variant(body, f'"{digest}"', ctype, last_modified, None, cache_control)
        gzipped = _variant(gzip.compress(body, compresslevel=6, mtime=0), f'"{digest}-gzip"', ctype,
                           last_modified, "gzip", cache_control)
        return cls(ctype, identity, gzipped, modified, last_modified, cache_control)

    @property
    def etags(self) -> tuple[str, str]:
        return self.identity.etag, self.gzipped.etag


def _variant(body: bytes, etag: str, ctype: str, last_modified: str, coding: str | None,
             cache_control: str) -> Variant:
    validators = {"ETag": etag, "Last-Modified": last_modified, "Cache-Control": cache_control,
                  "Vary": "Accept-Encoding"}
    content = content_headers(ctype)
    if coding:
        content["Content-Encoding"] = coding
    content["Content-Length"] = str(len(body))
    return Variant(body, etag, response_head(200, {**content, **validators}), response_head(304, validators))


@dataclass(frozen=True)
class Snapshot:
    """What the publisher (monitor.publish) hands over after each change of the store;
    swapped as a whole, never edited. Documents made on request (a story's history, an
    archive, an older page) are not here: they are a route (monitor.routes)."""

    documents: Mapping[str, Document]  # by request path: the feeds and the front page


@functools.lru_cache(maxsize=256)  # clients send a handful of distinct values, over and over
def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding value allows gzip (RFC 9110 12.5.3, q=0 means no)."""
    if not header:
        return False
    qualities: dict[str, float] = {}
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        qualities[coding.strip().lower()] = q
    for coding in ("gzip", "x-gzip"):
        if coding in qualities:
            return qualities[coding] > 0
    return qualities.get("*", 0.0) > 0


def not_modified(doc: Document, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """RFC 9110 13.1: If-None-Match decides when present (weak comparison), else If-Modified-Since."""
    if if_none_match is not None:
        if if_none_match in doc.etags:  # what a client that has the document sends
            return True
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or not tags.isdisjoint(doc.etags)
    if if_modified_since:
        if if_modified_since == doc.last_modified:
            return True
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False  # an unparseable date is ignored, as the RFC says
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        return doc.modified <= since
    return False
