"""The front page in a real headless browser (Debian's chromium): a screenshot and the DOM."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import drop_file, seed
from servicekit import Service, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")

HOSTILE_TITLE = "<script>document.body.innerHTML='PWNED'</script> Talks & \"plans\""
HOSTILE = (
    f"{HOSTILE_TITLE}\n"
    "12.12.2024\n"
    "Body text with <img src=x onerror=\"document.title='PWNED'\"> inside.\n"
).encode()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, exe: str) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("browser")
    drop = folder / "drop"
    drop.mkdir()
    drop_file(drop, "000.txt", seed("000"))
    drop_file(drop, "hostile.txt", HOSTILE)
    service = Service(exe, folder, feed={"title": "CSTO <bulletins> & news"})
    try:
        service.wait_ready()
        wait_for(lambda: service.metrics()["monitor_stories_stored"] == 6, 10, "the stories")
        yield service
    finally:
        service.close()


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900", *args, url]
    return subprocess.run(command, capture_output=True, timeout=90, cwd=tmp_path)


def test_screenshot(svc: Service, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    proc = chromium(tmp_path, svc.base, f"--screenshot={shot}")
    assert shot.exists(), proc.stderr.decode(errors="replace")[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 900)
    assert len(data) > 20_000, "a blank page compresses to a few kilobytes"
    keep = Path(__file__).resolve().parent.parent / "bench" / "out"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "page.png")  # for a person to look at; bench/out/ is git-ignored


def test_dom_shows_hostile_text_as_text(svc: Service, tmp_path: Path) -> None:
    from lxml import html

    proc = chromium(tmp_path, svc.base, "--dump-dom")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    dom = proc.stdout.decode()
    tree = html.fromstring(dom)
    # Bulletin markup never became elements, and nothing ran (no script replaced the body).
    assert tree.xpath("//script") == [] and tree.xpath("//img") == []
    assert "PWNED" not in tree.findtext(".//title")
    assert tree.findtext(".//title") == "CSTO <bulletins> & news"
    assert tree.findtext(".//h1") == "CSTO <bulletins> & news"
    titles = [a.text_content() for a in tree.xpath("//ol/li/a")]
    assert HOSTILE_TITLE in titles and len(titles) == 6
    assert tree.xpath('//a[@href="feed.atom"]')[0].text_content().startswith("Subscribe")
    # The hostile story's page: the body text as text too.
    link = tree.xpath("//ol/li/a")[titles.index(HOSTILE_TITLE)].get("href")
    proc = chromium(tmp_path, svc.base + link, "--dump-dom")
    story = html.fromstring(proc.stdout.decode())
    assert story.xpath("//script") == [] and story.xpath("//img") == []
    assert story.findtext(".//h1") == HOSTILE_TITLE
    assert "<img src=x onerror=" in story.xpath("//article/p")[0].text_content()
