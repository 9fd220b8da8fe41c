"""What the store writes for a text that follows from the text alone.

A new version's paragraphs as JSON, its search stems, and the id of the story it
would found depend on nothing the store holds. The helper process that prepares
files ahead (monitor/prepare.py) makes them there, on the second core, and the pass
only writes them; a text the helper left out is made here by the same function,
so the rows are the same either way.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import NamedTuple

from monitor.models import Item
from monitor.query import index_text

# Story ids are derived from the text that created the story, so the same bulletins
# give the same ids in any store, on any instance.
STORY_NAMESPACE = uuid.UUID("6f1c8f52-3a0e-4b8e-9d1e-5b2a7f0c9e41")
_NAMESPACE_BYTES = STORY_NAMESPACE.bytes
# json.dumps(..., ensure_ascii=False) builds an encoder per call: a third of its cost here.
_PARAGRAPHS_JSON = json.JSONEncoder(ensure_ascii=False).encode


class TextRow(NamedTuple):
    uid: str  # of the story this text founds, if it does
    paragraphs: str  # the versions row's JSON list
    stems: str  # the search index's text (monitor.query.index_text)


def text_row(item: Item, text_hash: str) -> TextRow:
    return TextRow(story_uid(text_hash), _PARAGRAPHS_JSON(list(item.paragraphs)),
                   index_text(item.title, item.paragraphs))


def story_uid(text_hash: str) -> str:
    """The story id ingest gives the story created by the text with this hash: uuid5 in
    STORY_NAMESPACE, built from the SHA-1 digest directly (uuid.UUID's checks cost four
    times as much, once per new story)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + text_hash.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
