"""The store, one suite over SQLite and PostgreSQL (like APScheduler's data store tests).

Every test gets a fresh store of each kind through `store_url`. Items come from the
real seed bulletins through the real parser and fingerprints.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from conftest import seed
from sqlalchemy import create_engine, text

from monitor import bulletin
from monitor.errors import StorageError
from monitor.hashset import EMPTY
from monitor.identity import Fingerprint, fingerprint
from monitor.models import FileInfo, FileOutcome, Item, ScanReport, Story
from monitor.storage import STORY_NAMESPACE, Storage, migrate
from monitor.storage.ingest import KEY_ROWS, MAX_CANDIDATES

T0 = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)
SEED0 = seed("000")
SEED4 = seed("004")
CORRECTED4 = SEED4.replace(b"discussed in detail a wide range", b"discussed at length a wide range")
PRESS = "On 10 December 2024, in the CSTO Secretariat"

Entries = list[tuple[Item, Fingerprint]]


def entries_of(data: bytes) -> Entries:
    parsed = bulletin.parse(data)
    assert isinstance(parsed, bulletin.Bulletin), parsed
    return [(item, fingerprint(item)) for item in parsed.items]


def ingest(storage: Storage, name: str, data: bytes, mtime_ns: int, now: dt.datetime = T0) -> FileOutcome | None:
    info = FileInfo(path=name, size=len(data), mtime_ns=mtime_ns)
    return storage.ingest(info, hashlib.sha256(data).hexdigest(), entries_of(data), now)


def texts(storage: Storage) -> dict[str, tuple[str, ...]]:
    return {s.uid: s.paragraphs for s in storage.latest_stories(1000)}


def find(storage: Storage, start: str) -> list[Story]:
    """The stories with a paragraph that starts so."""
    return [s for s in storage.latest_stories(1000) if any(p.startswith(start) for p in s.paragraphs)]



# -- ingest: new, repeat, revise, older -------------------------------------------------


def test_new_stories_get_ids_derived_from_their_text(storage: Storage) -> None:
    outcome = ingest(storage, "first.txt", SEED0, 100)
    assert outcome == FileOutcome(new=5, revised=0, unchanged=0)
    assert storage.story_count() == 5
    stored = storage.latest_stories(10)
    assert sorted(s.kind for s in stored) == ["article", "brief", "brief", "brief", "brief"]
    expected = {f"urn:uuid:{uuid.uuid5(STORY_NAMESPACE, fp.text_hash)}" for _, fp in entries_of(SEED0)}
    assert {s.uid for s in stored} == expected  # the same ids in any store, on any instance
    article = next(s for s in stored if s.kind == "article")
    assert article.published == dt.date(2024, 4, 18)
    assert len(article.paragraphs) == 6
    assert article.first_seen == article.updated
    assert article.updated.tzinfo is not None
    # Every story of the file has a time of its own, in file order, from T0 on.
    times = sorted(s.updated for s in stored)
    assert times[0] == T0 and len(set(times)) == 5 and times[-1] - T0 < dt.timedelta(milliseconds=1)


def test_repeat_under_another_name_changes_nothing(storage: Storage) -> None:
    ingest(storage, "first.txt", SEED0, 100)
    before = storage.latest_stories(10)
    assert ingest(storage, "copy.txt", SEED0, 200, T0 + dt.timedelta(hours=1)) == FileOutcome(unchanged=5)
    assert storage.latest_stories(10) == before


def test_shared_briefs_are_repeats_and_the_new_article_is_new(storage: Storage) -> None:
    ingest(storage, "first.txt", SEED0, 100)
    assert ingest(storage, "second.txt", SEED4, 200) == FileOutcome(new=1, unchanged=4)
    assert storage.story_count() == 6


def test_revision_keeps_the_id_and_moves_updated_forward(storage: Storage) -> None:
    ingest(storage, "second.txt", SEED4, 100)
    (press,) = find(storage, PRESS)
    # The clock stepped back: `updated` still moves forward.
    earlier = T0 - dt.timedelta(days=1)
    assert ingest(storage, "correction.txt", CORRECTED4, 200, earlier) == FileOutcome(revised=1, unchanged=4)
    (revised,) = find(storage, PRESS)
    assert revised.uid == press.uid
    assert revised.updated > press.updated
    assert any("discussed at length" in p for p in revised.paragraphs)
    assert storage.story_count() == 5


def test_an_older_bulletin_never_flips_a_story_back(storage: Storage) -> None:
    ingest(storage, "correction.txt", CORRECTED4, 200)
    (current,) = find(storage, PRESS)
    # The original arrives late: it is older by its bulletin key (mtime), so it is kept
    # as a version but the story keeps the newer text.
    assert ingest(storage, "original.txt", SEED4, 100) == FileOutcome(unchanged=5)
    (after,) = find(storage, PRESS)
    assert after == current
    assert any("discussed at length" in p for p in after.paragraphs)
    # The id stays the one the first-processed text gave: ids depend on processing
    # order, which is why every instance processes files in bulletin-key order.
    (corrected,) = [fp for item, fp in entries_of(CORRECTED4) if item.kind == "article"]
    assert after.uid == f"urn:uuid:{uuid.uuid5(STORY_NAMESPACE, corrected.text_hash)}"


# -- files ----------------------------------------------------------------------------------


def test_file_records(storage: Storage) -> None:
    assert storage.file_states() == {}
    ingest(storage, "first.txt", SEED0, 100)
    sha = hashlib.sha256(SEED0).hexdigest()
    assert storage.file_states() == {"first.txt": (len(SEED0), 100)}
    assert storage.known_content(sha, [])[0] == 5
    assert storage.known_content("0" * 64, [])[0] is None
    # the same file version again: already claimed, nothing done
    assert ingest(storage, "first.txt", SEED0, 100) is None
    # a touched file (new mtime) is a new version to look at
    assert ingest(storage, "first.txt", SEED0, 150) == FileOutcome(unchanged=5)

    storage.record_file(FileInfo("copy.txt", len(SEED0), 300), sha, items=5, now=T0)
    storage.record_file(FileInfo("blob.bin", 3, 400), None, reason="binary: contains NUL bytes", now=T0)
    assert storage.file_states()["copy.txt"] == (len(SEED0), 300)
    assert storage.rejected_files() == [("blob.bin", "binary: contains NUL bytes")]
    assert storage.known_content(sha, [])[0] == 5
    # a rejected file that is fixed later becomes a read file (upsert by path)
    storage.record_file(FileInfo("blob.bin", 9, 500), "f" * 64, items=0, now=T0)
    assert storage.rejected_files() == []
    assert storage.file_states()["blob.bin"] == (9, 500)


# -- reading --------------------------------------------------------------------------------


def test_latest_stories_newest_first_with_limit(storage: Storage) -> None:
    ingest(storage, "first.txt", SEED0, 100, T0)
    ingest(storage, "second.txt", SEED4, 200, T0 + dt.timedelta(minutes=1))
    ingest(storage, "correction.txt", CORRECTED4, 300, T0 + dt.timedelta(minutes=2))
    stories = storage.latest_stories(100)
    assert len(stories) == 6
    assert [s.updated for s in stories] == sorted((s.updated for s in stories), reverse=True)
    assert any(PRESS in p for p in stories[0].paragraphs[:1])  # the revised article is newest
    assert storage.latest_stories(2) == stories[:2]
    assert storage.latest_stories(1) == stories[:1]
    # No two stories share an `updated`, so the feed and the page cannot order ties differently.
    assert len({s.updated for s in stories}) == 6


def test_story_by_uid(storage: Storage) -> None:
    ingest(storage, "first.txt", SEED0, 100)
    for s in storage.latest_stories(10):
        found = storage.history(s.uid)
        assert found is not None and found[0] == s and len(found[1]) == 1
    assert storage.history("urn:uuid:00000000-0000-0000-0000-000000000000") is None


def test_scans(storage: Storage) -> None:
    assert storage.last_scan() is None
    storage.record_scan(ScanReport(files_read=2, new=5), T0, T0 + dt.timedelta(seconds=1))
    storage.record_scan(ScanReport(files_read=1, unchanged=4, rejected=1), T0 + dt.timedelta(minutes=1),
                        T0 + dt.timedelta(minutes=1, seconds=2))
    last = storage.last_scan()
    assert last is not None
    assert (last["files_read"], last["new"], last["unchanged"], last["rejected"]) == (1, 0, 4, 1)
    assert last["finished"] == T0 + dt.timedelta(minutes=1, seconds=2)


# -- one transaction per file ----------------------------------------------------------------


BOOM = {
    # Fires when the file record is written: the last statement of the file's transaction,
    # after its stories, versions and index keys.
    "sqlite": ["CREATE TRIGGER boom BEFORE INSERT ON files WHEN NEW.path = 'boom.txt' "
               "BEGIN SELECT RAISE(ABORT, 'boom: injected failure'); END"],
    "postgresql": ["CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "IF NEW.path = 'boom.txt' THEN RAISE EXCEPTION 'boom: injected failure'; END IF; "
                   "RETURN NEW; END $$",
                   "CREATE TRIGGER boom BEFORE INSERT ON files FOR EACH ROW EXECUTE FUNCTION boom()"],
}


def test_a_failure_mid_file_leaves_nothing(storage: Storage) -> None:
    ingest(storage, "first.txt", SEED0, 100)
    with storage.engine.begin() as conn:
        for statement in BOOM[storage.dialect]:
            conn.execute(text(statement))
    with pytest.raises(StorageError, match="boom: injected failure"):
        ingest(storage, "boom.txt", CORRECTED4, 200)
    # nothing of the file: not its new article, not the file record
    assert storage.story_count() == 5
    assert "boom.txt" not in storage.file_states()
    assert storage.known_content(hashlib.sha256(CORRECTED4).hexdigest(), [])[0] is None
    assert find(storage, PRESS) == []
    # the same file under a name the trigger lets through goes in whole
    assert ingest(storage, "fine.txt", CORRECTED4, 200) == FileOutcome(new=1, unchanged=4)


# -- several writers --------------------------------------------------------------------------


Job = tuple[str, bytes, int] | tuple[str, bytes, int, str]


def _together(store_url: str, jobs: list[Job]) -> list[FileOutcome | None]:
    """Run each ingest in its own thread with its own Storage (own engine), started at once.

    A job is (name, data, mtime_ns) or, to ingest only a file's items of one kind,
    (name, data, mtime_ns, kind).
    """
    stores = [Storage.open(store_url, upgrade=False) for _ in jobs]
    barrier = threading.Barrier(len(jobs))
    results: list[FileOutcome | BaseException | None] = [None] * len(jobs)

    def work(n: int) -> None:
        name, data, mtime, *kind = jobs[n]
        entries = [e for e in entries_of(data) if not kind or e[0].kind == kind[0]]
        barrier.wait(timeout=30)
        try:
            results[n] = stores[n].ingest(FileInfo(name, len(data), mtime), hashlib.sha256(data).hexdigest(),
                                          entries, T0)
        except BaseException as exc:
            results[n] = exc

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in stores:
        s.close()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]


def test_one_file_version_is_ingested_once_by_concurrent_writers(storage: Storage, store_url: str) -> None:
    results = _together(store_url, [("first.txt", SEED0, 100)] * 6)
    done = [r for r in results if r is not None]
    assert done == [FileOutcome(new=5)]  # one claim won, five saw it and did nothing
    assert storage.story_count() == 5


def test_the_same_story_in_two_files_at_once_is_stored_once(storage: Storage, store_url: str) -> None:
    results = _together(store_url, [("first.txt", SEED0, 100), ("second.txt", SEED4, 200)] * 2)
    done = [r for r in results if r is not None]
    assert len(done) == 2
    assert sum(r.new for r in done) == 6  # the four shared briefs are new once, a repeat once
    assert sum(r.unchanged for r in done) == 4
    assert storage.story_count() == 6
    assert len({tuple(p) for p in texts(storage).values()}) == 6


def test_two_revisions_of_a_new_story_at_once_make_one_story(storage: Storage, store_url: str) -> None:
    """Only near-duplicate texts, no exact one: no unique index can decide, the ingest lock must."""
    jobs: list[Job] = [("second.txt", SEED4, 100, "article"), ("correction.txt", CORRECTED4, 200, "article")]
    results = _together(store_url, jobs)
    outcomes = sorted((r.new, r.revised, r.unchanged) for r in results if r)
    # whichever ran first created the story; the other revised it or was the older text
    assert outcomes in ([(0, 0, 1), (1, 0, 0)], [(0, 1, 0), (1, 0, 0)])
    (press,) = find(storage, PRESS)
    assert any("discussed at length" in p for p in press.paragraphs)  # the later bulletin's text
    assert storage.story_count() == 1


def test_a_lost_unique_race_is_decided_again_as_a_repeat(pg_url: str) -> None:
    """A writer outside the lock commits the same text while ingest waits on the unique index."""
    store = Storage.open(pg_url)
    ((item, fp),) = [e for e in entries_of(SEED0) if e[0].kind == "article"]
    uid = f"urn:uuid:{uuid.uuid5(STORY_NAMESPACE, fp.text_hash)}"
    other = create_engine(pg_url)
    outcome: list[FileOutcome | BaseException | None] = []
    with other.connect() as conn:
        tx = conn.begin()
        sid = conn.execute(text("INSERT INTO stories (uid, first_seen, updated, current_hash) "
                                "VALUES (:u, now(), now(), :h) RETURNING id"), {"u": uid, "h": fp.text_hash}).scalar()
        conn.execute(text("INSERT INTO versions (story_id, text_hash, kind, title, paragraphs, key_mtime_ns, "
                          "key_path, seen_at) VALUES (:s, :h, 'article', :t, :p, 1, 'other.txt', now())"),
                     {"s": sid, "h": fp.text_hash, "t": item.title, "p": '["x"]'})

        def work() -> None:
            try:
                outcome.append(store.ingest(FileInfo("first.txt", len(SEED0), 100),
                                            hashlib.sha256(SEED0).hexdigest(), entries_of(SEED0), T0))
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=work)
        worker.start()
        _wait_for_lock_wait(other)
        tx.commit()
    worker.join(timeout=30)
    other.dispose()
    assert outcome == [FileOutcome(new=4, unchanged=1)]
    assert store.story_count() == 5
    store.close()


def _wait_for_lock_wait(engine: object) -> None:
    """Until some backend waits on a lock (ingest blocked on the uncommitted unique row)."""
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            waiting = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                        "AND datname = current_database()")).scalar()
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("ingest never blocked on the competing row")


def test_claim_holds_when_the_server_defaults_to_repeatable_read(pg_url: str) -> None:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("ALTER DATABASE " + pg_url.rsplit("/", 1)[1] +
                          " SET default_transaction_isolation = 'repeatable read'"))
    admin.dispose()
    Storage.open(pg_url).close()
    results = _together(pg_url, [("first.txt", SEED0, 100)] * 4 + [("second.txt", SEED4, 200)] * 2)
    done = [r for r in results if r is not None]
    assert sorted(r.new for r in done) == [1, 5]
    store = Storage.open(pg_url, upgrade=False)
    assert store.story_count() == 6
    store.close()


# -- migrations --------------------------------------------------------------------------------


def test_head_read_without_alembic_matches_alembic() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrate.SCRIPTS))
    assert migrate.head() == ScriptDirectory.from_config(config).get_current_head()


def test_open_upgrades_to_head_once(store_url: str) -> None:
    store = Storage.open(store_url)
    assert migrate.current(store.engine) == migrate.head()
    store.close()
    again = Storage.open(store_url)  # idle path: nothing to apply, nothing breaks
    assert migrate.current(again.engine) == migrate.head()
    again.close()


def test_the_idle_start_does_not_import_alembic(store_url: str) -> None:
    """Every scan opens the store: at head, that costs one read and no Alembic import."""
    Storage.open(store_url).close()
    code = ("import sys; from monitor.storage import Storage; Storage.open(sys.argv[1]).close(); "
            "print(sorted(m for m in sys.modules if m.startswith('alembic')))")
    proc = subprocess.run([sys.executable, "-c", code, store_url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_concurrent_upgrades_do_not_collide(store_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait(timeout=30)
        try:
            Storage.open(store_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    store = Storage.open(store_url, upgrade=False)
    assert migrate.current(store.engine) == migrate.head()
    assert store.story_count() == 0
    store.close()


def test_a_schema_newer_than_this_code_is_a_clear_error(store_url: str) -> None:
    """A rolling upgrade: a newer instance migrated the shared database first."""
    store = Storage.open(store_url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    store.close()
    with pytest.raises(StorageError, match="revision 9999, which this version of monitor does not know"):
        Storage.open(store_url)


def test_unreachable_server_is_a_storage_error_without_the_password() -> None:
    from pgserver import free_port

    url = f"postgresql+psycopg://monitor:hunter2-secret@127.0.0.1:{free_port()}/monitor"
    with pytest.raises(StorageError) as info:
        Storage.open(url)
    message = str(info.value)
    assert "hunter2-secret" not in message
    assert "127.0.0.1" in message and "\n" not in message


def test_a_group_commits_all_or_nothing_and_runs_again_after_a_conflict(storage: Storage) -> None:
    """Storage.grouped: a group's files commit together; a unique-key conflict (what a writer
    racing another instance meets) rolls the whole group back and runs it again from its start."""
    from monitor.storage.sql import cursor

    runs: list[int] = []

    def work() -> int:
        runs.append(len(runs))
        ingest(storage, "first.txt", SEED0, 100)
        if len(runs) == 1:  # the first run collides on a story id the group itself just wrote
            uid = storage.latest_stories(1)[0].uid
            with storage._write() as conn, cursor(conn) as cur:
                cur.execute(storage._sql.new_stories(1), (uid, storage._sql.stamp(T0), storage._sql.stamp(T0), "x"))
        ingest(storage, "second.txt", SEED4, 200)
        return len(runs)

    assert storage.grouped(work) == 2
    assert set(storage.file_states()) == {"first.txt", "second.txt"}
    stories = storage.latest_stories(1000)
    assert len(stories) == len({s.uid for s in stories}) > 1  # the first run left nothing behind

    def broken() -> None:
        ingest(storage, "third.txt", CORRECTED4, 300)
        raise RuntimeError("the scan died mid-group")

    with pytest.raises(RuntimeError):
        storage.grouped(broken)
    assert "third.txt" not in storage.file_states()
    assert len(storage.latest_stories(1000)) == len(stories)


def test_another_thread_does_not_join_a_group(storage: Storage) -> None:
    """A group's transaction is its thread's: a read from another thread (an HTTP request
    during a scan's group) takes a connection of its own, sees only what is committed, and
    still works after the group's connection is gone (it once joined it, and on a full disk
    /healthz answered 500 "This Connection is closed")."""
    seen: list[object] = []

    def read_elsewhere() -> None:
        def read() -> None:
            try:
                seen.append((set(storage.file_states()), len(storage.latest_stories(1000)),
                             storage.delivery_states()))
            except Exception as exc:  # said in the assertion below, not lost in the thread
                seen.append(exc)
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(30)

    def broken() -> None:
        ingest(storage, "first.txt", SEED0, 100)
        read_elsewhere()
        raise RuntimeError("the disk filled mid-group")

    with pytest.raises(RuntimeError):
        storage.grouped(broken)
    read_elsewhere()
    storage.grouped(lambda: (ingest(storage, "first.txt", SEED0, 100), read_elsewhere()))
    assert seen == [(set(), 0, [])] * 3  # the committed store only, the group open or not
    assert set(storage.file_states()) == {"first.txt"}


def test_a_group_writes_what_one_transaction_per_file_writes(store_url: str, request: pytest.FixtureRequest,
                                                            tmp_path: Path) -> None:
    """In a group, each file starts from what the group's previous file left at the top of
    the store (times, timeline positions, ids) instead of reading it back: the same files,
    the same clock, give the same rows either way, through a revision, an older version,
    repeats and a clock that steps back."""
    older4 = SEED4.replace(b"discussed in detail a wide range", b"discussed briefly a wide range")
    files = [("first.txt", SEED0, 100, T0), ("second.txt", SEED4, 300, T0), ("fix.txt", CORRECTED4, 400, T0),
             ("late.txt", older4, 200, T0 - dt.timedelta(days=1)), ("again.txt", SEED0, 500, T0),
             ("third.txt", SEED4 + b"\n" + SEED0[:400], 600, T0 + dt.timedelta(seconds=1))]
    other = (f"sqlite:///{tmp_path}/other.db" if store_url.startswith("sqlite")
             else request.getfixturevalue("postgres_server").create_database())
    rows = []
    for url, grouped in ((store_url, True), (other, False)):
        store = Storage.open(url)
        try:
            def work(store: Storage = store) -> None:
                for name, data, mtime, now in files:
                    ingest(store, name, data, mtime, now)
            if grouped:
                store.grouped(work)
            else:
                work()
            with store.engine.connect() as conn:
                rows.append([conn.execute(text(query)).all() for query in (
                    "SELECT id, uid, first_seen, updated, current_hash FROM stories ORDER BY id",
                    "SELECT id, story_id, text_hash, seen_at, seq FROM versions ORDER BY id")])
        finally:
            store.close()
    grouped_rows, single_rows = rows
    assert len(grouped_rows[1]) > len(grouped_rows[0]) > 5  # revisions and an older version among them
    assert any(seq is None for *_, seq in grouped_rows[1])
    assert grouped_rows == single_rows


@pytest.mark.parametrize("tiers", ["recent", "main", "split", "both"])
@pytest.mark.parametrize("holders", [KEY_ROWS, KEY_ROWS + 1])
def test_a_crowded_key_finds_no_candidates_and_the_others_still_do(storage: Storage, holders: int,
                                                                   tiers: str) -> None:
    """A key held by more than KEY_ROWS stories (boilerplate) weighs nothing, and is known
    to be crowded after KEY_ROWS + 1 index entries, however many stories hold it, and
    whichever tier of the key tables (monitor/storage/keys.py) holds them: the recent
    one, the main one, half in each, or every holder in both (counted once)."""
    from monitor.storage.sql import cursor

    sql = storage._sql
    stamp = sql.stamp(T0)
    main = sql.add_paragraph_key.replace("recent_paragraph_keys", "paragraph_keys")
    with storage._write() as conn, cursor(conn) as cur:
        rows = [(f"urn:test:{n}", stamp, stamp, f"hash{n}") for n in range(holders + 2)]
        ids = [sid for sid, _ in cur.execute(sql.new_stories(len(rows)), [v for row in rows for v in row]).fetchall()]
        common, own = 4242, 4343
        held = [(common, sid) for sid in ids[:holders]]
        half = len(held) // 2
        for statement, part in {"recent": [(sql.add_paragraph_key, held)], "main": [(main, held)],
                                "split": [(sql.add_paragraph_key, held[:half]), (main, held[half:])],
                                "both": [(sql.add_paragraph_key, held), (main, held)]}[tiers]:
            cur.executemany(statement, part)
        cur.executemany(sql.add_paragraph_key, [(own, sid) for sid in ids[-2:]])
        fp = Fingerprint("new", (common, own), (), EMPTY, EMPTY)
        found = storage._candidate_ids(cur, [fp])["new"]
    crowded = holders > KEY_ROWS
    assert set(ids[-2:]) <= found
    assert found == set(ids[-2:]) if crowded else len(found) == MAX_CANDIDATES
