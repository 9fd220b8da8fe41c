"""`monitor rebuild` through the real console script on real SQLite files.

What a rebuild must keep (story ids, the times readers saw, the digest history), what it
must survive (a damaged or missing store, a kill in the middle) and what it must refuse
(a store in use, PostgreSQL, a drop folder that gives nothing).
"""

from __future__ import annotations

import datetime as dt
import mailbox
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import ROOT, SEEDS, Monitor, downgrade, drop_seeds, write_config
from mailserver import MailServer
from ports import free_port
from servicekit import Service, wait_for

from monitor import bulletin
from monitor.identity import text_hash
from monitor.models import Bulletin, Item
from monitor.rebuild import Matches, plan, plan_ids, story_uid
from monitor.storage.rebuild import NewStore, OldMessage, OldStory, OldVersion
from monitor.storage.revisions import head

sys.path.insert(0, str(ROOT))
from bench import gen

SUMMARY = re.compile(r"files read \d+, stories new (\d+), revised \d+, unchanged \d+, files skipped \d+, rejected \d+")
KEPT = re.compile(r"kept: story ids (\d+) of (\d+) \((\d+) merged into another story, (\d+) no longer in the drop "
                  r"folder\), (\d+) new; digest history: (\d+) digests, (\d+) texts delivered, (\d+) not found")
LONG_BRIEF = ("On 10 December 2024, in the CSTO Secretariat, consultations of the heads of the press services of "
              "the ministries of foreign affairs of the member states took place, at which the parties discussed "
              "the coordination of information work and the plan of joint events for the coming year.")


def stories(db: Path) -> dict[str, str]:
    """uid: current text hash, read with sqlite3 alone."""
    # closing(): a sqlite3 connection is in a reference cycle and would stay open until
    # the next garbage collection, and an open connection makes a rebuild refuse.
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT uid, current_hash FROM stories").fetchall())


def rebuild(monitor: Monitor) -> tuple[list[str], re.Match[str]]:
    proc = monitor("rebuild")
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3, proc.stdout
    assert SUMMARY.fullmatch(lines[0]), lines[0]
    assert "Traceback" not in proc.stderr
    kept = KEPT.fullmatch(lines[1])
    assert kept, lines[1]
    return lines, kept


def outbox(monitor: Monitor) -> list[str]:
    """Subjects of the digests in the local Maildir."""
    box = monitor.folder / "state" / "outbox"
    if not box.exists():
        return []
    return sorted(m["Subject"] for m in mailbox.Maildir(box, factory=None, create=False))


def seeds_monitor(tmp_path: Path, exe: str) -> Monitor:
    config = write_config(tmp_path, digest={"outbox": str(tmp_path / "state" / "outbox")})
    monitor = Monitor(exe, config)
    for age, path in enumerate(sorted(SEEDS.glob("*.txt"), reverse=True), start=60):
        monitor.drop_file(path.name, path.read_bytes(), age=age)
    return monitor


def test_seeds_keep_ids_feed_bytes_and_the_baseline(tmp_path: Path, exe: str) -> None:
    monitor = seeds_monitor(tmp_path, exe)
    monitor("scan", "--baseline")
    db = tmp_path / "monitor.db"
    before, feed = stories(db), monitor.feed()
    lines, kept = rebuild(monitor)
    assert kept.groups() == (str(len(before)), str(len(before)), "0", "0", "0", "1", str(len(before)), "0")
    backup = Path(lines[2].removeprefix("old store: kept as "))
    assert backup.name.startswith("monitor.db.before-rebuild-") and stories(backup) == before
    assert stories(db) == before
    # Ids, texts, and the times a reader saw: the feed is the same, byte for byte.
    assert monitor.feed() == feed
    assert (tmp_path / "feed.atom").read_bytes() == feed
    assert [p.name for p in tmp_path.glob("monitor.db.rebuild*")] == ["monitor.db.rebuild.lock"], "a leftover"
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    # The archive was baselined: the rebuild does not mail it again.
    monitor("digest")
    assert outbox(monitor) == []


def test_corpus_with_revisions_keeps_ids_and_mails_only_what_is_new(tmp_path: Path, exe: str) -> None:
    config = write_config(tmp_path, feed={"max_entries": 10_000},
                          digest={"outbox": str(tmp_path / "state" / "outbox"), "max_stories": 5})
    monitor = Monitor(exe, config)
    gen.write(monitor.drop, 40, seed=11, start_mtime=time.time() - 3600)
    monitor("scan")
    monitor("digest")
    assert len(outbox(monitor)) == 1
    # News after the last digest: not mailed yet, so the rebuild must leave it due.
    gen.write(monitor.drop, 2, seed=12, start_mtime=time.time() - 600, prefix="later_")
    fresh = int(SUMMARY.fullmatch(monitor("scan").stdout.strip())[1])
    assert fresh > 0
    db = tmp_path / "monitor.db"
    before = stories(db)
    with closing(sqlite3.connect(db)) as conn:
        revised = conn.execute("SELECT count(*) FROM (SELECT story_id FROM versions GROUP BY story_id "
                               "HAVING count(*) > 1)").fetchone()[0]
    assert revised >= 3, "the corpus must carry revisions"
    feed = monitor.feed()
    _, kept = rebuild(monitor)
    assert (kept[1], kept[2], kept[5], kept[8]) == (str(len(before)), str(len(before)), "0", "0")
    assert stories(db) == before
    assert monitor.feed() == feed
    first = outbox(monitor)
    monitor("digest")
    later = outbox(monitor)
    assert len(later) == 2, "the rebuild mailed the archive again, or lost what was due"
    assert [s for s in later if s not in first] == [f"Bulletins: {fresh} new"]
    monitor("digest")
    assert len(outbox(monitor)) == 2


def test_stories_whose_bulletins_left_the_folder_are_counted_as_gone(tmp_path: Path, exe: str) -> None:
    monitor = seeds_monitor(tmp_path, exe)
    monitor("scan")
    db = tmp_path / "monitor.db"
    before = stories(db)
    newest = max(monitor.drop.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    shutil.move(newest, tmp_path / newest.name)  # out of the drop folder
    _, kept = rebuild(monitor)
    after = stories(db)
    assert 0 < len(after) < len(before) and set(after) <= set(before)
    assert (kept[1], kept[2], kept[4], kept[5]) == (str(len(after)), str(len(before)),
                                                     str(len(before) - len(after)), "0")


def test_a_pending_digest_is_sent_after_the_rebuild_with_its_message_id(tmp_path: Path, exe: str) -> None:
    port = free_port()
    config = write_config(tmp_path, digest={"recipients": ["alice@example.org"], "sender": "d@example.org"},
                          smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5})
    monitor = Monitor(exe, config)
    monitor.drop_file("a.txt", (LONG_BRIEF + "\n").encode())
    monitor("scan")
    assert monitor("digest", check=False).returncode == 1  # the server is down: kept pending
    _, kept = rebuild(monitor)
    assert (kept[6], kept[7]) == ("1", "1")
    status = monitor("status").stdout
    assert "digests pending: 1" in status and "to alice@example.org" in status
    with MailServer(port=port) as server:
        monitor("digest")
        assert monitor("digest").stdout.strip() == "digest: nothing to send"
    [sent] = server.messages
    assert sent.message["Message-ID"] in status and sent.rcpt_tos == ["alice@example.org"]


def test_each_subscribers_deliveries_and_an_unsubscribe_survive_the_rebuild(tmp_path: Path, exe: str) -> None:
    """Two subscribers over real SMTP, one of whom unsubscribed: after the rebuild the other
    gets only what it was not sent yet, and the one who left gets nothing."""
    alice, bob = "alice@example.org", "bob@example.org"
    with MailServer() as server:
        smtp = {"host": "127.0.0.1", "port": server.port, "security": "none", "timeout": 5}
        monitor = Monitor(exe, write_config(tmp_path, digest={"recipients": [alice, bob], "sender": "d@example.org"},
                                            smtp=smtp))
        monitor.drop_file("a.txt", (LONG_BRIEF + "\n").encode())
        monitor("scan")
        monitor("digest")
        later = "On 11 December 2024, the Council of Foreign Ministers adopted the plan of joint consultations."
        monitor.drop_file("b.txt", (later + "\n").encode())
        monitor("scan")
        code = ("import datetime as dt, sys\n"
                "from monitor.storage import Storage\n"
                "s = Storage.open(sys.argv[1]); s.unsubscribe(sys.argv[2], dt.datetime.now(dt.UTC)); s.close()\n")
        subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path}/monitor.db", alice], check=True,
                       timeout=60)
        _, kept = rebuild(monitor)
        assert (kept[6], kept[7], kept[8]) == ("2", "2", "0")  # a message to each, one text each
        assert "unsubscribed: alice@example.org" in monitor("status").stdout
        monitor("digest")
        monitor("digest")
    sent = [(m.rcpt_tos, m.message["Subject"]) for m in server.messages]
    assert sorted(sent[:2]) == [([alice], "Bulletins: 1 new"), ([bob], "Bulletins: 1 new")]
    assert sent[2:] == [([bob], "Bulletins: 1 new")]
    assert "Council of Foreign Ministers" in server.messages[2].message.get_body(("plain",)).get_content()


def test_a_store_from_before_the_channels_keeps_its_digest_history(tmp_path: Path, exe: str) -> None:
    """A store at 0006 (0002's digest tables, not upgraded to 0007): its sent digest is read
    as the upgrade reads it, so the rebuilt store does not mail that story again."""
    from sqlalchemy import text as sql

    from monitor.config import load_settings
    from monitor.scan import scan
    from monitor.storage import Storage

    alice = "alice@example.org"
    with MailServer() as server:
        config = write_config(tmp_path, digest={"recipients": [alice], "sender": "d@example.org"},
                              smtp={"host": "127.0.0.1", "port": server.port, "security": "none", "timeout": 5})
        monitor = Monitor(exe, config)
        monitor.drop_file("a.txt", (LONG_BRIEF + "\n").encode())
        url = load_settings(config).state.database_url
        storage = Storage.open(url)
        scan(load_settings(config), storage)
        storage.close()
        downgrade(url, "0006")  # after the scan, which speaks today's schema
        storage = Storage.open(url, upgrade=False)
        try:
            with storage.engine.begin() as conn:
                sid, current = conn.execute(sql("SELECT id, current_hash FROM stories")).one()
                conn.execute(sql("INSERT INTO digests (id, message_id, status, created, sent, version_upto, "
                                 "new_count, revised_count, message, attempts) VALUES (1, '<m1@example.org>', "
                                 "'sent', '2026-11-01 08:00:00', '2026-11-01 08:00:00', 1, 1, 0, 'x', 1)"))
                conn.execute(sql("INSERT INTO digest_stories VALUES (1, :s, :h, 'new')"), {"s": sid, "h": current})
                conn.execute(sql("INSERT INTO digest_recipients VALUES (1, :a, 'accepted', NULL, "
                                 "'2026-11-01 08:00:00')"), {"a": alice})
        finally:
            storage.close()
        _, kept = rebuild(monitor)
        assert (kept[6], kept[7], kept[8]) == ("2", "2", "0")  # the digest for everyone, and alice's copy
        assert monitor("digest").stdout.strip() == "digest: nothing to send"
        assert server.messages == []


def test_history_only_in_the_wal_of_a_killed_process_is_kept(tmp_path: Path, exe: str) -> None:
    """A process killed after its commit leaves that commit in the WAL beside the file."""
    monitor = seeds_monitor(tmp_path, exe)
    monitor("scan")
    db = tmp_path / "monitor.db"
    code = ("import datetime as dt, os, sys\n"
            "from monitor.storage import Storage\n"
            "Storage.open(sys.argv[1]).baseline_digest(dt.datetime.now(dt.UTC))\n"
            "os._exit(0)\n")  # no close: the baseline stays in the WAL
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{db}"], check=True, timeout=60)
    assert Path(f"{db}-wal").stat().st_size > 0
    _, kept = rebuild(monitor)
    assert (kept[1], kept[6], kept[7]) == ("6", "1", "6")
    monitor("digest")
    assert outbox(monitor) == []


def test_a_story_created_by_a_late_copy_keeps_its_id(tmp_path: Path, exe: str) -> None:
    """The old store met the revision first (its bulletin was dropped first) and took its id
    from it; in bulletin order the original comes first, so the id follows the text that
    created the story in the old store, not the one that creates it now."""
    monitor = Monitor(exe, write_config(tmp_path))
    corrected = LONG_BRIEF.replace("the coordination", "the close coordination")
    monitor.drop_file("b_later.txt", (corrected + "\n").encode(), age=100)
    monitor("scan")
    monitor.drop_file("a_earlier.txt", (LONG_BRIEF + "\n").encode(), age=200)
    monitor("scan")
    db = tmp_path / "monitor.db"
    before = stories(db)
    assert len(before) == 1
    [(uid, _)] = before.items()
    assert uid == story_uid_of_text(corrected) != story_uid_of_text(LONG_BRIEF)
    _, kept = rebuild(monitor)
    assert stories(db) == before
    assert kept[1] == "1"


def story_uid_of_text(text: str) -> str:
    """The id a fresh store gives a story created by the bulletin `text`."""
    parsed = bulletin.parse((text + "\n").encode())
    assert isinstance(parsed, Bulletin)
    return story_uid(text_hash(parsed.items[0]))


def corrupt(db: Path, offset: int, length: int = 4096) -> None:
    with db.open("r+b") as fh:
        fh.seek(offset)
        fh.write(os.urandom(length))


@pytest.mark.parametrize("where", ["header", "pages"])
def test_a_damaged_store_is_rebuilt_fresh(tmp_path: Path, exe: str, where: str) -> None:
    monitor = seeds_monitor(tmp_path, exe)
    monitor("scan")
    db = tmp_path / "monitor.db"
    before = stories(db)
    wal = Path(f"{db}-wal")
    assert not wal.exists() or not wal.stat().st_size  # the scan's last connection folded its WAL in
    corrupt(db, 0 if where == "header" else 4096, 4096 if where == "header" else db.stat().st_size - 4096)
    damaged = db.read_bytes()
    proc = monitor("rebuild")
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and SUMMARY.fullmatch(lines[0]), proc.stdout
    assert lines[1].startswith("kept: nothing: ") and "is damaged" in lines[1], lines[1]
    assert "digest history could not be kept" in lines[1]
    backup = Path(lines[2].removeprefix("old store: kept as "))
    assert backup.read_bytes() == damaged, "the damaged file is kept as it was"
    assert stories(db) == before, "ids follow from the texts"
    assert "stories stored: 6" in monitor("status").stdout


def test_a_missing_store_is_built(tmp_path: Path, exe: str) -> None:
    monitor = seeds_monitor(tmp_path, exe)
    proc = monitor("rebuild")
    lines = proc.stdout.strip().splitlines()
    assert SUMMARY.fullmatch(lines[0]) and SUMMARY.fullmatch(lines[0])[1] == "6", proc.stdout
    assert lines[1].startswith(f"kept: nothing: no store at {tmp_path / 'monitor.db'}"), lines[1]
    assert lines[2] == f"old store: none at {tmp_path / 'monitor.db'}"
    assert "stories stored: 6" in monitor("status").stdout


def test_killed_midway_leaves_the_old_store_intact(tmp_path: Path, exe: str) -> None:
    config = write_config(tmp_path, feed={"max_entries": 10_000})
    monitor = Monitor(exe, config)
    gen.write(monitor.drop, 30, seed=5, start_mtime=time.time() - 7200)
    monitor("scan")
    db = tmp_path / "monitor.db"
    before, feed = stories(db), monitor.feed()
    gen.write(monitor.drop, 300, seed=6, start_mtime=time.time() - 3600, prefix="more_")
    work = tmp_path / "monitor.db.rebuild"
    proc = subprocess.Popen([exe, "--config", str(config), "rebuild"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        # Killed once the new store holds some stories: in the middle of the build.
        wait_for(lambda: proc.poll() is None and _count(work) > 50, 60, "the build to be under way", step=0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert stories(db) == before
    assert f"stories stored: {len(before)}" in monitor("status").stdout
    assert monitor.feed() == feed
    assert not list(tmp_path.glob("monitor.db.before-rebuild-*"))
    # The next rebuild starts over and finishes.
    _, kept = rebuild(monitor)
    assert kept[1] == str(len(before)) and not work.exists()
    assert set(before) <= set(stories(db))


def _count(db: Path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)) as conn:
            return conn.execute("SELECT count(*) FROM stories").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_running_service_is_refused(tmp_path: Path, exe: str) -> None:
    service = Service(exe, tmp_path)
    try:
        service.drop.mkdir(exist_ok=True)
        drop_seeds(service.drop, age=60)
        service.wait_ready()
        db = tmp_path / "monitor.db"
        before = stories(db)
        proc = subprocess.run([exe, "--config", str(service.config), "rebuild"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 1, proc
        assert proc.stdout == ""
        assert proc.stderr.strip().splitlines() == [
            f"monitor: rebuild: {db} is in use by another process (a running `monitor run`?): "
            "stop it, then run `monitor rebuild` again"]
        assert stories(db) == before
        assert service.get("/healthz").status == 200
    finally:
        code, _ = service.stop()
    assert code == 0
    proc = subprocess.run([exe, "--config", str(service.config), "rebuild"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_refusals_are_one_line(tmp_path: Path, exe: str) -> None:
    monitor = seeds_monitor(tmp_path, exe)
    monitor("scan")
    db = tmp_path / "monitor.db"
    before = stories(db)
    # A drop folder that gives nothing would replace every story by none.
    empty = tmp_path / "empty"
    empty.mkdir()
    config = write_config(tmp_path, drop={"folder": str(empty)})
    proc = Monitor(monitor.exe, config)("rebuild", check=False)
    assert (proc.returncode, proc.stderr.strip()) == (
        1, f"monitor: rebuild: the drop folder {empty} gave no stories while the store holds 6; nothing changed")
    assert stories(db) == before and not list(tmp_path.glob("monitor.db.before-rebuild-*"))
    # A missing drop folder is a config error.
    config = write_config(tmp_path, drop={"folder": str(tmp_path / "nowhere")})
    proc = Monitor(monitor.exe, config)("rebuild", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "[drop] folder" in proc.stderr
    # A store migrated by a newer monitor: its newer tables would be lost.
    write_config(tmp_path)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    proc = monitor("rebuild", check=False)
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"monitor: store error: {db} is at schema revision 9999, which this version")
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (head(),))
    assert stories(db) == before and not list(tmp_path.glob("monitor.db.before-rebuild-*"))


# -- the plan, on its own --------------------------------------------------------------

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def item(text: str) -> Item:
    return Item(kind="brief", paragraphs=(text,))


def old_version(story: int, h: str, minutes: int) -> OldVersion:
    return OldVersion(story, h, item(h), T0 + dt.timedelta(minutes=minutes))


def test_plan_merge_split_and_outbox() -> None:
    """Old stories A (texts a1, a2) and B (b1); the new rules merge B into A's story and
    split a2 off as a story of its own. A's id stays with a1, B's is gone (merged), a2
    gets the id of its own text; what the outbox carried follows each text."""
    old = {1: OldStory(story_uid("a1"), T0, T0 + dt.timedelta(minutes=5), "a2"),
           2: OldStory(story_uid("b1"), T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=1), "b1")}
    versions = [old_version(1, "a1", 0), old_version(2, "b1", 1), old_version(1, "a2", 5)]
    new = NewStore(stories={10: (story_uid("a1"), "b1"), 11: (story_uid("a2"), "a2")},
                   versions={"a1": (100, 10), "b1": (101, 10), "a2": (102, 11)})
    matches = plan_ids(old, versions, new, rehash=lambda i: "x")
    sent = OldMessage({"channel": "*", "subscriber": "*", "status": "baseline"},
                      (("a2", "baseline"), ("b1", "baseline"), ("gone", "new")))
    adoption, kept = plan(old, matches, new, [sent])
    assert adoption.uids == {}  # every new story's own id is an old one already
    assert (kept.ids_kept, kept.merged, kept.gone, kept.new_ids) == (1, 1, 0, 1)
    assert adoption.first_seen == {10: T0, 11: T0 + dt.timedelta(minutes=5)}
    assert adoption.updated == {}  # neither shows the text it showed before
    [(_, carried, mark)] = adoption.messages
    assert sorted(carried) == [(10, "b1", "baseline"), (11, "a2", "baseline")]
    assert (kept.delivered, kept.not_found) == (2, 1)
    assert mark == 102  # both stories' current texts were delivered: the next message starts at the top


def test_plan_gives_each_subscriber_its_own_mark_and_deliveries() -> None:
    """The outbox per channel and subscriber: x got a1 only, y got both; a text reaches
    each of them once, and each one's last row carries where its next message starts."""
    old = {1: OldStory(story_uid("a1"), T0, T0, "a1"), 2: OldStory(story_uid("b1"), T0, T0, "b1")}
    versions = [old_version(1, "a1", 0), old_version(2, "b1", 1)]
    new = NewStore(stories={10: (story_uid("a1"), "a1"), 11: (story_uid("b1"), "b1")},
                   versions={"a1": (100, 10), "b1": (101, 11)})

    def row(channel: str, who: str, status: str) -> dict[str, object]:
        return {"channel": channel, "subscriber": who, "status": status}

    messages = [OldMessage(row("email", "x", "start"), ()),
                OldMessage(row("email", "x", "sent"), (("a1", "new"),)),
                OldMessage(row("apprise", "y", "sent"), (("a1", "new"), ("b1", "new"))),
                OldMessage(row("email", "x", "pending"), (("a1", "new"),))]  # a1 to x again: not twice
    adoption, kept = plan(old, plan_ids(old, versions, new), new, messages)
    carried = [(m.key, sorted(rows), mark) for m, rows, mark in adoption.messages]
    assert carried == [(("email", "x"), [], 0), (("email", "x"), [(10, "a1", "new")], 0),
                       (("apprise", "y"), [(10, "a1", "new"), (11, "b1", "new")], 101),
                       (("email", "x"), [], 100)]  # x's next message starts at b1
    assert (kept.digests, kept.delivered, kept.not_found) == (3, 3, 0)


def test_plan_keeps_the_old_id_when_another_text_creates_the_story_now() -> None:
    old = {1: OldStory(story_uid("rev"), T0, T0, "rev")}
    versions = [old_version(1, "rev", 0), old_version(1, "orig", 3)]
    new = NewStore(stories={7: (story_uid("orig"), "rev")}, versions={"orig": (70, 7), "rev": (71, 7)})
    adoption, kept = plan(old, plan_ids(old, versions, new), new, [])
    assert adoption.uids == {7: story_uid("rev")}
    assert adoption.updated == {7: T0}
    assert (kept.ids_kept, kept.new_ids) == (1, 0)


def test_plan_finds_texts_hashed_by_older_rules() -> None:
    old = {1: OldStory(story_uid("old-hash"), T0, T0, "old-hash")}
    versions = [old_version(1, "old-hash", 0)]
    new = NewStore(stories={3: (story_uid("new-hash"), "new-hash")}, versions={"new-hash": (30, 3)})
    matches = plan_ids(old, versions, new, rehash=lambda i: "new-hash")
    assert isinstance(matches, Matches) and matches.moved == {"old-hash": "new-hash"}
    adoption, _ = plan(old, matches, new, [])
    assert adoption.uids == {3: story_uid("old-hash")}


# -- PostgreSQL: a schema built beside, renamed in -------------------------------------


def pg_stories(url: str, schema: str = "public") -> dict[str, str]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        try:
            return dict(conn.execute(f'SELECT uid, current_hash FROM "{schema}".stories').fetchall())
        except psycopg.errors.UndefinedTable:
            return {}


def pg_schemas(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        return {name for (name,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%'")}


def pg_backup(line: str) -> str:
    prefix = "old store: kept as the schema "
    assert line.startswith(prefix + "monitor_before_rebuild_"), line
    return line.removeprefix(prefix)


def test_postgres_keeps_ids_feed_bytes_and_the_baseline(tmp_path: Path, exe: str, pg_url: str) -> None:
    config = write_config(tmp_path, pg_url, digest={"outbox": str(tmp_path / "state" / "outbox")})
    monitor = Monitor(exe, config)
    for age, path in enumerate(sorted(SEEDS.glob("*.txt"), reverse=True), start=60):
        monitor.drop_file(path.name, path.read_bytes(), age=age)
    monitor("scan", "--baseline")
    before, feed = pg_stories(pg_url), monitor.feed()
    lines, kept = rebuild(monitor)
    assert kept.groups() == ("6", "6", "0", "0", "0", "1", "6", "0")
    assert pg_stories(pg_url, pg_backup(lines[2])) == before
    assert pg_stories(pg_url) == before
    assert monitor.feed() == feed
    monitor("digest")
    assert outbox(monitor) == []


def test_postgres_rebuild_under_a_running_service(tmp_path: Path, exe: str, pg_url: str) -> None:
    """The instances need not stop: they wait for the swap, then work on the new tables."""
    service = Service(exe, tmp_path, state={"database_url": pg_url})
    try:
        service.drop.mkdir(exist_ok=True)
        drop_seeds(service.drop, age=60)
        service.wait_ready()
        before = pg_stories(pg_url)
        lines, kept = rebuild(Monitor(exe, service.config))
        assert kept[1] == "6" and pg_stories(pg_url) == before
        backup = pg_backup(lines[2])
        late = "On 3 March 2025, the Quokka working group met in Dushanbe to agree on its plan of work for the year."
        (service.drop / "late.txt").write_text(late + "\n", encoding="utf-8")
        wait_for(lambda: b"Quokka working group" in service.get("/feed.atom").body, 30,
                 "the service to publish a story dropped after the rebuild")
        after = pg_stories(pg_url)
        assert len(after) == 7 and set(before) < set(after), "the service wrote to the old tables"
        assert pg_stories(pg_url, backup) == before
        assert service.get("/healthz").status == 200
    finally:
        code, _ = service.stop()
    assert code == 0


def test_postgres_killed_midway_leaves_the_old_schema_intact(tmp_path: Path, exe: str, pg_url: str) -> None:
    config = write_config(tmp_path, pg_url, feed={"max_entries": 10_000})
    monitor = Monitor(exe, config)
    gen.write(monitor.drop, 20, seed=5, start_mtime=time.time() - 7200)
    monitor("scan")
    before, feed = pg_stories(pg_url), monitor.feed()
    gen.write(monitor.drop, 200, seed=6, start_mtime=time.time() - 3600, prefix="more_")
    proc = subprocess.Popen([exe, "--config", str(config), "rebuild"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is None and len(pg_stories(pg_url, "monitor_rebuild")) > 50, 90,
                 "the build to be under way", step=0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert pg_stories(pg_url) == before
    assert monitor.feed() == feed
    _, kept = rebuild(monitor)
    assert kept[1] == str(len(before))
    assert set(before) <= set(pg_stories(pg_url)) and "monitor_rebuild" not in pg_schemas(pg_url)


def test_postgres_without_the_right_to_rename_the_schema_changes_nothing(tmp_path: Path, exe: str,
                                                                          pg_url: str) -> None:
    """A user that does not own `public` cannot rename it: one line, exit 3, the work schema gone."""
    import psycopg

    admin = pg_url.replace("postgresql+psycopg://", "postgresql://")
    database = admin.rsplit("/", 1)[1]
    role = f"limited_{database}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'limited'")
        conn.execute(f'GRANT CREATE ON DATABASE "{database}" TO {role}')
        conn.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
    url = re.sub(r"://[^@]+@", f"://{role}:limited@", pg_url)
    monitor = Monitor(exe, write_config(tmp_path, url))
    for path in sorted(SEEDS.glob("*.txt")):
        monitor.drop_file(path.name, path.read_bytes())
    monitor("scan")
    before, feed = pg_stories(pg_url), monitor.feed()
    proc = monitor("rebuild", check=False)
    assert proc.returncode == 3 and proc.stdout == "", proc
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("monitor: store error: cannot swap the schema monitor_rebuild in for public: ")
    assert "must be owner of schema public" in line and line.endswith("; nothing changed")
    assert "limited@" not in line
    assert pg_stories(pg_url) == before and monitor.feed() == feed
    assert pg_schemas(pg_url) == {"public", "information_schema"}
