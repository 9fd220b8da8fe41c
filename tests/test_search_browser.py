"""The search box in a real headless browser: a person types a query, presses Enter, reads results."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdp import Browser
from conftest import drop_file, seed
from servicekit import Service, wait_for
from test_search import EN_MEETINGS, EN_STAFF, RU_COUNCIL, RU_SESSIONS, bulletin_of

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")

HOSTILE = "On 9 March 2025, <script>document.title='PWNED'</script> a заседание with <b>markup</b>."


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, exe: str) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("search-browser")
    drop = folder / "drop"
    drop.mkdir()
    drop_file(drop, "000.txt", seed("000"))
    drop_file(drop, "en.txt", bulletin_of(EN_MEETINGS, EN_STAFF))
    drop_file(drop, "ru.txt", bulletin_of(RU_SESSIONS, RU_COUNCIL, HOSTILE))
    service = Service(exe, folder, topics=[{"name": "sessions", "query": "заседание"}])
    try:
        service.wait_ready()
        wait_for(lambda: service.metrics()["monitor_stories_stored"] == 10, 15, "the stories")
        yield service
    finally:
        service.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    assert CHROMIUM is not None
    b = Browser(CHROMIUM, tmp_path / "profile")
    yield b
    b.close()


def test_typing_a_query_into_the_search_box(svc: Service, browser: Browser, tmp_path: Path) -> None:
    browser.open(svc.base)
    browser.evaluate("document.querySelector('form[role=search] input[name=q]').focus()")
    browser.type("заседание")
    browser.press_enter()
    browser.wait("location.pathname === '/search' && document.readyState === 'complete'")
    assert browser.evaluate("new URLSearchParams(location.search).get('q')") == "заседание"
    assert browser.evaluate("document.querySelector('input[name=q]').value") == "заседание"  # kept in the box
    results = browser.evaluate("[...document.querySelectorAll('ol li')].map(li => li.textContent)")
    assert len(results) == 3  # заседания, заседание, and the hostile brief
    marks = browser.evaluate("[...document.querySelectorAll('ol li mark')].map(m => m.textContent)")
    assert {m.lower() for m in marks} == {"заседания", "заседание"}
    # The hostile brief: its markup is text, nothing of it ran.
    assert browser.evaluate("document.title").startswith("Search: заседание")
    assert browser.evaluate("document.querySelectorAll('script, b').length") == 0
    assert any("<script>" in r for r in results)
    assert "3 stories match" in browser.evaluate("document.body.textContent")

    shot = browser.screenshot(tmp_path / "search.png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", shot[16:24])
    assert (width, height) == (1200, 900)
    assert len(shot) > 20_000, "a blank page compresses to a few kilobytes"
    keep = Path(__file__).resolve().parent.parent / "bench" / "out"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "search.png", keep / "search.png")  # for a person to look at (git-ignored)

    # Following a result opens the story's page, which has the box again.
    browser.evaluate("document.querySelector('ol li a').click()")
    browser.wait("location.pathname.startsWith('/stories/') && document.readyState === 'complete'")
    assert browser.evaluate("document.querySelectorAll('form[role=search]').length") == 1


def test_the_topic_page_in_the_browser(svc: Service, browser: Browser) -> None:
    browser.open(svc.base + "topics/sessions")
    assert browser.evaluate("document.querySelectorAll('ol li').length") == 3
    href = browser.evaluate("document.querySelector('link[rel=alternate][href$=\"sessions.atom\"]').href")
    assert href == svc.base + "topics/sessions.atom"
