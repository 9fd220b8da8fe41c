"""The work on a file that needs no store, and a helper process that does it ahead.

Reading, decoding and segmenting a file, normalising and hashing its items,
fingerprinting them (shingles, band keys) and making the rows the store writes for
them (monitor/rows.py: search stems, paragraphs as JSON, the story id) is over 40 %
of a pass's work and needs nothing from the store. On a pass with many files a helper
process (`monitor.prepare.main`, started by `Ahead`) does that work for the next
files while the pass decides and writes the current one, so on two cores the two
halves overlap instead of adding up.

The helper is a shortcut, never a dependency: what it does not deliver (it could not
start, it died, a read failed there, or a text was left out because the helper
fingerprinted it for an earlier file of the pass) is done in the pass by the same
`digest()`, so a pass decides exactly the same with or without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

try:
    import fcntl
except ImportError:  # not on Windows: the pipe keeps its size
    fcntl = None  # type: ignore[assignment]

from monitor import bulletin, dropfolder
from monitor.identity import Fingerprint, fingerprint, normalized_paragraphs, text_hash
from monitor.models import Bulletin, FileInfo, Item, Rejected
from monitor.rows import TextRow, text_row

if TYPE_CHECKING:
    import datetime as dt

    from monitor.config import DropSettings

log = logging.getLogger(__name__)

# Below this many files a pass does the work itself: starting the helper (an
# interpreter and the parser's imports) costs about as much as 20 files.
AHEAD_MIN_FILES = 20
# Files asked for ahead of the one being decided: enough to keep the helper busy
# while the pass commits a group (tens of milliseconds: 30 to 60 files of the helper's),
# few enough that what waits stays small. Their replies wait in the pipe, which is made
# large enough for them (PIPE_BYTES): at Linux's default of 64 KB the helper blocked
# after three replies (a reply is about 23 KB on bench/gen.py's bulletins), and the pass
# waited 1.5 to 3 s of a 17 s pass for it. With 32 in a 1 MB pipe, paired runs over 10,000
# files took 0.93 of the time on a busy hour (the helper's core taken away for a moment) and
# the same time on a quiet one.
WINDOW = 32
# Requests go in batches of this many, with one write: each write woke the helper, and
# one per file cost the pass 33 µs (0.33 s over 10,000 files, most of it in the kernel).
REFILL = 8
# The most an unprivileged process may ask for (/proc/sys/fs/pipe-max-size's default);
# kernel memory, not the pass's or the helper's.
PIPE_BYTES = 1 << 20
# The texts the helper fingerprinted this pass (their fingerprints went with the first
# file that carried them): bounded, as a service pass can be long.
SEEN_LIMIT = 200_000


@dataclass
class Prepared:
    """A file as the pass needs it: its content hash, its items and their text hashes,
    and fingerprints and store rows for the texts that `digest()` was asked for."""

    sha256: str
    parsed: Bulletin | Rejected
    hashes: tuple[str, ...]
    # The items' normalized paragraphs, kept for fingerprint() in the pass's own digest;
    # None from the helper (not worth their bytes in the pipe for the few it leaves out).
    forms: list[list[str]] | None = None
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    rows: dict[str, TextRow] = field(default_factory=dict)

    @property
    def items(self) -> tuple[Item, ...]:
        return () if isinstance(self.parsed, Rejected) else self.parsed.items

    def fingerprint(self, index: int) -> Fingerprint:
        """The fingerprint of item `index`: prepared, or made now."""
        found = self.fingerprints.get(self.hashes[index])
        if found is None:
            item = self.items[index]
            form = self.forms[index] if self.forms is not None else normalized_paragraphs(item)
            found = self.fingerprints[self.hashes[index]] = fingerprint(item, form, hashed=self.hashes[index])
        return found


def digest(data: bytes, seen: set[str] | None = None) -> Prepared:
    """Parse `data` and hash its items. With `seen` (the helper), also fingerprint and
    stem every text not in it, and add them: a text met in an earlier file of the pass
    is in the store by the time the pass decides this file."""
    parsed = bulletin.parse(data)
    items = () if isinstance(parsed, Rejected) else parsed.items
    forms = [normalized_paragraphs(item) for item in items]
    hashes = tuple(text_hash(item, form) for item, form in zip(items, forms, strict=True))
    prepared = Prepared(hashlib.sha256(data).hexdigest(), parsed, hashes, forms if seen is None else None)
    if seen is not None:
        for item, form, h in zip(items, forms, hashes, strict=True):
            if h not in seen and h not in prepared.fingerprints:
                prepared.fingerprints[h] = fingerprint(item, form, hashed=h)
                prepared.rows[h] = text_row(item, h)
        if len(seen) > SEEN_LIMIT:
            seen.clear()
        seen.update(hashes)
    return prepared


def ahead_for(drop: DropSettings, entries: Sequence[dropfolder.Entry],
              now: dt.datetime) -> contextlib.AbstractContextManager[Ahead | None]:
    """The helper for a pass over `entries`, when enough of them are files the pass will
    surely read (regular, not too large, settled by their mtime); else no helper."""
    now_ns = int(now.timestamp() * 1e9)
    readable = [e for e in entries if e.problem is None and e.info.size <= drop.max_bytes
                and not dropfolder.in_future(e.info, now_ns)
                and dropfolder.is_settled(e.info, now_ns, drop.settle_seconds)]
    if len(readable) < AHEAD_MIN_FILES:
        return contextlib.nullcontext()
    return Ahead(readable, drop.max_bytes)


class Ahead:
    """The helper process, and the files of a pass it prepares, in pass order.

    `take(entry)` returns the entry's `Prepared`, or None for the pass to do it. Any
    fault of the helper (it cannot start, it exits, it sends garbage) ends it quietly:
    the rest of the pass goes without it.
    """

    def __init__(self, entries: Sequence[dropfolder.Entry], max_bytes: int) -> None:
        self._entries = list(entries)
        self._position = {entry.where: i for i, entry in enumerate(self._entries)}
        self._max_bytes = max_bytes
        self._sent = self._received = 0
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._proc = subprocess.Popen(
                helper_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                # Its faults end it and the pass does its work: nothing of it reaches the operator.
                stderr=subprocess.DEVNULL, env=_helper_env())
            _widen(self._proc.stdout)
            self._send(WINDOW)
        except (OSError, ValueError) as exc:
            self._end(f"could not start ({exc})")

    def take(self, entry: dropfolder.Entry) -> Prepared | None:
        """The entry's Prepared, once: a group that runs again (a lost race) does its files
        itself, as what was handed out is not kept (a Prepared of long articles holds
        their shingles: megabytes)."""
        index = self._position.get(entry.where)
        if index is None or self._entries[index].info != entry.info or index < self._received:
            return None
        prepared = None
        while self._proc is not None and self._received <= index:
            prepared = self._receive()
        return prepared if self._received == index + 1 else None

    def close(self) -> None:
        self._end(None)

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, count: int) -> None:
        """Ask for the next `count` files (fewer at the end), in one write."""
        assert self._proc is not None and self._proc.stdin is not None
        for entry in self._entries[self._sent:self._sent + count]:
            info = entry.info
            pickle.dump((info.path, entry.where, info.size, info.mtime_ns, self._max_bytes), self._proc.stdin)
            self._sent += 1
        self._proc.stdin.flush()

    def _receive(self) -> Prepared | None:
        """The next file's Prepared (None: the pass does that file); REFILL more asked for
        once that many replies have come since the last request."""
        assert self._proc is not None and self._proc.stdout is not None
        try:
            prepared = pickle.load(self._proc.stdout)
            if prepared is not None and not isinstance(prepared, Prepared):
                raise ValueError(f"sent a {type(prepared).__name__}")
            self._received += 1
            if self._sent < len(self._entries) and self._sent - self._received <= WINDOW - REFILL:
                self._send(REFILL)
            return prepared
        except Exception as exc:  # it exited, or sent what is not a Prepared: either way, it is done
            self._end(f"stopped ({type(exc).__name__}: {exc})")
            return None

    def _end(self, why: str | None) -> None:
        proc, self._proc = self._proc, None
        if why is not None:
            log.info("the helper that reads files ahead %s; the pass goes on without it", why)
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(timeout=2)  # it exits at the end of its input
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _widen(pipe: IO[bytes] | None) -> None:
    """Make the replies' pipe hold PIPE_BYTES, where the system allows (Linux); else it stays as it is."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)  # None without fcntl (Windows) and outside Linux
    if pipe is not None and setsize is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), setsize, PIPE_BYTES)


def helper_command() -> list[str]:
    # Not `-m monitor.prepare`: run as __main__, its classes would not unpickle here.
    return [sys.executable, "-c", "from monitor.prepare import main; main()"]


def _helper_env() -> dict[str, str]:
    """The environment, with this package importable however it was installed."""
    here = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here if not path else f"{here}{os.pathsep}{path}"}


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The helper: for each (path, where, size, mtime_ns, max_bytes) read, a Prepared or
    None (the pass then reads the file itself, and reports what goes wrong)."""
    seen: set[str] = set()
    while True:
        try:
            path, where, size, mtime_ns, max_bytes = pickle.load(requests)
        except EOFError:
            return
        try:
            data = dropfolder.read(dropfolder.Entry(FileInfo(path, size, mtime_ns), where), max_bytes)
            reply: Prepared | None = digest(data, seen)
        except Exception:  # whatever it is, the pass meets it again and says so
            reply = None
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


def main() -> None:
    # Ctrl-C reaches the whole process group: the pass decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError):  # the pass ended (or was killed) first
        serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
