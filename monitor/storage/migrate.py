"""Schema migrations with Alembic, driven from code (no alembic.ini to find).

Every start of the service and every `monitor scan` asks "is the schema at head?",
so that question is answered without Alembic: one indexed read of `alembic_version`
against the head found by reading the revision ids in `migrations/versions/`.
Alembic itself is imported only when there is something to apply.

Several instances may start at once against one PostgreSQL database: the upgrade
runs in one transaction holding an advisory lock, so one instance migrates and the
others, once the lock is theirs, find the schema at head and apply nothing.
On SQLite the transaction begins IMMEDIATE, which serialises upgrades the same way.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection, Engine, inspect, text

from monitor.errors import StorageError
from monitor.storage.revisions import SCRIPTS, VERSION_TABLE, head, revisions

# Distinct from the ingest lock in monitor.storage: upgrading must not wait for a scan.
MIGRATE_LOCK = 0x6D6F6E6D  # "monm"

log = logging.getLogger(__name__)
# Alembic keeps the running migration in module globals (alembic.context, alembic.op),
# so two upgrades in one process must not overlap; other processes are kept out by
# the database lock below.
_IN_PROCESS = threading.Lock()


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    with engine.connect() as conn:
        return _current(conn)


def _current(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return rows[0] if len(rows) == 1 else ",".join(sorted(rows)) or None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations that are missing; a cheap no-op on an up-to-date store."""
    at = current(engine)
    if revision == "head" and at == head():
        return
    if at is not None and not set(at.split(",")) <= revisions()[0]:
        # Another instance, newer than this one, migrated the shared database.
        raise StorageError(f"the database schema is at revision {at}, which this version of monitor "
                           f"does not know (newest here: {head()}): upgrade monitor")
    if not log.isEnabledFor(logging.DEBUG):
        # Alembic's INFO lines (plugins, context, each step) are noise for an operator;
        # one line of ours says what happened.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    with _IN_PROCESS, engine.connect() as conn:
        # SQLite: BEGIN IMMEDIATE (see monitor.storage.store._tune_sqlite), so a second
        # upgrader waits for the first instead of failing halfway.
        conn.execution_options(monitor_write=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                # DDL is transactional on PostgreSQL: the lock is held until the
                # whole upgrade commits, and whoever waited re-reads the version.
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK})
            config.attributes["connection"] = conn
            before = _current(conn)  # under the lock: another instance may have just done it
            command.upgrade(config, revision)
            after = _current(conn)
    if after != before:
        log.info("database schema upgraded from %s to %s", before or "empty", after)
