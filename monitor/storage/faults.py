"""The one translator from database errors to the `StorageError` an operator reads.

`Storage` (through SQLAlchemy, whose errors wrap the driver's in `.orig`) and the
idle scan's ledger (plain `sqlite3`) both hand their errors to `store_error`, so the
same fault gives the same line whichever path met it. Standard library only: the
ledger's path never imports SQLAlchemy.
"""

from __future__ import annotations

import os
import re
import sqlite3
import urllib.parse
from pathlib import Path

from monitor.errors import StorageError, StoreConflict, StoreDamaged, StoreMissing

# SQLite's primary result codes (https://sqlite.org/rescode.html); extended codes carry
# the primary one in their low byte.
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26

# Free space below which a commit the driver failed without a reason is taken for a full
# disk (a group's WAL frames are a few megabytes).
FULL_BYTES = 16 * 1024 * 1024
REBUILD_HINT = "restore it from a backup, or build a new one from the drop folder with `monitor rebuild`"


def store_error(exc: BaseException, url: str) -> StorageError:
    """The StorageError for a database error met while using the store at `url`."""
    orig = getattr(exc, "orig", None) or exc
    detail = mask(first_line(orig), url)
    if type(orig).__name__ in ("IntegrityError", "UniqueViolation") or isinstance(orig, sqlite3.IntegrityError):
        # The caller may expect this one (a claim that lost a race): a type of its own.
        return StoreConflict(f"database error: {detail}")
    if isinstance(orig, sqlite3.Error):
        return _sqlite_error(orig, detail, sqlite_path(url))
    if isinstance(orig, SystemError) and (path := sqlite_path(url)) is not None:
        return _driver_failure(path, detail)
    if type(orig).__name__ == "OperationalError":  # DBAPI's name for "could not talk to the server"
        return StorageError(f"database unreachable: {detail}")
    return StorageError(f"database error: {detail}")


def _sqlite_error(exc: sqlite3.Error, detail: str, path: Path | None) -> StorageError:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    where = str(path) if path is not None else "(in memory)"
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return StoreDamaged(f"the store {where} is damaged ({detail}): {REBUILD_HINT}")
    if code == SQLITE_FULL:
        return StorageError(f"the disk holding the store {where} is full ({detail}): "
                            "free some space; the next pass completes the work")
    if code == SQLITE_CANTOPEN:
        return StorageError(f"cannot open the store {where} ({detail})")
    if code == SQLITE_READONLY:
        return StorageError(f"cannot write the store {where} ({detail})")
    if code == SQLITE_IOERR:
        return StorageError(f"input/output error on the store {where} ({detail})")
    return StorageError(f"database error: {detail}")


def _driver_failure(path: Path, detail: str) -> StorageError:
    """CPython's sqlite3 can fail a COMMIT that met a full disk with "returned NULL without
    setting an exception", no SQLite code attached: the disk tells what happened."""
    try:
        st = os.statvfs(path.parent)
        short = st.f_bavail * st.f_frsize < FULL_BYTES
    except OSError:
        short = False
    if short:
        return StorageError(f"the disk holding the store {path} is full (the SQLite driver failed: {detail}): "
                            "free some space; the next pass completes the work")
    return StorageError(f"database error on the store {path}: the SQLite driver failed ({detail})")


def missing(path: Path) -> StoreMissing:
    return StoreMissing(f"no store at {path}: check [state] database_url "
                        "(only `monitor run`, `monitor scan` and `monitor db upgrade` create one)")


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///PATH` URL (as the config resolves it), else None."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix + ":memory:":
        return None
    return Path(url.removeprefix(prefix).partition("?")[0])


def mask(message: str, url: str) -> str:
    """Never show a password, whether the message quotes the URL or the password alone."""
    message = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", message)
    try:
        raw = urllib.parse.urlsplit(url).password
    except ValueError:
        raw = None
    for secret in {raw, urllib.parse.unquote(raw or "")} - {None, ""}:
        message = message.replace(secret, "***")  # type: ignore[arg-type]
    return message
