"""Small frozen values that cross module boundaries.

Named tuples rather than frozen dataclasses: `monitor scan` over an unchanged folder
imports this module, and making these classes as dataclasses was about a tenth of that
command's instructions (see monitor.config for the import of `dataclasses` itself).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, NamedTuple

Kind = Literal["brief", "article"]


class Item(NamedTuple):
    """One news item as written in a bulletin."""

    kind: Kind
    paragraphs: tuple[str, ...]
    title: str | None = None
    published: dt.date | None = None
    # What readers see as its title (an article's title, a brief's opening words), set by
    # the parser and stored with the text: the store never has to ask the parser. Not
    # part of what the item is: two items that differ only in it are equal.
    headline: str = ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Item) and self[:4] == other[:4]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self[:4])


class Rejected(NamedTuple):
    """A file that is not a usable bulletin, and why."""

    reason: str


class Bulletin(NamedTuple):
    """A decoded, segmented bulletin."""

    items: tuple[Item, ...]
    encoding: str


class FileInfo(NamedTuple):
    """A file in the drop folder as seen by one listing."""

    path: str  # relative to the drop folder, POSIX separators
    size: int
    mtime_ns: int


class Story(NamedTuple):
    """A story as published: its current text and its dates."""

    uid: str
    kind: Kind
    title: str
    paragraphs: tuple[str, ...]
    published: dt.date | None
    first_seen: dt.datetime
    updated: dt.datetime


class Version(NamedTuple):
    """One text a story has had, with the bulletin that first carried it."""

    kind: Kind
    title: str
    paragraphs: tuple[str, ...]
    published: dt.date | None
    seen_at: dt.datetime  # when the monitor first saw this text; distinct for every version
    bulletin: str  # the drop-folder file that carried it first


class Event(NamedTuple):
    """A story as it stood once a version became its current text: one entry of the
    timeline that feed archives and the corrections feed are cut from.

    `previous` is the text that was current just before (None for a new story), so a
    correction shows what changed for the reader who saw the story then."""

    uid: str
    version: Version
    previous: Version | None
    key: str  # a stable id of this version (its text hash)


class FileOutcome(NamedTuple):
    """What ingesting one file changed."""

    new: int = 0
    revised: int = 0
    unchanged: int = 0


class ScanReport(NamedTuple):
    """Counts for one pass over the drop folder."""

    files_read: int = 0
    new: int = 0
    revised: int = 0
    unchanged: int = 0
    skipped: int = 0
    rejected: int = 0
    rejections: tuple[tuple[str, str], ...] = ()
    interrupted: bool = False
    # Of the skipped: files modified in the future, settling by observation (no event will
    # come for them, so the service looks again once they can have settled).
    observing: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.new or self.revised)

    def summary(self) -> str:
        return (
            f"files read {self.files_read}, stories new {self.new}, revised {self.revised}, "
            f"unchanged {self.unchanged}, files skipped {self.skipped}, rejected {self.rejected}"
        )


class SearchHit(NamedTuple):
    """A story found by a search, with the text of its best matching version."""

    story: Story
    matched: tuple[str, ...]  # that version's title (for an article) and paragraphs
    current: bool  # whether that version is the story's current text


class SearchResults(NamedTuple):
    """One page of results, ranked, and how many stories matched in all."""

    hits: tuple[SearchHit, ...] = ()
    total: int = 0
    capped: bool = False  # more versions matched than are ranked: `total` counts the ranked ones
