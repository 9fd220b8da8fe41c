"""The pages in a real headless browser (Debian's chromium): screenshots and the DOM.

Screenshots of the front page, an older page of the listing and the history of a story
with three versions are kept in bench/out/ (git-ignored) for a person to look at."""

from __future__ import annotations

import datetime as dt
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
from conftest import drop_file, seed
from lxml import html
from servicekit import Service, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")

HOSTILE_TITLE = "<script>document.body.innerHTML='PWNED'</script> Talks & \"plans\""
HOSTILE = (
    f"{HOSTILE_TITLE}\n"
    "12.12.2024\n"
    "Body text with <img src=x onerror=\"document.title='PWNED'\"> inside.\n"
).encode()
# One story in three versions, each from a later bulletin; the second carries markup. The
# places only grow (Minsk, then Brest too): another place instead would make a sibling story.
V1 = ("On 14 March 2025, the CSTO Joint Staff held a command post exercise with the staffs of the "
      "Collective Rapid Reaction Forces in Minsk.")
V2 = V1.replace("in Minsk.", "in Minsk and <b>Brest</b>.")
V3 = V2.replace("a command post exercise", "a two-day command post exercise").replace("<b>Brest</b>", "Brest")
VERSIONS = (V1, V2, V3)
MAX_ENTRIES = 5
KEEP = Path(__file__).resolve().parent.parent / "bench" / "out"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, exe: str) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("browser")
    drop = folder / "drop"
    drop.mkdir()
    for n, text in enumerate(VERSIONS):
        drop_file(drop, f"v{n + 1}.txt", (text + "\n").encode(), age=600 - 100 * n)
    drop_file(drop, "000.txt", seed("000"))
    drop_file(drop, "hostile.txt", HOSTILE)
    service = Service(exe, folder, feed={"title": "CSTO <bulletins> & news", "max_entries": MAX_ENTRIES})
    try:
        service.wait_ready()
        wait_for(lambda: service.metrics()["monitor_stories_stored"] == 7, 10, "the stories")
        yield service
    finally:
        service.close()


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900", *args, url]
    return subprocess.run(command, capture_output=True, timeout=90, cwd=tmp_path)


def dom(tmp_path: Path, url: str) -> html.HtmlElement:
    proc = chromium(tmp_path, url, "--dump-dom")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return html.fromstring(proc.stdout.decode())


def history_url(svc: Service, tmp_path: Path) -> str:
    """The three-version story's page, found through the listing as a reader would."""
    for page in ("", "pages/2"):
        for a in dom(tmp_path, svc.base + page).xpath("//ol/li/a"):
            if a.text_content().startswith("The CSTO Joint Staff held"):
                return urljoin(svc.base + page, a.get("href"))
    raise AssertionError("the story is on no page")


@pytest.mark.parametrize("name", ["page", "older", "history"])
def test_screenshot(svc: Service, tmp_path: Path, name: str) -> None:
    url = {"page": svc.base, "older": svc.base + "pages/2"}.get(name)
    if url is None:
        url = history_url(svc, tmp_path)
    shot = tmp_path / f"{name}.png"
    size = (1200, 1400 if name == "history" else 900)
    proc = chromium(tmp_path, url, f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}")
    assert shot.exists(), proc.stderr.decode(errors="replace")[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == size
    assert len(data) > 20_000, "a blank page compresses to a few kilobytes"
    KEEP.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, KEEP / f"{name}.png")  # for a person to look at; bench/out/ is git-ignored


def test_listing_pages_reach_every_story_in_the_feeds_order(svc: Service, tmp_path: Path) -> None:
    front, older = dom(tmp_path, svc.base), dom(tmp_path, svc.base + "pages/2")
    titles = [a.text_content() for t in (front, older) for a in t.xpath("//ol/li/a")]
    assert len(titles) == len(set(titles)) == 7 and len(front.xpath("//ol/li")) == MAX_ENTRIES
    assert front.xpath("//nav//a")[0].text_content() == "Older stories →"
    assert older.xpath("//nav//a")[0].get("href") == "../" and not older.xpath("//nav//a[contains(., 'Older')]")
    # Shown in the feed's order, and each visible date is the one its <time> says.
    times = [t for tree in (front, older) for t in tree.xpath("//ol/li//time")]
    changes = [t.get("datetime") for t in times if "T" in t.get("datetime")]
    assert len(changes) == 7 and changes == sorted(changes, reverse=True)
    for t in times:
        shown, when = t.text_content(), t.get("datetime")
        if "T" in when:
            assert dt.datetime.strptime(shown, "%Y-%m-%d %H:%M UTC").strftime("%Y-%m-%dT%H:%MZ") == when
        else:
            assert dt.datetime.strptime(shown, "%d %B %Y").date().isoformat() == when


def test_history_shows_every_version_and_every_diff(svc: Service, tmp_path: Path) -> None:
    tree = dom(tmp_path, history_url(svc, tmp_path))
    assert tree.findtext(".//h1").startswith("The CSTO Joint Staff held a two-day command post exercise")
    assert [p.text_content() for p in tree.xpath("//article/p")] == [V3]
    sections = tree.xpath("//section[@class='version']")
    assert [s.findtext("h3") for s in sections] == [
        "Version 3 (current version)", "Version 2 (earlier version)", "Version 1 (earlier version)"]
    assert [s.findtext(".//code") for s in sections] == ["v3.txt", "v2.txt", "v1.txt"]
    assert all(s.xpath(".//time[@datetime]") for s in sections)
    v3, v2, v1 = sections
    assert [i.text_content() for i in v3.iter("ins")] == ["two-day", "Brest"]
    assert [d.text_content() for d in v3.iter("del")] == ["<b>Brest</b>"]
    assert [i.text_content() for i in v2.iter("ins")] == ["and <b>Brest</b>"] and not list(v2.iter("del"))
    assert "The first text seen." in v1.text_content()
    assert v2.find(".//details").text_content().endswith(V2) and v1.find(".//details").text_content().endswith(V1)
    assert not tree.xpath("//body//b")  # the bulletin's markup is text
    feed_link = tree.xpath("//head/link[@rel='alternate']")[0]
    assert feed_link.get("title") == "CSTO <bulletins> & news" and feed_link.get("href") == "../feed.atom"


def test_dom_shows_hostile_text_as_text(svc: Service, tmp_path: Path) -> None:
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
    assert HOSTILE_TITLE in titles and len(titles) == MAX_ENTRIES
    assert tree.xpath('//a[@href="feed.atom"]')[0].text_content().startswith("Subscribe")
    # The hostile story's page: the body text as text too.
    link = tree.xpath("//ol/li/a")[titles.index(HOSTILE_TITLE)].get("href")
    proc = chromium(tmp_path, svc.base + link, "--dump-dom")
    story = html.fromstring(proc.stdout.decode())
    assert story.xpath("//script") == [] and story.xpath("//img") == []
    assert story.findtext(".//h1") == HOSTILE_TITLE
    assert "<img src=x onerror=" in story.xpath("//article/p")[0].text_content()
