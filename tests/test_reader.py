"""What a real feed reader shows after a correction: Debian's newsboat subscribed to `monitor run`.

newsboat runs non-interactively (`-x reload`) with its own urls, config and cache files;
what it would show is in its SQLite cache (`rss_item`: one row per item, with `unread`).
Marking everything read there is what a reader does by reading.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import drop_file
from servicekit import Service, wait_for

NEWSBOAT = shutil.which("newsboat")
pytestmark = pytest.mark.skipif(NEWSBOAT is None, reason="newsboat is not installed (.ci/run installs it)")

BRIEF = ("On 5 March 2025, the CSTO Secretary General met the Ambassador of Serbia to discuss cooperation "
         "in humanitarian demining and the training of specialists.")
OTHER = "On 6 March 2025, the Council of Defence Ministers met in Minsk to adopt the plan of joint exercises."
CORRECTED = BRIEF.replace("to discuss cooperation", "to review <cooperation>")


class Reader:
    def __init__(self, folder: Path, urls: list[str]) -> None:
        folder.mkdir()
        self.folder = folder
        (folder / "urls").write_text("".join(u + "\n" for u in urls), encoding="utf-8")
        (folder / "config").write_text("", encoding="utf-8")
        self.cache = folder / "cache.db"

    def run(self, *args: str) -> str:
        assert NEWSBOAT is not None
        proc = subprocess.run([NEWSBOAT, "-u", str(self.folder / "urls"), "-c", str(self.cache),
                               "-C", str(self.folder / "config"), *args],
                              capture_output=True, text=True, timeout=60, env={"HOME": str(self.folder)})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def reload(self) -> list[dict[str, object]]:
        self.run("-x", "reload")
        with sqlite3.connect(self.cache) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT feedurl, guid, title, content, unread FROM rss_item")]

    def read_everything(self) -> None:
        with sqlite3.connect(self.cache) as db:
            db.execute("UPDATE rss_item SET unread = 0")


def start(exe: str, folder: Path, **feed: object) -> Service:
    drop = folder / "drop"
    drop.mkdir(parents=True)
    drop_file(drop, "a.txt", f"{BRIEF}\n{OTHER}\n".encode(), age=600)
    service = Service(exe, folder, feed=feed)
    service.wait_ready()
    wait_for(lambda: service.metrics()["monitor_stories_stored"] == 2, 10, "the stories")
    return service


def correct(service: Service) -> None:
    drop_file(service.drop, "b.txt", f"{CORRECTED}\n{OTHER}\n".encode(), age=300)
    wait_for(lambda: service.metrics().get("monitor_stories_revised_total", 0) == 1, 20, "the revision")


@pytest.fixture
def svc(tmp_path: Path, exe: str) -> Iterator[Service]:
    service = start(exe, tmp_path / "svc")
    yield service
    service.close()


def test_a_correction_is_an_unread_item_and_the_story_shows_the_note(svc: Service, tmp_path: Path) -> None:
    reader = Reader(tmp_path / "newsboat", [svc.base + "feed.atom", svc.base + "corrections.atom"])
    items = reader.reload()
    assert len(items) == 2 and all(i["feedurl"] == svc.base + "feed.atom" for i in items)
    reader.read_everything()
    assert "0 unread articles" in reader.run("-x", "print-unread")

    correct(svc)
    items = reader.reload()
    unread = [i for i in items if i["unread"]]
    assert len(unread) == 1, items
    (fix,) = unread
    assert fix["feedurl"] == svc.base + "corrections.atom"
    assert str(fix["title"]).startswith("Correction: The CSTO Secretary General met the Ambassador of Serbia")
    assert "<del" in str(fix["content"]) and "&lt;cooperation&gt;" in str(fix["content"])
    assert "1 unread article" in reader.run("-x", "print-unread")
    # The story keeps its one item in the main feed, and its text now opens with the note.
    (story,) = [i for i in items if i["feedurl"] == svc.base + "feed.atom" and "Serbia" in str(i["title"])]
    content = str(story["content"])
    assert content.startswith('<p class="correction"><strong>Corrected ')
    assert "<del" in content and "<ins" in content and "review &lt;cooperation&gt;" in content
    assert len([i for i in items if i["feedurl"] == svc.base + "feed.atom"]) == 2


def test_one_subscription_sees_the_correction_with_corrections_in_main(tmp_path: Path, exe: str) -> None:
    service = start(exe, tmp_path / "svc", corrections_in_main=True)
    try:
        reader = Reader(tmp_path / "newsboat", [service.base + "feed.atom"])
        reader.reload()
        reader.read_everything()
        correct(service)
        items = reader.reload()
    finally:
        service.close()
    unread = [i for i in items if i["unread"]]
    assert [str(i["title"])[:40] for i in unread] == ["Correction: The CSTO Secretary General m"], items
    assert len(items) == 3
