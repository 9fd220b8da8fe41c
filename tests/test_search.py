"""Search and topics: one suite over SQLite and PostgreSQL, from the query language to the store.

The stories go in through the real parser, fingerprints and ingest; every store test
runs on both backends (`store_url`), so the two indexes must agree on every answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator

import pytest
from conftest import seed

from monitor import bulletin, query
from monitor.identity import fingerprint
from monitor.models import FileInfo
from monitor.storage import Storage

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)

EN_MEETINGS = ("On 3 March 2025, the Joint Staff held two meetings with Colonel General Serdyukov "
               "on the joint exercises in Belarus planned for the autumn.")
EN_STAFF = ("On 4 March 2025, the staff of the Secretariat prepared a joint report for the Council "
            "on peacekeeping training in Kazakhstan.")
RU_SESSIONS = ("5 марта 2025 года в Минске прошли заседания рабочей группы под председательством "
               "генерал-полковника Сердюкова по вопросам совместной подготовки миротворческих сил.")
RU_COUNCIL = ("6 марта 2025 года состоялось заседание Совета министров иностранных дел государств-членов "
              "Организации, посвящённое вопросам коллективной безопасности в регионе.")
HOSTILE = ['"', '"unbalanced', 'a"b"c"', "NEAR(a b, 2)", "* ^ : { } ( ) + - ~ ' \\", "OR", "-", "--meeting",
           "AND OR NOT", "col:meeting", "meeting*", "'; DROP TABLE stories; --", "\x00\x01\ufffe",
           "x" * 10_000, " ".join(["meeting"] * 2000), "Ωμέγα 中文 🙂", "meeting OR", "OR meeting -"]


def bulletin_of(*briefs: str) -> bytes:
    return "\n\n".join(briefs).encode()


class Store:
    """A store with a clock: each file is seen a minute after the one before."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.files = 0

    def add(self, data: bytes, name: str | None = None) -> None:
        self.files += 1
        parsed = bulletin.parse(data)
        assert isinstance(parsed, bulletin.Bulletin), parsed
        entries = [(item, fingerprint(item)) for item in parsed.items]
        info = FileInfo(path=name or f"{self.files:03d}.txt", size=len(data), mtime_ns=self.files * 10**9)
        now = T0 + dt.timedelta(minutes=self.files)
        assert self.storage.ingest(info, hashlib.sha256(data).hexdigest(), entries, now) is not None

    def titles(self, text: str) -> list[str]:
        return [hit.story.paragraphs[0][:30] for hit in self.storage.search(query.parse(text), limit=100).hits]

    def found(self, text: str) -> set[str]:
        return {hit.story.paragraphs[0] for hit in self.storage.search(query.parse(text), limit=100).hits}


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    storage = Storage.open(store_url)
    yield Store(storage)
    storage.close()


@pytest.fixture
def filled(store: Store) -> Store:
    store.add(bulletin_of(EN_MEETINGS, EN_STAFF))
    store.add(bulletin_of(RU_SESSIONS, RU_COUNCIL))
    return store


# -- the query language (pure) ------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("meeting", "meet"),
    ("Meetings", "meet"),
    ("заседание", "засед"),
    ('"Joint Staff" exercises', '"joint staff" exercis'),
    ("Сердюкова OR Serdyukov", "сердюк OR serdyukov"),
    ("Афганистан", "афганист"),
    ("a b OR c", "a b OR c"),
    ("meeting -Belarus", "meet -belarus"),
    ('meeting -"joint staff"', 'meet -"joint staff"'),
    ('"unbalanced quote', "unbalanc quot"),
    ("OR OR meeting OR", "meet"),
    ("NEAR(a b) col:x *", '"near a" b "col x"'),
    ("", ""),
])
def test_parse(text: str, expected: str) -> None:
    assert query.describe(query.parse(text)) == expected


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_queries_parse_to_valid_store_syntax(text: str) -> None:
    parsed = query.parse(text)
    assert sum(len(g) for g in parsed.groups) + len(parsed.excluded) <= query.MAX_TERMS
    for compiled in (query.to_fts5(parsed), query.to_tsquery(parsed)):
        assert "\x00" not in compiled and compiled.count('"') % 2 == 0 and compiled.count("'") % 2 == 0


def test_exclusions_alone_match_nothing() -> None:
    assert query.parse("-meeting").empty
    assert not query.matches(query.parse("-meeting"), None, ["nothing here"])


def test_matches_in_python_as_the_stores_do() -> None:
    q = query.parse('"joint staff" OR заседание -Belarus')
    assert query.matches(q, None, [EN_STAFF]) is False  # "joint report", "the staff": not the phrase
    assert query.matches(q, None, [RU_COUNCIL])
    assert not query.matches(q, None, [EN_MEETINGS])  # the phrase, but Belarus is excluded


def test_snippet_marks_every_word_form_and_keeps_text_unescaped() -> None:
    runs = query.snippet(query.parse("meeting"), ["<b>The meetings</b> and one meeting."])
    assert [text for text, hit in runs if hit] == ["meetings", "meeting"]
    assert "".join(text for text, _ in runs) == "<b>The meetings</b> and one meeting."


# -- the store, on SQLite and PostgreSQL --------------------------------------------------------


def test_word_forms_in_english_and_russian(filled: Store) -> None:
    assert filled.found("meeting") == {EN_MEETINGS}
    assert filled.found("заседание") == {RU_SESSIONS, RU_COUNCIL}  # заседания, заседание
    assert filled.found("exercise") == {EN_MEETINGS}
    assert filled.found("Совет") == {RU_COUNCIL}  # Совета
    assert filled.found("ёлка") == set()


def test_phrases(filled: Store) -> None:
    assert filled.found('"joint staff"') == {EN_MEETINGS}
    assert filled.found("joint staff") == {EN_MEETINGS, EN_STAFF}
    assert filled.found('"рабочей группы"') == {RU_SESSIONS}
    assert filled.found('"группы рабочей"') == set()


def test_or_across_scripts(filled: Store) -> None:
    assert filled.found("Сердюков OR Serdyukov") == {EN_MEETINGS, RU_SESSIONS}
    assert filled.found("Kazakhstan OR Belarus joint") == {EN_MEETINGS, EN_STAFF}


def test_exclusion(filled: Store) -> None:
    assert filled.found("joint -Belarus") == {EN_STAFF}
    assert filled.found('заседание -"рабочей группы"') == {RU_COUNCIL}
    assert filled.found("-joint") == set()


def test_ranking_then_newest_first_among_equals(store: Store) -> None:
    store.add(bulletin_of("On 1 May 2025, the alpha report was filed with the council of the region."))
    store.add(bulletin_of("On 2 May 2025, alpha, alpha and alpha again: the alpha report."))
    # As many words as the first, "alpha" once: an equal score, so the newer story comes first.
    store.add(bulletin_of("On 3 May 2025, an alpha note went to the governor of a northern town."))
    assert store.storage.story_count() == 3
    order = [t[:8] for t in store.titles("alpha")]
    assert order == ["On 2 May", "On 3 May", "On 1 May"]  # four times in a short text first


def test_every_version_is_searched(store: Store) -> None:
    first = "On 7 March 2025, the Council met in Yerevan to discuss the border commission and its mandate."
    store.add(bulletin_of(first))
    # A correction keeps the story's slots (another city would be a sibling story).
    store.add(bulletin_of(first.replace("border", "frontier")))
    assert store.storage.story_count() == 1
    (old,) = store.storage.search(query.parse("border")).hits
    assert not old.current and "border" in old.matched[0]
    assert "frontier" in old.story.paragraphs[0]  # the story as it is now
    (new,) = store.storage.search(query.parse("frontier")).hits
    assert new.current


def test_paging(store: Store) -> None:
    for day in range(1, 26):
        store.add(bulletin_of(f"On {day} April 2025, the patrol number {day} reported from the sector."))
    first = store.storage.search(query.parse("patrol"), offset=0, limit=10)
    third = store.storage.search(query.parse("patrol"), offset=20, limit=10)
    assert first.total == third.total == 25 and not first.capped
    assert len(first.hits) == 10 and len(third.hits) == 5
    seen = {h.story.uid for h in first.hits} | {h.story.uid for h in third.hits}
    assert len(seen) == 15


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_queries_never_fail_in_the_store(filled: Store, text: str) -> None:
    results = filled.storage.search(query.parse(text))
    assert results.total == len(results.hits) <= 4
    filled.storage.newest_matching(query.parse(text), 10)
    filled.storage.match_count(query.parse(text))


def test_topics_read_the_newest_matches_only(store: Store) -> None:
    for day in range(1, 13):
        store.add(bulletin_of(f"On {day} June 2025, convoy {day} crossed the checkpoint at dawn."))
    q = query.parse("convoy")
    newest = store.storage.newest_matching(q, 5)
    assert [s.paragraphs[0].split(",")[0] for s in newest] == [f"On {d} June 2025" for d in (12, 11, 10, 9, 8)]
    assert store.storage.match_count(q) == 12
    assert store.storage.match_count(query.parse("convoy -dawn")) == 0


def test_seeds_are_searchable(store: Store) -> None:
    store.add(seed("000"))
    store.add(seed("004"))
    assert len(store.found("CSTO")) == 6
    assert any("Afghanistan" in t for t in store.found('"working group" afghanistan'))


def test_migration_indexes_the_stored_versions(store_url: str, store: Store) -> None:
    """A store from before the index (downgraded to 0003) gets every version indexed by upgrading."""
    from alembic import command
    from alembic.config import Config

    from monitor.storage.revisions import SCRIPTS

    store.add(bulletin_of(EN_MEETINGS, RU_COUNCIL))
    store.add(bulletin_of(EN_MEETINGS.replace("autumn", "spring")))  # a correction, same slots
    before = {s.uid: s for s in store.storage.latest_stories(10)}
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    with store.storage.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    store.storage.close()
    upgraded = Storage.open(store_url)
    try:
        assert {s.uid: s for s in upgraded.latest_stories(10)} == before
        # the old text is indexed too: "autumn" finds the corrected story by its earlier version
        assert {h.story.uid for h in upgraded.search(query.parse("autumn OR spring")).hits} == {
            s.uid for s in before.values() if "spring" in s.paragraphs[0]}
        assert len(upgraded.search(query.parse("autumn")).hits) == 1
        assert upgraded.match_count(query.parse("заседание")) == 1
    finally:
        upgraded.close()


def test_every_version_is_indexed_once(store: Store) -> None:
    """The index holds exactly the stored versions (repeats add none), and FTS5 agrees with its rows."""
    from sqlalchemy import text

    store.add(seed("000"))
    store.add(seed("004"))
    store.add(seed("004"), name="copy.txt")  # all repeats
    store.add(bulletin_of(EN_MEETINGS))
    store.add(bulletin_of(EN_MEETINGS.replace("autumn", "spring")))  # a correction, same slots
    store.storage.catch_up_search()
    table = "search_index" if store.storage.dialect == "postgresql" else "search_text"
    with store.storage.engine.connect() as conn:
        versions = conn.execute(text("SELECT count(*) FROM versions")).scalar_one()
        indexed = conn.execute(text(f"SELECT count(*), count(DISTINCT version_id) FROM {table}")).one()
        assert tuple(indexed) == (versions, versions) and versions == 8
        if store.storage.dialect == "sqlite":
            conn.execute(text("INSERT INTO search_fts (search_fts) VALUES ('integrity-check')"))
            assert conn.execute(text("SELECT indexed_upto FROM search_state")).scalar_one() == versions


def test_stemming_from_many_threads_gives_the_stems_of_one() -> None:
    """The service stems queries in HTTP threads while a scan indexes: Snowball's stemmers
    are stateful objects, so the answers must not mix."""
    import threading

    words = [f"заседаниям{i}" for i in range(300)] + [f"meetings{i}x" for i in range(300)]
    expected = {w: query._stem(w) for w in words}
    query._STEMS.clear()
    got: dict[str, str] = {}

    def work(part: list[str]) -> None:
        for w in part:
            got[w] = query.stem(w)

    threads = [threading.Thread(target=work, args=(words[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected
