"""Checkpoints of a SQLite store's WAL in a thread of their own, off the writer's path.

In WAL mode a commit appends the pages it changed to the WAL, and a checkpoint copies
them into the database file, syncing both. SQLite runs the checkpoint inside the commit
that fills the WAL to `wal_autocheckpoint` pages, and the writer waits for it: on 10,000
bench/gen.py bulletins that was six commits of 0.18 s, each copying about 9,000 pages
between two fsyncs. Here a thread with a connection of its own checkpoints after every
commit (PASSIVE: it neither blocks the writer nor waits for it), so the copying and the
syncing overlap the next group's work.

What only the writer can do is start the WAL again from its beginning: SQLite does it at
the first commit of a transaction that began with every frame already copied. A thread
copying behind a writer that begins its next transaction at once never sees that moment,
and the WAL would grow for the whole pass. So once the WAL has grown by RESTART_FRAMES,
`committed()` waits for the checkpoint of the commit just made (one group's pages): the
next transaction begins on a WAL copied to its end, and its commit starts it afresh. A
checkpoint is always safe for SQLite: a crash in the middle of one loses nothing.

The writer's own connections keep an autocheckpoint (FALLBACK_PAGES), far enough above
what this keeps the WAL to that it only runs when the thread is gone (it could not open
the file, a checkpoint failed) or readers keep the WAL from starting again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# The WAL's growth, in pages, after which the writer waits for one checkpoint so that its
# next commit starts the WAL again: as large as SQLite's autocheckpoint let it grow before
# (monitor.storage.ledger.WAL_CHECKPOINT_PAGES). On 10,000 bench/gen.py bulletins it
# peaked at 17,500 pages (70 MB) and the pass waited five times, 0.37 s in all, instead
# of 1.1 s for six checkpoints in its commits.
RESTART_FRAMES = 10_000
# The writer's connections' own wal_autocheckpoint while a Checkpointer serves them.
FALLBACK_PAGES = 3 * RESTART_FRAMES
# The thread's page cache, in KiB: a checkpoint copies pages from the WAL file to the
# database file without going through it.
CACHE_KIB = 256
# The thread ends (closing its connection) after this long without a commit; the next
# commit starts another. A service between passes, or a Storage a caller forgot to close,
# then holds no thread and no file open for it.
IDLE_SECONDS = 5.0


class Checkpointer:
    """Checkpoints of the SQLite file at `path`, run by a thread started on the first commit."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._changed = threading.Condition()
        self._asked = self._done = 0  # checkpoints asked for, and the last one done
        self._frames = 0  # the WAL's length, in pages, at the last checkpoint
        self._wait_at = RESTART_FRAMES  # the length at which committed() waits next
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.waits = 0  # times a commit waited (for tests and benchmarks)

    def committed(self) -> None:
        """A write transaction committed: copy what it wrote. Call it outside any transaction."""
        with self._changed:
            if self._stopping:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="monitor-checkpoint", daemon=True)
                self._thread.start()
            self._asked += 1
            self._changed.notify_all()
            if self._frames < self._wait_at - RESTART_FRAMES:
                self._wait_at = RESTART_FRAMES  # the WAL started again
            elif self._frames >= self._wait_at:
                wanted = self._asked
                while self._done < wanted and self._thread is not None:
                    self._changed.wait()
                self.waits += 1
                self._wait_at = self._frames + RESTART_FRAMES

    def close(self) -> None:
        """Stop the thread, once the checkpoint it is running (if any) is done."""
        with self._changed:
            self._stopping = True
            thread = self._thread
            self._changed.notify_all()
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self._gone(f"could not open the store ({exc})")
            return
        try:
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            while (asked := self._next()) is not None:
                # fetchall(): the statement is then done, so this connection holds no read
                # lock, which would keep the writer from starting the WAL again.
                _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
                with self._changed:
                    self._frames, self._done = frames, asked
                    self._changed.notify_all()
        except sqlite3.Error as exc:
            self._gone(f"stopped ({exc})")
        finally:
            conn.close()

    def _next(self) -> int | None:
        """The checkpoint to run next (how many were asked for by then), or None: stop."""
        with self._changed:
            while self._asked == self._done and not self._stopping:
                if not self._changed.wait(IDLE_SECONDS) and self._asked == self._done:
                    self._thread = None  # idle: the next commit starts a thread again
                    return None
            return None if self._stopping else self._asked

    def _gone(self, why: str) -> None:
        log.info("the thread that checkpoints %s %s; commits checkpoint as they fill the WAL", self._path, why)
        with self._changed:
            self._thread = None
            self._stopping = True
            self._changed.notify_all()
