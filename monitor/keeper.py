"""The store of a running service, kept usable through the faults an operator causes.

`monitor run` lives for months; its store may meanwhile be deleted (`rm -r state/`),
replaced (a backup restored), damaged (garbage in the file) or starved (a full disk).
A one-shot command meets such a fault once and exits 3; the service must notice it,
say so once in the log and in /healthz, and recover at the next pass without losing
what the drop folder holds. The `Keeper` does that around `Storage`:

- before each pass (`before_pass`), a SQLite file gone or replaced is reopened; a new
  one is created and migrated, and the pass then reads every file of the drop folder
  into it (the drop folder is never modified, so nothing it holds is lost);
- after a pass that failed on the store (`failed`), every pooled connection is
  dropped, so the next pass starts afresh: a WAL wedged by a full disk is checkpointed
  by the new connection (monitor.storage.ledger), a damaged page is not served from a
  cache, and a store found damaged is tried again at every pass until it is fixed;
- /healthz reads `problem` and `notice`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from monitor.dropfolder import shown
from monitor.errors import StorageError, StoreDamaged
from monitor.storage import Storage

log = logging.getLogger(__name__)


class Keeper:
    def __init__(self, url: str, storage: Storage | None = None) -> None:
        self.url = url
        self.storage = storage if storage is not None else Storage.open(url, upgrade=False)
        self.notice: str | None = None  # the last recovery, for /healthz
        self._ready = False  # migrated and usable, as far as the last pass knows
        self._last_error: str | None = None
        # Held by the HTTP threads while they read and by _reopen while it swaps the store:
        # the last connection to a deleted file, closed late, would delete by its path the
        # write-ahead log that the new store has made there meanwhile.
        self._lock = threading.Lock()

    @classmethod
    def around(cls, storage: Storage) -> Keeper:
        """A keeper of a store opened (and migrated) already."""
        keeper = cls(storage.url, storage)
        keeper._ready = True
        return keeper

    def start(self) -> None:
        """Open the store for the service; a damaged one is reported and retried at every
        pass (the service serves meanwhile); any other store error ends the start (exit 3)."""
        try:
            self.before_pass()
        except StoreDamaged as exc:
            self.failed(exc)

    def before_pass(self) -> Storage:
        """The store to use for the next pass (under the service's work lock); StorageError
        if it cannot be used now."""
        why = self.storage.replaced() if self._ready else None
        if why is not None:
            self._reopen(why)
        if not self._ready:
            self.storage.upgrade()
            self._ready = True
        return self.storage

    def succeeded(self) -> None:
        if self._last_error is not None:
            log.info("the store %s is usable again", self._where())
            self._last_error = None

    def failed(self, exc: BaseException) -> None:
        """A pass (or a read) met this store error; the next pass starts afresh."""
        message = str(exc)
        # Said once: a store left damaged for a night is not an ERROR line every 30 s.
        if message != self._last_error:
            log.error("store: %s", message)
        else:
            log.debug("store still failing: %s", message)
        self._last_error = message
        self.storage.reset()
        if isinstance(exc, StoreDamaged):
            self._ready = False

    @contextmanager
    def using(self) -> Iterator[Storage]:
        """The store, for a read outside the passes (an HTTP request)."""
        with self._lock:
            yield self.storage

    def problem(self) -> str | None:
        """What /healthz reports about the store now, or None when it is fine."""
        why = self.storage.replaced()
        if why is not None:
            return f"the store {self._where()} was {why}: it is reopened at the next pass"
        if self._last_error is not None:
            return self._last_error
        try:
            with self.using() as storage:
                storage.ping()
        except StorageError as exc:
            return str(exc)
        return None

    def _reopen(self, why: str) -> None:
        created = why == "deleted"
        log.warning("the store %s was %s while the service ran: %s", self._where(), why,
                    "creating a new one and reading the drop folder into it" if created else "opening the new file")
        with self._lock:
            old = self.storage
            self.storage = Storage.open(self.url, upgrade=False)
            old.close()
            self._ready = False
        when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.notice = (f"{when}: the store {self._where()} was {why}; "
                       + ("a new one was created and the drop folder read into it" if created else "reopened"))

    def _where(self) -> str:
        return shown(str(self.storage.path)) if self.storage.path is not None else "(database server)"
