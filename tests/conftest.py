"""Shared fixtures: the console script, temporary configs, feed validation, stores."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings as hypothesis_settings

# CI runs the property tests on a fixed sequence of examples, so a red CI is a
# reproducible failure; a developer's run explores new examples each time.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# ../shared when it is beside the checkout (as in CI), else the copies kept in tests/vendor.
_FILES = SHARED if (SHARED / "atom.rng").is_file() else Path(__file__).resolve().parent / "vendor"
SEEDS = _FILES / "seeds"
ATOM_RNG = _FILES / "atom.rng"
DATA = Path(__file__).resolve().parent / "data"

if TYPE_CHECKING:
    from monitor.storage import Storage


def monitor_exe() -> str:
    """The installed console script next to this interpreter, else the one on PATH."""
    here = Path(sys.executable).with_name("monitor")
    found = str(here) if here.exists() else shutil.which("monitor")
    if not found:
        pytest.fail("the `monitor` console script is not installed (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="session")
def exe() -> str:
    return monitor_exe()


def seed(prefix: str) -> bytes:
    return next(SEEDS.glob(f"{prefix}_*.txt")).read_bytes()


def write_config(folder: Path, database_url: str | None = None,
                 **sections: dict[str, object] | list[dict[str, object]]) -> Path:
    """A config in `folder` with a drop folder, a SQLite store and a feed path there."""
    drop = folder / "drop"
    drop.mkdir(exist_ok=True)
    base: dict[str, dict[str, object]] = {
        "drop": {"folder": str(drop), "settle_seconds": 2},
        "state": {"database_url": database_url or f"sqlite:///{folder}/monitor.db"},
        "feed": {"title": "Test bulletins", "path": str(folder / "feed.atom"), "max_entries": 50},
        "http": {"enabled": False},
    }
    for name, values in sections.items():
        if isinstance(values, list):  # a list of tables: [[name]] sections
            base[name] = values
        else:
            base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        for table in values if isinstance(values, list) else [values]:
            lines.append(f"[[{name}]]" if isinstance(values, list) else f"[{name}]")
            lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
    path = folder / "monitor.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def drop_file(folder: Path, name: str, data: bytes, age: float = 30.0) -> Path:
    """Put a bulletin in the drop folder, aged past the settle time by default."""
    path = folder / name
    path.write_bytes(data)
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def drop_seeds(folder: Path, age: float = 30.0) -> None:
    """Put both seed bulletins in the drop folder (see drop_file)."""
    for path in sorted(SEEDS.glob("*.txt")):
        drop_file(folder, path.name, path.read_bytes(), age)


class Monitor:
    """The real console script against one config, in a subprocess."""

    def __init__(self, exe: str, config: Path, env: dict[str, str] | None = None) -> None:
        self.exe = exe
        self.config = config
        self.folder = config.parent
        self.drop = self.folder / "drop"
        self.env = {**os.environ, **(env or {})}

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.exe, "--config", str(self.config), *args], capture_output=True,
                              text=True, timeout=timeout, env=self.env)
        if check and proc.returncode != 0:
            raise AssertionError(f"monitor {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def feed(self) -> bytes:
        proc = subprocess.run([self.exe, "--config", str(self.config), "feed"], capture_output=True,
                              timeout=120, env=self.env)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout

    def drop_file(self, name: str, data: bytes, age: float = 30.0) -> Path:
        return drop_file(self.drop, name, data, age)


@pytest.fixture
def monitor(tmp_path: Path, exe: str) -> Monitor:
    """A fresh SQLite-backed monitor in a temporary folder."""
    return Monitor(exe, write_config(tmp_path))


def render_stories(settings: Any, stories: Any) -> bytes:
    """The main feed's document for these stories as they stand now (no store needed)."""
    from monitor.feed import document, story_entry
    from monitor.models import Event, Version

    events = [Event(uid=s.uid, version=Version(kind=s.kind, title=s.title, paragraphs=s.paragraphs,
                                               published=s.published, seen_at=s.updated, bulletin="b.txt"),
                    previous=None, key=s.uid) for s in stories]
    return document(settings, [story_entry(settings.base_url, e) for e in events], path="feed.atom")


def validate_atom(data: bytes) -> list[dict[str, str]]:
    """Check a feed against RFC 4287 (schema, the Schematron rules, feedparser); return entries."""
    import feedparser
    from lxml import etree

    root = etree.fromstring(data)
    schema = etree.RelaxNG(etree.parse(str(ATOM_RNG)))
    assert schema.validate(root), schema.error_log.last_error
    ns = "{http://www.w3.org/2005/Atom}"
    entries = root.findall(ns + "entry")
    if root.find(ns + "author") is None:
        assert all(e.find(ns + "author") is not None for e in entries), "RFC 4287 4.1.1: no author"
    for e in entries:
        has_alternate = any(link.get("rel", "alternate") == "alternate" for link in e.findall(ns + "link"))
        assert has_alternate or e.find(ns + "content") is not None, "RFC 4287 4.1.2"
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    return [
        {
            "id": e.findtext(ns + "id"),
            "title": e.findtext(ns + "title"),
            "updated": e.findtext(ns + "updated"),
            "published": e.findtext(ns + "published") or "",
            "content": e.findtext(ns + "content") or "",
            "link": e.find(ns + "link").get("href"),
        }
        for e in entries
    ]


ValidateAtom = Callable[[bytes], list[dict[str, str]]]


# -- PostgreSQL: a throwaway server for the session, a fresh database per test ---------


from pgserver import PostgresServer, find_bindir  # noqa: E402 - tests/ is on sys.path under pytest


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server started from the machine's binaries, stopped at session end."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
                    "install Debian's `postgresql` package (.ci/run does)")
    server = PostgresServer(bindir)
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server: `postgresql+psycopg://...`."""
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of each kind; PostgreSQL is started only when a test asks for it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def storage(store_url: str) -> Iterator[Storage]:
    """An open store of each kind (see store_url), closed after the test."""
    from monitor.storage import Storage

    store = Storage.open(store_url)
    yield store
    store.close()


def generated_store(folder: Path, files: int, seed: int) -> Path:
    """The SQLite store (in `folder`, with its config and drop folder) of `files` bench/gen.py
    bulletins after one pass at head: with downgrade(), a store from before a migration."""
    from monitor.config import load_settings
    from monitor.scan import scan
    from monitor.storage import Storage

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench import gen

    settings = load_settings(write_config(folder))
    gen.write(settings.drop.folder, files, seed=seed, start_mtime=time.time() - 3600)
    storage = Storage.open(settings.state.database_url)
    try:
        scan(settings, storage)
    finally:
        storage.close()
    return folder / "monitor.db"


def downgrade(db: Path | str, revision: str) -> None:
    """Take the store at `db` (a SQLite file, or a URL) down to `revision` with Alembic's
    own command. An older store is made this way: today's scan speaks today's schema."""
    from alembic import command
    from alembic.config import Config

    from monitor.storage import Storage
    from monitor.storage.migrate import SCRIPTS

    storage = Storage.open(db if isinstance(db, str) else f"sqlite:///{db}")
    try:
        config = Config()
        config.set_main_option("script_location", str(SCRIPTS))
        with storage.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
    finally:
        storage.close()


def schema_diffs(url: str) -> list[Any]:
    """What a store migrated to head differs in from `monitor.storage.schema.metadata`.
    The search index (migration 0006) is left out: search.create_index makes it outside the
    metadata, since an FTS5 table has no SQLAlchemy form."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from monitor.storage import Storage, search
    from monitor.storage.schema import metadata

    storage = Storage.open(url)
    try:
        with storage.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        storage.close()
    outside = {search.FTS_TABLE, search.TEXT_TABLE, search.STATE_TABLE, search.PG_TABLE}
    return [d for d in diffs if not (d[0] == "remove_table" and d[1].name in outside)]
