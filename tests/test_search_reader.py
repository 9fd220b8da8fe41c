"""A real terminal feed reader (newsboat, from Debian) subscribed to a topic feed of the running
service sees only the stories that match the topic, and imports every feed from /feeds.opml."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import drop_file, seed
from servicekit import Service, wait_for
from test_search import EN_MEETINGS, EN_STAFF, RU_COUNCIL, RU_SESSIONS, bulletin_of

NEWSBOAT = shutil.which("newsboat")
pytestmark = pytest.mark.skipif(NEWSBOAT is None, reason="newsboat is not installed (.ci/run installs it)")

TOPICS = [{"name": "sessions", "query": "заседание OR meeting"}]


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, exe: str) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("reader")
    drop = folder / "drop"
    drop.mkdir()
    drop_file(drop, "000.txt", seed("000"))
    drop_file(drop, "en.txt", bulletin_of(EN_MEETINGS, EN_STAFF))
    service = Service(exe, folder, topics=TOPICS)
    try:
        service.wait_ready()
        wait_for(lambda: service.metrics()["monitor_stories_stored"] == 7, 15, "the stories")
        yield service
    finally:
        service.close()


def newsboat(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert NEWSBOAT is not None
    (home / "config").touch()
    return subprocess.run([NEWSBOAT, "-u", str(home / "urls"), "-c", str(home / "cache.db"), "-C", str(home / "config"),
                           *args], capture_output=True, text=True, timeout=60, cwd=home, stdin=subprocess.DEVNULL,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "dumb"})


def items(home: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(home / "cache.db") as db:
        return db.execute("SELECT feedurl, title, unread FROM rss_item ORDER BY title").fetchall()


def test_a_reader_subscribed_to_a_topic_sees_only_matching_stories(svc: Service, tmp_path: Path) -> None:
    feed = svc.base + "topics/sessions.atom"
    (tmp_path / "urls").write_text(feed + "\n")
    proc = newsboat(tmp_path, "-x", "reload", "print-unread")
    assert proc.returncode == 0, proc.stderr
    seen = items(tmp_path)
    # The seeds' three meetings and EN_MEETINGS; nothing else of the 7 stories.
    assert len(seen) == 4, seen
    assert proc.stdout.strip().startswith("4 unread")
    assert all(url == feed and unread == 1 for url, _, unread in seen)
    assert any("Serdyukov" in title or "Joint Staff" in title for _, title, _ in seen)
    assert not any("Kazakhstan" in title for _, title, _ in seen)  # EN_STAFF: no meeting

    # A new matching story arrives as one more unread item; a story off the topic does not.
    drop_file(svc.drop, "ru.txt", bulletin_of(RU_SESSIONS, RU_COUNCIL), age=0)
    drop_file(svc.drop, "other.txt", bulletin_of("On 9 March 2025, the patrols returned to the base."), age=0)
    wait_for(lambda: svc.metrics()["monitor_stories_stored"] == 10, 20, "the new stories")
    proc = newsboat(tmp_path, "-x", "reload", "print-unread")
    assert proc.stdout.strip().startswith("6 unread"), proc.stdout
    titles = [t for _, t, _ in items(tmp_path)]
    assert not any("patrols" in t for t in titles)


def test_one_opml_import_subscribes_to_every_feed(svc: Service, tmp_path: Path) -> None:
    opml = tmp_path / "feeds.opml"
    opml.write_bytes(svc.get("/feeds.opml").body)
    (tmp_path / "urls").touch()
    proc = newsboat(tmp_path, "-i", str(opml))
    assert proc.returncode == 0, proc.stderr
    urls = (tmp_path / "urls").read_text().split()
    assert urls[:3] == [svc.base + "feed.atom", svc.base + "corrections.atom", svc.base + "topics/sessions.atom"]
