"""Property tests: no input crashes the parser or a scan, every feed is valid Atom,
and re-arranged repeats never make a story twice."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, render_stories, validate_atom, write_config
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor import bulletin
from monitor.config import FeedSettings, Settings, load_settings
from monitor.models import Bulletin, Rejected, Story
from monitor.publish import Publisher
from monitor.scan import scan
from monitor.storage import Storage

sys.path.insert(0, str(ROOT))
from bench import gen

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Bytes that look like bulletins more often than uniform noise does: text in several
# encodings, line ends of every kind, control characters, NULs and invalid UTF-8.
PIECES = [b"On 11 December 2024, ", b"\xd0\x9d\xd0\xb0 ", b"\xcd\xe0 ", "20 декабря 2024 года".encode(), b"\r\n",
          b"\r", b"\n\n", b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"18.04.2024", b"<script>&]]>", b"\x1b[31m",
          "\u202e\u2066".encode(), b"\x0b\x0c\x85", b"  \t", b"\xed\xa0\x80", b"\xc3(", b"Title line"]
bulletin_bytes = st.one_of(
    st.binary(max_size=2048),
    st.lists(st.sampled_from(PIECES) | st.binary(max_size=12), max_size=60).map(b"".join),
    st.text(max_size=600).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@given(bulletin_bytes)
@FAST
def test_parse_never_raises(data: bytes) -> None:
    result = bulletin.parse(data)
    assert isinstance(result, Bulletin | Rejected)
    if isinstance(result, Rejected):
        assert result.reason
    else:
        assert result.items
        for item in result.items:
            assert item.paragraphs and all(p and p == p.strip() for p in item.paragraphs)


@dataclass
class Store:
    settings: Settings
    storage: Storage
    names: Iterator[int]

    def drop(self, data: bytes, name: str | None = None) -> Path:
        path = self.settings.drop.folder / (name or f"{next(self.names):05d}.txt")
        path.write_bytes(data)
        os.utime(path, (time.time() - 60, time.time() - 60))
        return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    folder = tmp_path_factory.mktemp("fuzz")
    config = write_config(folder, drop={"settle_seconds": 0}, feed={"max_entries": 1000})
    settings_ = load_settings(config)
    storage = Storage.open(settings_.state.database_url)
    yield Store(settings_, storage, itertools.count())
    storage.close()


@given(data=bulletin_bytes)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_bytes_never_crash_a_scan(store: Store, data: bytes) -> None:
    path = store.drop(data)
    report = scan(store.settings, store.storage)
    # Read, or rejected with its reason (a file read and then refused counts as both).
    assert report.skipped == 0 and (report.files_read or report.rejected), report
    if report.rejected:
        reasons = dict(store.storage.rejected_files())
        assert reasons[path.name]
    publisher = Publisher(store.settings, store.storage)
    validate_atom(publisher.main_feed())
    validate_atom(publisher.corrections_feed())


NOW = dt.datetime(2024, 12, 11, 9, 30, tzinfo=dt.UTC)


@given(title=st.text(max_size=200), paragraphs=st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=4),
       feed_title=st.text(max_size=50), author=st.text(max_size=30))
@example(title="\ufffe", paragraphs=["\uffff"], feed_title="", author="")
@FAST
def test_any_text_gives_a_valid_feed(title: str, paragraphs: list[str], feed_title: str, author: str) -> None:
    story = Story(uid="urn:uuid:00000000-0000-5000-8000-000000000001", kind="article", title=title,
                  paragraphs=tuple(paragraphs), published=dt.date(2024, 12, 11), first_seen=NOW, updated=NOW)
    entries = validate_atom(render_stories(FeedSettings(title=feed_title, author=author), [story]))
    assert len(entries) == 1 and entries[0]["id"] == story.uid


PAGE_TAGS = {"html", "head", "meta", "title", "link", "style", "body", "p", "a", "article", "h1", "h2", "h3",
             "span", "time", "section", "code", "strong", "del", "ins", "details", "summary",
             "form", "input", "button"}  # the search box on every page


@given(texts=st.lists(st.text(min_size=1, max_size=200), min_size=1, max_size=4), title=st.text(max_size=100),
       feed_title=st.text(max_size=50), bulletin_name=st.text(min_size=1, max_size=40))
@example(texts=["<script>alert(1)</script>", "]]> & <b>x</b>"], title="<i>t</i>", feed_title="\ufffe",
         bulletin_name="<a.txt>")
@FAST
def test_any_text_gives_a_history_page_with_no_live_markup(texts: list[str], title: str, feed_title: str,
                                                           bulletin_name: str) -> None:
    from lxml import html

    from monitor import page
    from monitor.models import Version

    versions = [Version(kind="brief", title=title, paragraphs=(text,), published=None,
                        seen_at=NOW + dt.timedelta(minutes=n), bulletin=bulletin_name)
                for n, text in reversed(list(enumerate(texts)))]  # newest first
    story = Story(uid="urn:uuid:00000000-0000-5000-8000-000000000001", kind="brief", title=title,
                  paragraphs=versions[0].paragraphs, published=None, first_seen=NOW, updated=versions[0].seen_at)
    document = page.history(feed_title, story, versions, page.Links(feed="feed.atom", corrections="corrections.atom"))
    tree = html.fromstring(document)
    assert {el.tag for el in tree.iter() if isinstance(el.tag, str)} <= PAGE_TAGS
    assert len(tree.xpath("//section[@class='version']")) == (len(versions) if len(versions) > 1 else 0)


@given(text=st.text(min_size=1, max_size=800))
@example(text="\ufffe")  # a paragraph of nothing XML can carry: the title must not end up empty
@example(text="<script>alert(1)</script> & ]]> \x07 \u202e")
@FAST
def test_any_text_as_a_bulletin_gives_a_valid_feed(text: str) -> None:
    parsed = bulletin.parse(text.encode("utf-8", "surrogatepass"))
    if isinstance(parsed, Rejected):
        return
    stories = [Story(uid=f"urn:uuid:00000000-0000-5000-8000-{n:012d}", kind=item.kind,
                     title=item.title or bulletin.brief_title(item.paragraphs[0]), paragraphs=item.paragraphs,
                     published=item.published, first_seen=NOW, updated=NOW + dt.timedelta(seconds=n))
               for n, item in enumerate(parsed.items)]
    assert len(validate_atom(render_stories(FeedSettings(), stories))) == len(stories)


# -- re-arranged repeats ----------------------------------------------------------


def _base() -> tuple[list[str], list[list[str]]]:
    """One synthetic bulletin split into its briefs and its articles (title, date, body)."""
    _, data = next(gen.Generator(seed=41).bulletins(1))
    lines = [line for line in data.decode().splitlines() if line]
    parsed = bulletin.parse(data)
    assert isinstance(parsed, Bulletin)
    n_briefs = sum(item.kind == "brief" for item in parsed.items)
    briefs, rest = lines[:n_briefs], lines[n_briefs:]
    articles: list[list[str]] = []
    for line in rest:
        if bulletin._date_line(line) is not None or (articles and len(articles[-1]) >= 2 and not _is_title(rest, line)):
            articles[-1].append(line)
        else:
            articles.append([line])
    return briefs, articles


def _is_title(rest: list[str], line: str) -> bool:
    i = rest.index(line)
    return i + 1 < len(rest) and bulletin._date_line(rest[i + 1]) is not None


BRIEFS, ARTICLES = _base()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, int]]:
    folder = tmp_path_factory.mktemp("rearranged")
    config = write_config(folder, drop={"settle_seconds": 0})
    settings_ = load_settings(config)
    storage = Storage.open(settings_.state.database_url)
    found = Store(settings_, storage, itertools.count())
    found.drop(("\n".join(BRIEFS + [line for a in ARTICLES for line in a]) + "\n").encode(), "00000_first.txt")
    report = scan(settings_, storage)
    assert report.new == len(BRIEFS) + len(ARTICLES) == storage.story_count()
    yield found, storage.story_count()
    storage.close()


@given(briefs=st.lists(st.sampled_from(range(len(BRIEFS))), max_size=3 * len(BRIEFS)),
       articles=st.lists(st.sampled_from(range(len(ARTICLES))), max_size=3),
       blank_lines=st.booleans(), crlf=st.booleans())
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_shuffled_or_repeated_paragraphs_never_make_a_story_twice(
        seeded: tuple[Store, int], briefs: list[int], articles: list[int], blank_lines: bool, crlf: bool) -> None:
    store, count = seeded
    lines = [BRIEFS[i] for i in briefs] + [line for i in articles for line in ARTICLES[i]]
    if not lines:
        return
    sep = ("\r\n" if crlf else "\n") * (2 if blank_lines else 1)
    store.drop((sep.join(lines) + sep).encode())
    report = scan(store.settings, store.storage)
    assert (report.new, report.revised) == (0, 0), report
    assert store.storage.story_count() == count


# -- a few through the real console script ----------------------------------------


def test_random_bytes_through_the_console_script(tmp_path: Path, exe: str) -> None:
    config = write_config(tmp_path)
    rng = random.Random(7)
    blobs = [rng.randbytes(rng.randint(1, 3000)) for _ in range(4)]
    blobs += [b"".join(rng.choice(PIECES) for _ in range(80)) for _ in range(4)]
    blobs += [b"\xef\xbb\xbf", b"\r\r\r", b"\x00" * 10, "\u202e".encode() * 50, b"x" * 200_000]
    for n, blob in enumerate(blobs):
        path = tmp_path / "drop" / f"blob{n}.txt"
        path.write_bytes(blob)
        os.utime(path, (time.time() - 60, time.time() - 60))
    done = subprocess.run([exe, "--config", str(config), "scan"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    read = int(done.stdout.split("files read ")[1].split(",")[0])
    assert "files skipped 0" in done.stdout and read == len(blobs), done.stdout
    feed = subprocess.run([exe, "--config", str(config), "feed"], capture_output=True, timeout=120)
    assert feed.returncode == 0
    validate_atom(feed.stdout)
