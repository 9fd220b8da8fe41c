"""The helper process that prepares files ahead of a pass (monitor/prepare.py).

It is a shortcut, never a dependency: a pass with it decides exactly what a pass
without it does, and whatever happens to it (it cannot start, it dies, it sends
garbage, a read fails there) the pass completes the same, with nothing on stderr.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import ROOT, write_config

from monitor import dropfolder, prepare
from monitor.config import load_settings
from monitor.scan import scan
from monitor.storage import Storage

sys.path.insert(0, str(ROOT))
from bench import gen

FILES = 60
Store = dict[str, list[tuple[object, ...]]]
Outcome = tuple[object, Store]


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    write_config(folder)
    # Revisions and repeats across files, as in a real drop folder.
    gen.write(folder / "drop", FILES, seed=3, start_mtime=time.time() - 3600)
    return folder


def _pass(folder: Path) -> Outcome:
    settings = load_settings(folder / "monitor.toml")
    storage = Storage.open(settings.state.database_url)
    try:
        report = scan(settings, storage)
    finally:
        storage.close()
    return report, _store(folder / "monitor.db")


def _store(db: Path) -> Store:
    """Everything a pass decides, without clock-dependent times."""
    conn = sqlite3.connect(db)
    queries = {
        "stories": "SELECT id, uid, current_hash FROM stories ORDER BY id",
        "versions": "SELECT id, story_id, text_hash, kind, title, headline, paragraphs, published, key_path, seq, "
                    "correction FROM versions ORDER BY id",
        "band_keys": "SELECT key, story_id FROM band_keys ORDER BY key, story_id",
        "paragraph_keys": "SELECT key, story_id FROM paragraph_keys ORDER BY key, story_id",
        "search": "SELECT version_id, story_id, stems FROM search_text ORDER BY version_id",
        "files": "SELECT path, sha256, status, reason, item_count FROM files ORDER BY path",
    }
    try:
        return {name: conn.execute(sql).fetchall() for name, sql in queries.items()}
    finally:
        conn.close()


@pytest.fixture
def without_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """The pass done wholly in this process: what every other pass must equal."""
    with monkeypatch.context() as m:
        m.setattr(prepare, "AHEAD_MIN_FILES", 10**9)
        return _pass(_folder(tmp_path, "inline"))


def _digests_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the files the pass had to digest itself (the helper did not deliver them)."""
    calls: list[int] = []
    real = prepare.digest

    def counted(data: bytes, seen: set[str] | None = None) -> prepare.Prepared:
        calls.append(1)
        return real(data, seen)

    monkeypatch.setattr(prepare, "digest", counted)
    return calls


def test_a_pass_with_the_helper_decides_what_one_without_it_does(tmp_path: Path, without_helper: Outcome,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    here = _digests_here(monkeypatch)
    report, store = _pass(_folder(tmp_path, "ahead"))
    assert not here, "the helper delivered no file: the pass read them all itself"
    expected_report, expected = without_helper
    assert report == expected_report
    assert len(expected["stories"]) > FILES  # several stories a file, so the comparison means something
    assert any(correction for *_, correction in expected["versions"])  # revisions were decided too
    for table, rows in expected.items():
        assert store[table] == rows, table


def test_a_helper_started_on_an_earlier_listing_changes_nothing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # `monitor scan` starts the helper on the ledger's listing, before the store is open;
    # by the time the pass lists the folder again, files may have come, gone or changed.
    folders = [_folder(tmp_path, name) for name in ("inline", "early")]
    early = folders[1] / "drop"
    listing = dropfolder.to_read(early, {}, [])
    settings = load_settings(folders[1] / "monitor.toml")
    with prepare.ahead_for(settings.drop, listing, dt.datetime.now(dt.UTC)) as ahead:
        assert ahead is not None
        _window_done(ahead)  # so the helper prepared the file changed below as it was
        for folder in folders:  # the same changes to both folders, after the listing
            names = sorted(os.listdir(folder / "drop"))
            (folder / "drop" / names[3]).unlink()
            changed = folder / "drop" / names[7]
            stat = changed.stat()
            changed.write_bytes((folder / "drop" / names[8]).read_bytes() + b"\nA late addendum paragraph.\n")
            os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
            (folder / "drop" / "late.txt").write_bytes((folder / "drop" / names[20]).read_bytes())
            os.utime(folder / "drop" / "late.txt", ns=(stat.st_mtime_ns + 2, stat.st_mtime_ns + 2))
        here = _digests_here(monkeypatch)
        storage = Storage.open(settings.state.database_url)
        try:
            report = scan(settings, storage, ahead=ahead)
        finally:
            storage.close()
        # Ended with the pass's last file, as a helper the pass starts: its memory is not
        # held while the pass goes on indexing and the command writes the feed.
        assert ahead._proc is None
    assert len(here) == 2, "the changed file and the late one are the pass's own"
    with monkeypatch.context() as m:
        m.setattr(prepare, "AHEAD_MIN_FILES", 10**9)
        expected_report, expected = _pass(folders[0])
    assert report == expected_report
    assert _store(folders[1] / "monitor.db") == expected


def test_the_pass_goes_on_without_a_helper_that_dies(tmp_path: Path, without_helper: Outcome,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    taken: list[int] = []
    real_take = prepare.Ahead.take

    def take(self: prepare.Ahead, entry: dropfolder.Entry) -> prepare.Prepared | None:
        taken.append(1)
        if len(taken) == 10 and self._proc is not None:
            self._proc.kill()  # a real death (an OOM kill, say), mid-pass
            self._proc.wait()
        return real_take(self, entry)

    monkeypatch.setattr(prepare.Ahead, "take", take)
    here = _digests_here(monkeypatch)
    caplog.set_level(logging.INFO, logger="monitor.prepare")
    report, store = _pass(_folder(tmp_path, "dies"))
    assert 0 < len(here) < FILES  # some files came from the helper, the rest were done here
    assert report == without_helper[0]
    assert store == without_helper[1]
    ended = [r.getMessage() for r in caplog.records if r.name == "monitor.prepare"]
    assert len(ended) == 1 and "goes on without it" in ended[0], ended


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pipe's size is set on Linux only")
def _window_done(ahead: prepare.Ahead) -> int:
    """Wait until the helper stops writing (its window is done); the bytes of replies waiting."""
    assert ahead._proc is not None and ahead._proc.stdout is not None
    waiting, deadline = -1, time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = int.from_bytes(fcntl.ioctl(ahead._proc.stdout.fileno(), termios.FIONREAD, b"\0" * 4), "little")
        if now == waiting:
            break
        waiting = now
    return waiting


def test_the_helper_runs_its_window_ahead_without_waiting_for_the_pass(tmp_path: Path) -> None:
    """The replies of a whole window fit in the pipe: the helper never waits for the pass
    to read (at the pipe's default size it blocked after three of them)."""
    folder = _folder(tmp_path, "window")
    entries = dropfolder.list_entries(folder / "drop")
    with prepare.Ahead(entries, 10**7) as ahead:
        waiting = _window_done(ahead)
        assert waiting > 64 * 1024, f"{waiting} bytes of replies waiting: no more than a default pipe holds"
        assert all(isinstance(ahead.take(entry), prepare.Prepared) for entry in entries)


@pytest.mark.parametrize("command", [
    ["/nonexistent/python"],  # cannot start
    [sys.executable, "-c", "import sys; sys.stdout.write('not a pickle' * 1000)"],  # garbage
    [sys.executable, "-c", "import pickle, sys; pickle.dump({'a': 'dict'}, sys.stdout.buffer)"],  # wrong type
    [sys.executable, "-c", "raise SystemExit(1)"],  # exits at once
])
def test_a_helper_that_fails_changes_nothing(tmp_path: Path, without_helper: Outcome, monkeypatch: pytest.MonkeyPatch,
                                             command: list[str]) -> None:
    monkeypatch.setattr(prepare, "helper_command", lambda: command)
    here = _digests_here(monkeypatch)
    report, store = _pass(_folder(tmp_path, "fails"))
    assert len(here) == FILES
    assert report == without_helper[0]
    assert store == without_helper[1]


def test_a_file_the_helper_cannot_read_is_reported_by_the_pass(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path, "vanishing")
    real = dropfolder.to_read

    def listed(*args: object) -> list[dropfolder.Entry]:
        entries = real(*args)  # type: ignore[arg-type]
        gone = entries[5]
        os.unlink(gone.where)  # listed, then gone before anyone reads it
        return entries

    monkeypatch.setattr(dropfolder, "to_read", listed)
    report, store = _pass(folder)
    assert report.skipped == 1 and report.files_read == FILES - 1  # type: ignore[attr-defined]
    assert len(store["files"]) == FILES - 1


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["SIGKILL", "Ctrl-C"])
def test_the_helper_ends_with_its_pass(tmp_path: Path, exe: str, how: str) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    config = write_config(folder)
    gen.write(folder / "drop", 1500, seed=4, start_mtime=time.time() - 3600)
    proc = subprocess.Popen([exe, "--config", str(config), "--log-level", "WARNING", "scan"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        helpers: list[int] = []
        while not helpers and time.monotonic() < deadline and proc.poll() is None:
            helpers = _children(proc.pid)
            time.sleep(0.02)
        assert helpers, "no helper process was started"
        time.sleep(0.5)  # mid-pass
        if how == "SIGKILL":
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends: the whole process group
        _, err = proc.communicate(timeout=30)
        assert _gone(helpers[0], within=5), "the helper outlived its pass"
        if how == "Ctrl-C":
            assert proc.returncode == 130
            assert b"Traceback" not in err and len(err.splitlines()) <= 1, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
