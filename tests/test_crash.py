"""Crash safety: `monitor scan` killed with SIGKILL at random moments loses nothing.

Each file's stories and the record that it was read commit together (with the rest of
their group of files), and the feed file is replaced by a rename, so after any number of hard kills a clean scan leaves
the same store and the same feed as one uninterrupted run, and the feed file is
never seen half-written.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, validate_atom, write_config
from lxml import etree

sys.path.insert(0, str(ROOT))
from bench import gen
from monitor.scan import GROUP_FILES

KILLS = 30
# More files than three groups hold (monitor/scan.py), so that whatever the machine's speed
# a scan commits several times and kills leave partly ingested stores.
FILES = 3 * GROUP_FILES + 200
SEED = 20241211
ATOM = "{http://www.w3.org/2005/Atom}"


def _setup(folder: Path, files: int = FILES) -> Path:
    folder.mkdir()
    config = write_config(folder, feed={"max_entries": 10_000})
    gen.write(folder / "drop", files, seed=5, start_mtime=time.time() - 3600)
    return config


def _scan(exe: str, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([exe, "--config", str(config), "--log-level", "WARNING", "scan"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _store(folder: Path) -> dict[str, object]:
    """What a reader can tell about the store, without clock-dependent times."""
    conn = sqlite3.connect(folder / "monitor.db")
    try:
        stories = conn.execute("SELECT uid, current_hash FROM stories ORDER BY uid").fetchall()
        versions = conn.execute("SELECT s.uid, v.text_hash, v.key_path FROM versions v "
                                "JOIN stories s ON s.id = v.story_id ORDER BY v.text_hash").fetchall()
        files = conn.execute("SELECT path, sha256, status, item_count FROM files ORDER BY path").fetchall()
        uids = conn.execute("SELECT count(DISTINCT uid), count(*) FROM stories").fetchone()
    finally:
        conn.close()
    return {"stories": stories, "versions": versions, "files": files, "distinct": uids}


def _files_recorded(folder: Path) -> int:
    try:
        conn = sqlite3.connect(folder / "monitor.db")
        try:
            return conn.execute("SELECT count(*) FROM files").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # no store or no schema yet
        return 0


def _first_commit_seconds(exe: str, config: Path) -> float:
    """Seconds from starting a scan until its first commit of files (one file or a group)."""
    t0 = time.perf_counter()
    proc = _scan(exe, config)
    while proc.poll() is None and not _files_recorded(config.parent):
        time.sleep(0.002)
    seconds = time.perf_counter() - t0
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    return seconds


def _feed(path: Path) -> list[tuple[str, str, str]]:
    entries = validate_atom(path.read_bytes())
    return [(e["id"], e["title"], e["content"]) for e in entries]


def test_sigkill_during_scan_loses_and_doubles_nothing(tmp_path: Path, exe: str) -> None:
    reference = _setup(tmp_path / "reference")
    proc = _scan(exe, reference)
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    # Two runs in three are killed at a random moment up to about the time a scan takes to
    # its first commit, whatever the commit granularity (one file or a group of files): in
    # the start-up, inside the first transaction, now and then after a commit. The third
    # is killed at a random moment after its first commit, inside its next group, so the
    # store the next run starts from grows by a transaction, however fast the machine is.
    first_commit = _first_commit_seconds(exe, _setup(tmp_path / "timing"))

    crashed = _setup(tmp_path / "crashed")
    feed_path = crashed.parent / "feed.atom"
    rng = random.Random(SEED)
    runs = killed_running = partial = 0
    while runs < KILLS and (recorded := _files_recorded(crashed.parent)) < FILES:
        runs += 1
        partial += recorded > 0
        proc = _scan(exe, crashed)
        if runs % 3:
            time.sleep(rng.uniform(0.0, first_commit))
        else:
            deadline = time.monotonic() + 60
            while proc.poll() is None and _files_recorded(crashed.parent) == recorded and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            killed_running += 1
            proc.kill()
        proc.wait(timeout=60)
        if feed_path.exists():
            # Never half-written: whatever is at [feed].path is a whole, valid document.
            etree.fromstring(feed_path.read_bytes())
    assert killed_running >= runs * 2 // 3, f"only {killed_running} of {runs} kills landed while the scan ran"
    assert partial >= 3, "the kills should fall along the corpus, not only before its first commit"

    proc = _scan(exe, crashed)
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""

    want, got = _store(reference.parent), _store(crashed.parent)
    assert got["distinct"] == want["distinct"] and got["distinct"][0] == got["distinct"][1]
    assert got["stories"] == want["stories"], "a story was lost or doubled"
    assert got["versions"] == want["versions"]
    assert got["files"] == want["files"]
    assert len(want["stories"]) > FILES  # the corpus really made stories
    assert _feed(feed_path) == _feed(reference.parent / "feed.atom")


def test_feed_catches_up_after_a_crash_between_commit_and_rename(tmp_path: Path, exe: str) -> None:
    """A pass that dies after its last commit but before the rename leaves an old feed;
    the next pass finds no new file, and must still bring the feed up to the store."""
    from monitor.config import load_settings
    from monitor.scan import scan
    from monitor.storage import Storage

    config = write_config(tmp_path, feed={"max_entries": 10_000})
    start = time.time() - 3600
    gen.write(tmp_path / "drop", 6, seed=3, start_mtime=start)
    assert subprocess.run([exe, "--config", str(config), "scan"], capture_output=True).returncode == 0
    before = len(_feed(tmp_path / "feed.atom"))

    gen.write(tmp_path / "drop", 4, seed=4, start_mtime=start + 100, prefix="later_")
    settings = load_settings(config)
    storage = Storage.open(settings.state.database_url)
    try:
        assert scan(settings, storage).new > 0  # committed; the feed file is not touched
        stored = storage.story_count()
    finally:
        storage.close()
    assert len(_feed(tmp_path / "feed.atom")) == before < stored

    done = subprocess.run([exe, "--config", str(config), "scan"], capture_output=True, text=True)
    assert done.returncode == 0 and "files read 0" in done.stdout
    assert len(_feed(tmp_path / "feed.atom")) == stored


SERVICE_KILLS = 6
# Enough files that a scan takes seconds and commits several groups, so the kills land
# while it ingests however fast the machine is (with 40, a quick machine finished before
# the first kill).
SERVICE_FILES = FILES


def test_sigkill_of_the_service_during_scans(tmp_path: Path, exe: str) -> None:
    """`monitor run` killed while its scans ingest: restarted, it ends where one run would."""
    from servicekit import Service, wait_for

    reference = _setup(tmp_path / "reference", SERVICE_FILES)
    proc = _scan(exe, reference)
    assert proc.wait(timeout=120) == 0

    folder = tmp_path / "service"
    folder.mkdir()
    gen.write(folder / "drop", SERVICE_FILES, seed=5, start_mtime=time.time() - 3600)
    rng = random.Random(SEED + 1)
    feed_path = folder / "feed.atom"
    progress: list[int] = []
    options = {"scan_seconds": 1, "settle_seconds": 0, "feed": {"max_entries": 10_000}}
    for _ in range(SERVICE_KILLS):
        before = _files_recorded(folder)
        if before >= SERVICE_FILES:
            break
        service = Service(exe, folder, **options)  # type: ignore[arg-type]
        try:
            # Kill at a random moment once this run's scan is ingesting, not during start-up.
            wait_for(lambda: _files_recorded(folder) > before or None, 60, "the scan to ingest")  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.2))
            service.proc.kill()
            service.proc.wait(timeout=30)
        finally:
            service.close()
        if feed_path.exists():
            etree.fromstring(feed_path.read_bytes())
        progress.append(_files_recorded(folder))
    assert any(0 < n < SERVICE_FILES for n in progress), f"no kill landed during a scan: {progress}"

    service = Service(exe, folder, **options)  # type: ignore[arg-type]
    try:
        service.wait_ready(timeout=60)
        wait_for(lambda: _store(folder)["files"] == _store(reference.parent)["files"] or None, 60,
                 "the restarted service to finish the folder")
        wait_for(lambda: (feed_path.exists() and _feed(feed_path) == _feed(reference.parent / "feed.atom")) or None,
                 30, "the feed file to match one uninterrupted run's")
        served = validate_atom(service.get("/feed.atom").body)
        assert [(e["id"], e["title"], e["content"]) for e in served] == _feed(feed_path)
    finally:
        code, _ = service.stop()
    assert code == 0
    want, got = _store(reference.parent), _store(folder)
    assert got["stories"] == want["stories"] and got["versions"] == want["versions"]
    assert got["distinct"] == want["distinct"]


@pytest.mark.parametrize("accepted", [False, True], ids=["before-accept", "after-accept"])
def test_sigkill_during_a_digest_send(tmp_path: Path, exe: str, accepted: bool) -> None:
    """`monitor digest` killed in the middle of SMTP DATA: the next run sends that same
    digest (same Message-ID, every story in it), and no second digest is made of it."""
    from conftest import Monitor, seed
    from mailserver import MailServer, Received

    in_data, release = threading.Event(), threading.Event()
    calls = []

    def stall(server: object, session: object, envelope: object) -> str | None:
        calls.append(1)
        if len(calls) > 1:
            return None  # the retry goes through
        if accepted:  # the server has the message; the client dies before hearing back
            srv.recorder.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),  # type: ignore[attr-defined]
                                                  bytes(envelope.content)))  # type: ignore[attr-defined]
        in_data.set()
        release.wait(20)
        return "421 closing"

    with MailServer() as srv:
        srv.recorder.on_data = stall
        mon = Monitor(exe, write_config(
            tmp_path, digest={"recipients": ["desk@example.org"], "sender": "monitor@example.org"},
            smtp={"host": "127.0.0.1", "port": srv.port, "security": "none", "timeout": 30}))
        mon.drop_file("000.txt", seed("000"))
        mon("scan")
        titles = [e["title"] for e in validate_atom((tmp_path / "feed.atom").read_bytes())]

        proc = subprocess.Popen([exe, "--config", str(mon.config), "digest"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert in_data.wait(60), "the digest never reached DATA"
        proc.kill()
        proc.wait(timeout=30)
        release.set()

        retry = mon("digest", check=False)
        assert retry.returncode == 0, retry.stderr
        nothing = mon("digest", check=False)
        assert nothing.returncode == 0 and "nothing to send" in nothing.stdout + nothing.stderr

        ids = {m.message["Message-ID"] for m in srv.messages}
        assert len(ids) == 1, "one digest, however often it had to be sent"
        assert len(srv.messages) == (2 if accepted else 1)  # at least once; a copy has the same Message-ID
        body = srv.messages[-1].message.get_body(("plain",)).get_content()
        for title in titles:
            assert title[:40] in body
