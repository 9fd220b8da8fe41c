"""The state store: the only package that imports SQLAlchemy.

* `Storage` (store.py): one class with methods shaped around the pipeline: what files
  were seen, ingesting one file's items in one transaction, reading the newest stories
  for the feed and the digest, and the bookkeeping of scans.
* `Ledger` (ledger.py): the few reads and the one write an idle `monitor scan` needs,
  on a SQLite store, with the standard library alone.

`Storage` is imported on first use, so that importing this package (for the ledger)
does not import SQLAlchemy, which is most of a short command's start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.storage.store import STORY_NAMESPACE, Storage, metadata

__all__ = ["STORY_NAMESPACE", "Storage", "metadata"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from monitor.storage import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
