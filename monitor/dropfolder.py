"""The drop folder: listing, the settle check, and reading one file. Never writes.

Only regular files directly in the folder are bulletins. Hidden files and the
temporary names producers write before renaming (``*.tmp``, ``*.part``) are ignored;
symbolic links are never followed (one could point anywhere on the machine).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from monitor.errors import DropFolderError
from monitor.models import FileInfo

log = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".tmp", ".part")
# The reason recorded for a file this process may not read. Fixing the permissions
# (chmod, chown) changes neither size nor mtime, so such a file is also read again
# once it is readable (to_read), not only when it changes.
UNREADABLE = "permission denied: the file cannot be read"


class Entry(NamedTuple):
    """A listed name: its record key, where it is, and why it is not a bulletin, if not."""

    info: FileInfo
    # The path as listed, a str: a Path per entry costs more than the listing itself, and
    # most entries of a pass are unchanged files that are never opened.
    where: str
    problem: str | None = None

    @property
    def location(self) -> Path:
        return Path(self.where)


class FileChanged(Exception):
    """The file changed or vanished while it was read; try again on a later pass."""


def safe_name(name: str) -> str:
    """A name that any database can store, even if the bytes on disk are not UTF-8."""
    if name.isascii():
        return name  # the common case (list_entries checks it inline), and the round trip would change nothing
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shown(name: str) -> str:
    """A name as printed in a log line, `monitor status` or /healthz: control characters
    (a newline would forge a log line), format characters (bidi overrides reorder what
    follows) and separators other than the space are written as escapes (\\n, \\x1b,
    \\u202e), so each name is one line and reads as it is spelled."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else _escape(c) for c in name)


def _escape(c: str) -> str:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if c in named:
        return named[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def list_entries(folder: Path, unchanged: Mapping[str, tuple[int, int]] | None = None) -> list[Entry]:
    """Every candidate name in the folder, oldest first (mtime, then name).

    Names whose (size, mtime_ns) equal their value in `unchanged` (what the store
    recorded) are left out early: an idle pass over a big folder then costs little more
    than the listing itself.
    """
    recorded = (unchanged or {}).get
    entries = []
    try:
        it = os.scandir(folder)
    except OSError as exc:
        raise DropFolderError(f"cannot list the drop folder {shown(str(folder))}: {exc.strerror or exc}") from None
    with it:
        for de in it:
            name = de.name
            if name[0] == "." or name.endswith(IGNORED_SUFFIXES):
                continue
            try:
                st = de.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone between listing and stat
            if not name.isascii():
                name = safe_name(name)
            if recorded(name) == (st.st_size, st.st_mtime_ns):
                continue
            info = FileInfo(path=name, size=st.st_size, mtime_ns=st.st_mtime_ns)
            entries.append(Entry(info, de.path, _problem(st.st_mode)))
    entries.sort(key=lambda e: (e.info.mtime_ns, e.info.path))
    return entries


def to_read(folder: Path, recorded: Mapping[str, tuple[int, int]], rejected: Iterable[tuple[str, str]]) -> list[Entry]:
    """What a pass must look at, oldest first: names new or changed since `recorded` (the
    store's (size, mtime_ns) by path), and those rejected as UNREADABLE that this process
    may read now (checked with access(2), no file is opened)."""
    again = {path for path, reason in rejected if reason == UNREADABLE and os.access(folder / path, os.R_OK)}
    if again:
        recorded = {path: state for path, state in recorded.items() if path not in again}
    return list_entries(folder, recorded)


def _problem(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "symbolic link: not followed"
    if stat.S_ISDIR(mode):
        return "a directory, not a bulletin: subfolders are not scanned"
    return "not a regular file"


def is_settled(info: FileInfo, now_ns: int, settle_seconds: float) -> bool:
    """A file still being written (recent mtime) is left for a later pass."""
    return now_ns - info.mtime_ns >= settle_seconds * 1e9


def in_future(info: FileInfo, now_ns: int) -> bool:
    """Modified later than now: the producer's clock is ahead of ours (clock skew), so the
    mtime cannot say how long the file has been still; observations do (observed_still)."""
    return info.mtime_ns > now_ns


def observed_still(since_ns: int | None, now_ns: int, settle_seconds: float) -> bool:
    """Seen with the same size and mtime since `since_ns` for at least `settle_seconds`."""
    return since_ns is not None and now_ns - since_ns >= settle_seconds * 1e9


def read(entry: Entry, max_bytes: int) -> bytes:
    """Read a whole file, refusing to follow a link; FileChanged if it moved under us."""
    fd = os.open(entry.where, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        before = os.fstat(fh.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise FileChanged("no longer a regular file")
        # As much as the file holds and one byte more (growth shows as a length mismatch):
        # read(max_bytes + 1) allocated the whole limit (10 MB by default) for every file and
        # then shrank it: 15 % of the helper's samples over bench/gen.py's 5 KB files, under
        # bench/run.py's 50 MB limit.
        data = fh.read(min(before.st_size, max_bytes) + 1)
        after = os.fstat(fh.fileno())
    if (after.st_size, after.st_mtime_ns) != (entry.info.size, entry.info.mtime_ns) or len(data) != after.st_size:
        raise FileChanged("changed while being read")
    return data
