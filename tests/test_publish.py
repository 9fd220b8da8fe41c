"""The publisher on a real store (SQLite and PostgreSQL): the main feed with its correction
notes, the corrections feed, RFC 5005 archives that reach every story and never change,
the listing's order, and each story's history. Every document is checked against the
Atom schema and read with feedparser, as a reader would."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import feedparser
import pytest
from conftest import schema_diffs, seed, validate_atom
from lxml import etree, html
from servicekit import brief_bulletin

from monitor import bulletin
from monitor.config import FeedSettings, Settings
from monitor.errors import PublishError
from monitor.identity import fingerprint
from monitor.models import FileInfo
from monitor.publish import Publisher
from monitor.storage import Storage

T0 = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)
BASE = "https://news.example.org/m/"
A = "{http://www.w3.org/2005/Atom}"
FH = "{http://purl.org/syndication/history/1.0}"
SEED4 = seed("004")
CORRECTED4 = SEED4.replace(b"discussed in detail a wide range", b"discussed <at> length a wide range")
AGAIN4 = CORRECTED4.replace(b"discussed <at> length a wide range", b"discussed at length the whole range")


class Store:
    def __init__(self, storage: Storage, folder: Path) -> None:
        self.storage = storage
        self.folder = folder
        self.n = 0

    def add(self, data: bytes) -> None:
        """Ingest a bulletin, one minute and one second of mtime after the one before."""
        self.n += 1
        parsed = bulletin.parse(data)
        assert isinstance(parsed, bulletin.Bulletin)
        info = FileInfo(path=f"{self.n:04d}.txt", size=len(data), mtime_ns=self.n * 10**9)
        entries = [(item, fingerprint(item)) for item in parsed.items]
        self.storage.ingest(info, hashlib.sha256(data).hexdigest(), entries, T0 + dt.timedelta(minutes=self.n))

    def publisher(self, *, max_entries: int = 10, in_main: bool = False) -> Publisher:
        feed = FeedSettings(title="Test <bulletins>", base_url=BASE, path=self.folder / "feed.atom",
                            max_entries=max_entries, corrections_in_main=in_main)
        return Publisher(Settings(source="<defaults>", feed=feed), self.storage)


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    storage = Storage.open(store_url)
    yield Store(storage, tmp_path)
    storage.close()


def read(data: bytes) -> list[dict[str, str]]:
    """Entries, valid against the schema and readable by feedparser."""
    entries = validate_atom(data)
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.bozo_exception
    assert [e.id for e in parsed.entries] == [e["id"] for e in entries]
    return entries


def links(data: bytes) -> dict[str, str]:
    return {link.get("rel"): link.get("href") for link in etree.fromstring(data).findall(A + "link")}


def test_a_correction_is_a_note_in_the_main_feed_and_an_entry_of_its_own(store: Store) -> None:
    store.add(SEED4)
    store.add(CORRECTED4)
    pub = store.publisher()
    main = read(pub.main_feed())
    revised = [e for e in main if "Corrected" in e["content"]]
    assert len(revised) == 1 and revised[0] == main[0]  # the revised story is the newest
    note = html.fromstring(revised[0]["content"]).find(".//p[@class='correction']")
    assert note.findtext("strong") == f"Corrected {(T0 + dt.timedelta(minutes=2)).date()}:"
    assert [d.text for d in note.iter("del")] == ["in detail"] and [i.text for i in note.iter("ins")] == ["<at> length"]
    assert "&lt;at&gt; length" in revised[0]["content"]  # bulletin text escaped in the diff too

    corrections = read(pub.corrections_feed())
    assert len(corrections) == 1
    (fix,) = corrections
    assert fix["id"] != revised[0]["id"] and fix["id"].startswith("urn:uuid:")
    assert fix["title"] == f"Correction: {revised[0]['title']}"
    assert fix["link"] == revised[0]["link"]  # the story's history
    assert "<del" in fix["content"] and "discussed &lt;at&gt; length a wide range" in fix["content"]
    assert links(pub.corrections_feed())["self"] == BASE + "corrections.atom"
    # Same store, same bytes: nothing depends on the time of rendering.
    assert pub.corrections_feed() == store.publisher().corrections_feed()


def test_each_revision_gets_its_own_correction_with_its_own_diff(store: Store) -> None:
    for data in (SEED4, CORRECTED4, AGAIN4):
        store.add(data)
    corrections = read(store.publisher().corrections_feed())
    assert len(corrections) == 2 and len({c["id"] for c in corrections}) == 2
    newest, older = corrections
    def changes(entry: dict[str, str]) -> tuple[list[str], list[str]]:
        note = html.fromstring(entry["content"]).find(".//p[@class='correction']")
        return [d.text for d in note.iter("del")], [i.text for i in note.iter("ins")]

    assert changes(newest) == (["<at>", "a wide"], ["at", "the whole"])
    assert changes(older) == (["in detail"], ["<at> length"])


def test_every_updated_is_distinct_and_in_the_feeds_order(store: Store) -> None:
    store.add(seed("000"))
    store.add(SEED4)
    store.add(CORRECTED4)
    for in_main in (False, True):
        data = store.publisher(max_entries=50, in_main=in_main).main_feed()
        entries = read(data)
        times = [dt.datetime.fromisoformat(e["updated"]) for e in entries]
        assert times == sorted(times, reverse=True) and len(set(times)) == len(times)
        titles = [e["title"] for e in entries]
        if in_main:  # the correction reads just before its story
            at = next(i for i, t in enumerate(titles) if t.startswith("Correction: "))
            assert titles[at] == f"Correction: {titles[at + 1]}"
        else:
            assert not any(t.startswith("Correction: ") for t in titles)
    # The listing shows the stories in the feed's order, with the date of that order.
    pub = store.publisher(max_entries=50)
    page = html.fromstring(pub.listing(1))
    feed_titles = [e["title"] for e in read(pub.main_feed())]
    assert [a.text_content() for a in page.xpath("//ol/li/a")] == feed_titles
    for time_el in page.xpath("//ol/li//time[contains(@datetime, 'T')]"):
        shown = dt.datetime.strptime(time_el.text, "%Y-%m-%d %H:%M UTC")
        assert time_el.get("datetime") == shown.strftime("%Y-%m-%dT%H:%MZ")


def test_archives_reach_every_story_and_never_change(store: Store) -> None:
    rng = random.Random(5005)
    for i in range(23):
        store.add(brief_bulletin(i, rng))
    store.add(SEED4)
    store.add(CORRECTED4)
    pub = store.publisher(max_entries=4)
    first = pub.archive(1)
    assert first is not None and pub.archive(8) is None  # 29 timeline entries: 7 full archives
    data = pub.main_feed()
    seen: dict[str, tuple[str, str]] = {}  # id -> (updated, content) of the entry with the latest updated
    path = links(data)["prev-archive"]
    assert links(data)["next"] == path == BASE + "archive/25-28.atom"
    documents = [data]
    while path:
        doc = pub.archive(int(re.search(r"-(\d+)\.atom$", path).group(1)) // 4)
        assert doc is not None and doc.cache_control.startswith("public")
        root = etree.fromstring(doc.identity.body)
        assert root.find(FH + "archive") is not None
        assert links(doc.identity.body)["current"] == BASE + "feed.atom"
        documents.append(doc.identity.body)
        path = links(doc.identity.body).get("prev-archive")
    assert len(documents) == 8 and etree.fromstring(data).find(FH + "archive") is None
    for body in documents:
        for e in read(body):
            if e["id"] not in seen or e["updated"] > seen[e["id"]][0]:
                seen[e["id"]] = (e["updated"], e["content"])
    current = {s.uid: s for s in store.storage.stories_page(1000)}
    assert set(seen) == set(current)  # every story is reachable
    for uid, (_, content) in seen.items():  # and what wins, as RFC 5005 says, is its current text
        assert all(p in html.fromstring(content).text_content() for p in current[uid].paragraphs)
    # Later news changes no published archive (a cache may keep it for ever).
    store.add(AGAIN4)
    for i in range(23, 30):
        store.add(brief_bulletin(i, rng))
    later = store.publisher(max_entries=4)
    assert later.archive(1).identity.body == first.identity.body and later.archive(7).identity.body == documents[1]


def test_history_shows_every_version_newest_first(store: Store) -> None:
    for data in (SEED4, CORRECTED4, AGAIN4):
        store.add(data)
    pub = store.publisher()
    story = store.storage.stories_page(1)[0]
    key = story.uid.rsplit(":", 1)[1]
    doc = html.fromstring(pub.history(key))
    assert doc.findtext(".//h1") == story.title
    versions = doc.xpath("//section[@class='version']")
    assert [v.get("id") for v in versions] == ["v3", "v2", "v1"]
    assert [v.findtext(".//code") for v in versions] == ["0003.txt", "0002.txt", "0001.txt"]
    assert [i.text for i in versions[0].iter("ins")] == ["at", "the whole"]
    assert [d.text for d in versions[1].iter("del")] == ["in detail"]
    assert versions[2].xpath(".//p")[1].text == "The first text seen."
    assert "discussed <at> length a wide range" in versions[1].find(".//details").text_content()
    assert not doc.xpath("//body//at")  # escaped, never an element
    alternate = doc.xpath("//link[@rel='alternate']")[0]
    assert alternate.get("title") == "Test <bulletins>" and alternate.get("href") == "../feed.atom"
    assert pub.history("00000000-0000-0000-0000-000000000000") is None


def test_listing_pages_reach_every_story(store: Store) -> None:
    rng = random.Random(7)
    for i in range(12):
        store.add(brief_bulletin(i, rng))
    pub = store.publisher(max_entries=5)
    shown = []
    for n in (1, 2, 3):
        page = html.fromstring(pub.listing(n))
        shown += [a.get("href").removeprefix("../") for a in page.xpath("//ol/li/a")]
        older = page.xpath("//nav//a[contains(., 'Older')]")
        assert bool(older) == (n < 3)
        if n > 1:
            assert page.xpath("//nav//a[contains(., 'Newer')]")[0].get("href") == ("../" if n == 2 else "../pages/2")
    assert len(shown) == len(set(shown)) == 12
    assert pub.listing(4) is None


def test_files_written_beside_each_other(store: Store) -> None:
    store.add(SEED4)
    pub = store.publisher()
    changed: list[frozenset[str]] = []
    pub.listeners.append(changed.append)
    assert pub.write_files(force=True) == {"/feed.atom", "/corrections.atom"}
    assert (store.folder / "feed.atom").read_bytes() == pub.main_feed()
    assert (store.folder / "corrections.atom").read_bytes() == pub.corrections_feed()
    assert pub.write_files(force=True) == frozenset()  # the same bytes: nothing changed
    store.add(CORRECTED4)
    assert pub.write_files(force=True) == {"/feed.atom", "/corrections.atom"}
    assert changed == [{"/feed.atom", "/corrections.atom"}, frozenset(), {"/feed.atom", "/corrections.atom"}]


@pytest.mark.parametrize("fault", ["in the way", "disk full"])
def test_a_feed_file_that_cannot_be_written_is_one_line_and_written_at_the_next_refresh(
        store: Store, fault: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any OSError writing a feed file is a PublishError naming the file (a full disk's
    names none); what was rendered is still served, and the next refresh writes the file
    though the store has not changed since."""
    store.add(SEED4)
    pub = store.publisher()
    target = store.folder / "feed.atom"
    if fault == "in the way":
        target.mkdir()
    else:
        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr("monitor.feed.os.fsync", full)
    for publish in (pub.refresh, lambda: pub.write_files(force=True)):  # the service's, `monitor scan`'s
        with pytest.raises(PublishError) as raised:
            publish()
        line = str(raised.value)
        assert "\n" not in line and line.startswith(f"cannot write the feed file {target}: "), line
        assert fault == "in the way" or "No space left on device" in line
    assert pub.snapshot is not None and b"<entry>" in pub.snapshot.documents["/feed.atom"].identity.body
    if fault == "in the way":
        target.rmdir()
    monkeypatch.undo()
    pub.refresh()
    assert target.read_bytes() == pub.main_feed()
    assert not [p.name for p in store.folder.iterdir() if p.name.endswith(".tmp")]


def test_migration_0005_keeps_every_story_and_gives_headlines_and_distinct_times(store_url: str) -> None:
    """A store written before 0005 (one time for a whole file, titles not stored) upgraded."""
    import json

    from sqlalchemy import insert

    from monitor.storage import migrate
    from monitor.storage.schema import stories, versions

    storage = Storage.open(store_url, upgrade=False)
    try:
        migrate.upgrade(storage.engine, "0003")
        brief = "On December 11, 2024, the CSTO Secretary General received the Ambassador of Armenia."
        rows = [  # uid, hash, kind, title, paragraph, bulletin, seen
            ("urn:uuid:00000000-0000-5000-8000-000000000001", "h1", "brief", None, brief, "a.txt", T0),
            ("urn:uuid:00000000-0000-5000-8000-000000000002", "h2", "article", "A title", "Body.", "a.txt", T0),
            ("urn:uuid:00000000-0000-5000-8000-000000000001", "h3", "brief", None, brief + " Again.", "b.txt", T0),
        ]
        with storage.engine.begin() as conn:
            ids: dict[str, int] = {}
            for uid, h, kind, title, para, path, seen in rows:
                if uid not in ids:
                    ids[uid] = conn.execute(insert(stories).values(uid=uid, first_seen=seen, updated=seen,
                                                                   current_hash=h).returning(stories.c.id)).scalar_one()
                else:
                    conn.execute(stories.update().where(stories.c.uid == uid).values(current_hash=h))
                conn.execute(insert(versions).values(story_id=ids[uid], text_hash=h, kind=kind, title=title,
                                                     paragraphs=json.dumps([para]), published=None,
                                                     key_mtime_ns=1 if path == "a.txt" else 2, key_path=path,
                                                     seen_at=seen))
        migrate.upgrade(storage.engine)
        listed = storage.stories_page(10)
        assert {s.uid for s in listed} == {r[0] for r in rows}  # the same stories, the same ids
        assert {s.title for s in listed} == {"The CSTO Secretary General received the Ambassador of Armenia. Again.",
                                             "A title"}
        times = [s.updated for s in listed]
        assert len(set(times)) == 2 and all(t - T0 < dt.timedelta(milliseconds=1) for t in times)
        history = storage.history(rows[0][0])
        assert history is not None
        assert [v.bulletin for v in history[1]] == ["b.txt", "a.txt"]
        assert history[1][0].seen_at == history[0].updated > history[1][1].seen_at == history[0].first_seen
        assert storage.event_count() == 3 and len(storage.corrections(10)) == 1
    finally:
        storage.close()


def test_migration_0005_creates_what_the_schema_describes(store_url: str) -> None:
    diffs = schema_diffs(store_url)
    assert [d for d in diffs if "versions" in repr(d)] == []


def test_what_every_change_renders_reads_as_much_at_ten_times_the_stories(tmp_path: Path) -> None:
    """The feeds and pages rendered at every change read what they show, whatever the size
    of the store. Counted in SQLite's own work (virtual machine steps, by a progress handler
    on every statement), not in time: the same count at 2,000 and at 20,000 stories, each
    store with a few corrections (fewer than a feed's worth, where a read not served by its
    index walks the whole timeline looking for more)."""
    from sqlalchemy import event

    from bench import bigstore

    steps = {}
    for count in (2_000, 20_000):
        db = tmp_path / f"{count}.db"
        bigstore.build(db, count)
        storage = Storage.open(f"sqlite:///{db}")
        ticks = [0]

        def tick(ticks: list[int] = ticks) -> int:
            ticks[0] += 1
            return 0  # go on

        def before(conn: object, *_: object) -> None:
            conn.connection.dbapi_connection.set_progress_handler(tick, 100)  # type: ignore[attr-defined]

        event.listen(storage.engine, "before_cursor_execute", before)
        try:
            publisher = Publisher(Settings(source="<defaults>"), storage)
            documents = {**publisher.feeds(), **{path: body for path, (_, body) in publisher.pages().items()}}
            assert documents["/corrections.atom"].count(b"<entry>") == bigstore.CORRECTIONS
        finally:
            storage.close()
        steps[count] = ticks[0]
    assert steps[2_000] > 0
    assert steps[20_000] <= steps[2_000] * 1.1, steps
