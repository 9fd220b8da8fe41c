"""The database side of `monitor rebuild` on PostgreSQL: a schema built beside, renamed in.

The new store is built by the ordinary scan in a schema of its own (`monitor_rebuild`,
reached through the connection's search_path) while the instances go on working on the
old one; no digest is sent meanwhile. The swap is one transaction under the ingest lock: read
what the old schema knows (by then final: nobody else can write), write what is kept
into the new schema, rename the old schema away and the new one into its name. A
rebuild killed at any moment before that commit leaves the old schema as it was; the
next rebuild drops the half-built one. Instances that keep running see the new tables
at their next statement: PostgreSQL invalidates every cached plan when a schema is
renamed, and names are resolved through search_path again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from monitor.errors import MonitorError, StorageError
from monitor.storage.migrate import current
from monitor.storage.outbox import DIGEST_LOCK
from monitor.storage.rebuild import Adoption, OldStore, check_revision, write_adoption
from monitor.storage.store import INGEST_LOCK, Storage

WORK_SCHEMA = "monitor_rebuild"


class PgRebuild:
    """The old schema, and a connection of our own for the preparation and the swap."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._conn = storage.engine.connect()
        self.schema: str = self._conn.execute(text("SELECT current_schema()")).scalar_one()
        self._conn.commit()
        at = current(storage.engine)
        if at is not None:
            check_revision(f"the schema {self.schema}", set(at.split(",")))

    def work_url(self) -> str:
        """The database URL with the work schema first on the search path."""
        url = self._storage.engine.url.update_query_dict({"options": f"-csearch_path={WORK_SCHEMA}"})
        return url.render_as_string(hide_password=False)

    def prepare(self) -> None:
        """Take the digest lock for the whole run, and make an empty work schema (what a
        killed rebuild left is dropped).

        No digest goes out while the new store is built: a story that an instance ingests
        meanwhile is not in the new store (the next scan reads its file again), so a digest
        that mailed it now would have its history dropped and mail it once more."""
        conn = self._conn
        held = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": DIGEST_LOCK}).scalar()
        conn.commit()
        if not held:
            raise MonitorError("rebuild: a digest is being sent, or another rebuild runs, on this database now; "
                               "try again when it is done")
        with self._errors("cannot prepare the schema " + WORK_SCHEMA), conn.begin():
            self._conn.execute(text(f"DROP SCHEMA IF EXISTS {WORK_SCHEMA} CASCADE"))
            self._conn.execute(text(f"CREATE SCHEMA {WORK_SCHEMA}"))

    def discard(self) -> None:
        try:
            with self._conn.begin():
                self._conn.execute(text(f"DROP SCHEMA IF EXISTS {WORK_SCHEMA} CASCADE"))
        except DBAPIError:
            pass  # the next rebuild drops it

    def swap(self, backup: str, carry: Callable[[OldStore], Adoption]) -> None:
        """Under the locks: `carry` reads the old schema into a plan, the plan is written into
        the new schema, and the schemas trade names; one transaction."""
        conn = self._conn
        with self._errors(f"cannot swap the schema {WORK_SCHEMA} in for {self.schema}"), conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INGEST_LOCK})
            plan = carry(_old_store(conn, self.schema))
            write_adoption(conn.execution_options(schema_translate_map={None: WORK_SCHEMA}), plan)
            conn.execute(text(f'ALTER SCHEMA "{self.schema}" RENAME TO "{backup}"'))
            conn.execute(text(f'ALTER SCHEMA {WORK_SCHEMA} RENAME TO "{self.schema}"'))

    def backup_name(self, now: dt.datetime) -> str:
        """A free schema name for the old store: `monitor_before_rebuild_<UTC time>`."""
        base = f"monitor_before_rebuild_{now.astimezone(dt.UTC):%Y%m%dt%H%M%Sz}"
        taken = {name for (name,) in self._conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": base + "%"})}
        self._conn.commit()
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        return name

    def close(self) -> None:
        try:
            self._conn.execute(text("SELECT pg_advisory_unlock_all()"))
            self._conn.commit()
        except DBAPIError:
            self._conn.invalidate()  # a session lock must never go back to the pool
        self._conn.close()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            raise StorageError(f"{what}: {self._storage._short(exc)}; nothing changed") from None


def _old_store(conn: Connection, schema: str) -> OldStore:
    """The old schema's tables, read on the swap's connection (whose search_path finds them)."""
    present = {name for (name,) in conn.execute(
        text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema})}
    if "stories" not in present:
        return OldStore(schema, None, f"no store in the schema {schema}")

    def rows(query: str) -> Iterator[tuple[Any, ...]]:
        return iter(conn.exec_driver_sql(query).all())

    return OldStore(f"the schema {schema}", rows, None, tables=present, stamp=_stamp)


def _stamp(value: Any) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC)
