"""The ingest's fast paths give exactly what the general code they stand in for gives.

Each shortcut (a text check before a dict-based translate, split() for a regex on ASCII,
a uuid5 built by hand, a batch INSERT) is checked against the plain code it replaces,
on hostile text from hypothesis as well as on examples: story ids, band keys and search
stems are stored, so a fast path that differed would split or merge stories.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import re
import sqlite3
import string
import threading
import unicodedata
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text as sql

from bench import gen
from monitor import bulletin, hashset, identity, prepare, query
from monitor.identity import Fingerprint, fingerprint
from monitor.models import FileInfo, Item
from monitor.rows import story_uid
from monitor.storage import STORY_NAMESPACE, Storage
from monitor.storage.ingest import NEW_STORIES_PER_INSERT, VersionFacts, _Recent
from monitor.storage.sql import SQL, _json_array, _sqlite_stamp

# The characters the folds and splits treat specially, mixed into ordinary text.
SPECIAL = "".join(chr(c) for c in identity._FOLD) + "\t\u202a\u2066\u00e9\u0451\u0401\u0410\u2028_-'\"\u00b2\u2460"
TEXT = st.text(alphabet=st.sampled_from(string.printable + SPECIAL + "абвгдеёжз"), max_size=80)
ASCII = st.text(alphabet=st.characters(max_codepoint=127), max_size=80)


@given(TEXT)
def test_fold_is_the_translate_it_replaces(text: str) -> None:
    assert identity._fold(text) == text.translate(identity._FOLD)


@pytest.mark.parametrize("text", ["«Вопросы» — безопасности\u00a0и", "a\u00adb", "plain", "tab\there", "\ufeffbom"])
def test_fold_examples(text: str) -> None:
    assert identity._fold(text) == text.translate(identity._FOLD)


@given(st.one_of(TEXT, ASCII))
def test_identity_tokens_are_the_regex_words(text: str) -> None:
    assert identity.tokens(text) == identity._WORD.findall(text)


@given(st.one_of(TEXT, ASCII))
def test_search_tokens_are_the_regex_words(text: str) -> None:
    assert query._tokens(text) == query.WORD.findall(text)


# Every ASCII character, the controls most of all, with words, double spaces and line ends:
# the fast paths for ASCII text must find exactly what the general ones find.
_ASCII_TEXT = st.lists(st.sampled_from([chr(c) for c in range(128)] + ["word", " ", "\n", "\r\n"]),
                       max_size=200).map("".join)


@given(_ASCII_TEXT)
def test_ascii_paragraphs_are_the_general_rule(text: str) -> None:
    assert bulletin.split_paragraphs(text) == bulletin._any_paragraphs(text)


@given(_ASCII_TEXT)
def test_ascii_noise_count_is_the_general_rule(text: str) -> None:
    assert bulletin._noise(text) == len(bulletin._NOISE.findall(text))


def test_ascii_fast_paths_meet_every_control() -> None:
    # Each ASCII control inside a line of printable text: the paragraphs and the count
    # the general rules give, one character at a time (the property above may miss one).
    for c in range(128):
        text = f"First line\nbefore{chr(c)}after  \n\n last {chr(c)}\n"
        assert bulletin.split_paragraphs(text) == bulletin._any_paragraphs(text), repr(chr(c))
        assert bulletin._noise(text) == len(bulletin._NOISE.findall(text)), repr(chr(c))


# Printable ASCII, where normalize() takes its shortcut: spaces at either end and in runs.
PRINTABLE = st.lists(st.sampled_from([" ", "  ", "Word", "a", "Z", "9", ".", "-", "'"]), max_size=12).map("".join)


@given(st.one_of(PRINTABLE, TEXT, ASCII, _ASCII_TEXT))
def test_normalize_is_the_general_rule(text: str) -> None:
    assert identity.normalize(text) == identity._normalize_any(text)


@pytest.mark.parametrize("text", [" Lead", "tail ", "  both  ", "a  b", "A B C", "", " ", "x\ty"])
def test_normalize_examples(text: str) -> None:
    assert identity.normalize(text) == identity._normalize_any(text)


def _clean_line_in_full(line: str) -> str:
    line = bulletin._BIDI.sub("", bulletin._CONTROL.sub("", line.replace("\t", " ")))
    return unicodedata.normalize("NFC", line).strip()


@given(st.one_of(TEXT, ASCII, st.text(max_size=40)))
def test_clean_line_is_the_full_cleaning(line: str) -> None:
    assert bulletin.clean_line(line) == _clean_line_in_full(line)


def _brief_title_in_full(paragraph: str) -> str:
    """brief_title as first written: every word split, every space found."""
    lead = bulletin._DATELINE.match(paragraph)
    if lead and len(paragraph[lead.end():].split()) >= bulletin.TITLE_MIN_WORDS:
        rest = paragraph[lead.end():]
        paragraph = rest[:1].upper() + rest[1:]
    if len(paragraph) <= bulletin.TITLE_CHARS:
        return paragraph
    head = paragraph[: bulletin.TITLE_CHARS + 1]
    spaces = [m.start() for m in re.finditer(r"\s", head)]
    cut = bulletin._TITLE_TAIL.sub("", head[: spaces[-1]]) if spaces else ""
    return (cut or paragraph[: bulletin.TITLE_CHARS]) + "\u2026"


DATELINES = st.sampled_from(["", "On 11 December 2024, ", "December 11, 2024, ", "20 декабря 2024 года ", "on 3 May "])
SPACES = "\u00a0\u2009\u202f\u3000\x1c\x1f\x85 \t"
WORDY = st.text(alphabet=st.sampled_from(string.ascii_letters + SPACES + "абвгд,;:-\u2013"), max_size=200)


@given(DATELINES, st.one_of(TEXT, WORDY, st.text(max_size=120)))
def test_brief_title_is_the_full_one(dateline: str, text: str) -> None:
    paragraph = dateline + text
    assert bulletin.brief_title(paragraph) == _brief_title_in_full(paragraph)


@given(st.text(max_size=64))
def test_story_uid_is_uuid5_in_the_story_namespace(text_hash: str) -> None:
    assert story_uid(text_hash) == f"urn:uuid:{uuid.uuid5(STORY_NAMESPACE, text_hash)}"


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=20))
def test_int_arrays_are_json(values: list[int]) -> None:
    assert json.loads(_json_array(values)) == values
    assert _json_array(values) == json.dumps(values).replace(" ", "")


@given(st.datetimes(min_value=dt.datetime(1970, 1, 2), timezones=st.just(dt.UTC)))
def test_sqlite_stamps_are_sqlalchemys_format(moment: dt.datetime) -> None:
    assert _sqlite_stamp(moment) == moment.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _fp(n: int, shingles: int = 9) -> Fingerprint:
    return Fingerprint(f"h{n}", (), (), hashset.pack(range(shingles)), hashset.EMPTY)


def test_recent_keeps_the_most_recently_used_within_its_limit() -> None:
    recent = _Recent(limit=100)  # ten fingerprints of 9 shingles (10 with the entry)
    for n in range(10):
        recent.add(_fp(n))
    assert recent.get("h0") is not None  # h0 is now the most recent
    recent.add(_fp(10))  # over the limit: the less recent half goes, h0 stays
    assert recent.get("h0") is not None and recent.get("h10") is not None
    assert recent.get("h1") is None
    assert len(recent) * 10 <= recent.limit


def test_recent_counts_a_text_added_again_once() -> None:
    recent = _Recent(limit=100)
    for _ in range(50):
        recent.add(_fp(1))
    assert len(recent) == 1 and recent.get("h1") is not None



def test_many_new_stories_in_one_file_get_ids_in_file_order(storage: Storage) -> None:
    """More new stories than one INSERT takes: ids still follow the file, uids the texts."""
    count = NEW_STORIES_PER_INSERT + 37
    items = [Item(kind="brief", paragraphs=(f"Brief number {n} on the visit of delegation {n} to the capital.",))
             for n in range(count)]
    entries = [(item, fingerprint(item)) for item in items]
    now = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)
    outcome = storage.ingest(FileInfo("many.txt", 1, 1), hashlib.sha256(b"many").hexdigest(), entries, now)
    assert outcome is not None and outcome.new == count
    with storage.engine.connect() as conn:
        rows = conn.execute(sql("SELECT uid, current_hash FROM stories ORDER BY id")).fetchall()
    assert [h for _, h in rows] == [fp.text_hash for _, fp in entries]
    assert [uid for uid, _ in rows] == [story_uid(fp.text_hash) for _, fp in entries]


def _sqlite_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall() for table, order in (
            ("stories", "id"), ("versions", "id"), ("search_text", "version_id"),
            ("paragraph_keys", "key, story_id"), ("band_keys", "key, story_id"))}
    finally:
        conn.close()


def test_the_ids_a_sqlite_pass_gives_are_the_ones_sqlite_picks(tmp_path: Path) -> None:
    """On SQLite the pass gives new stories and versions their ids (the next free ones,
    under the write lock) and indexes them for search by id: the same rows as when SQLite
    picks the ids and the search rows find their versions by hash, also after a group that
    rolled back (its ids free again) and with versions stamped by a clock that stands still."""
    now = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)
    drop = tmp_path / "bulletins"
    paths = sorted(gen.write(drop, 30, seed=5, start_mtime=1_700_000_000.0))
    stores = [_store_of(paths, tmp_path / f"given-{given_ids}.db", given_ids, now) for given_ids in (True, False)]
    given, picked = stores
    assert len(given["stories"]) > len(paths) and any(row[-1] for row in given["versions"])  # revisions too
    assert given == picked


def _store_of(paths: list[Path], db: Path, given_ids: bool, now: dt.datetime) -> dict[str, list[tuple[object, ...]]]:
    storage = Storage.open(f"sqlite:///{db}")
    storage._sql = SQL.for_dialect("sqlite", given_ids=given_ids)

    def broken() -> None:
        _ingest_file(storage, paths[1], now)
        raise RuntimeError("the pass died mid-group")

    try:
        _ingest_file(storage, paths[0], now)
        with pytest.raises(RuntimeError):
            storage.grouped(broken)
        storage.grouped(lambda: [_ingest_file(storage, path, now) for path in paths[1:]])
    finally:
        storage.close()
    return _sqlite_rows(db)


def test_the_version_facts_a_store_keeps_are_its_rows_after_a_rolled_back_group(tmp_path: Path) -> None:
    """What a Storage keeps of its versions (kind, date, key) for the candidates is what
    the store's rows say, though a group that rolled back had stored some of the same texts
    from a later file (so with another key) and read them back for its candidates."""
    now = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)
    paths = sorted(gen.write(tmp_path / "bulletins", 30, seed=5, start_mtime=1_700_000_000.0))
    storage = Storage.open(f"sqlite:///{tmp_path / 'store.db'}")

    def broken() -> None:
        for path in paths[2:8]:  # texts that paths[1] carries first, keyed by a later file
            _ingest_file(storage, path, now)
        raise RuntimeError("the pass died mid-group")

    try:
        _ingest_file(storage, paths[0], now)
        with pytest.raises(RuntimeError):
            storage.grouped(broken)
        assert len(storage._facts) == len(_sqlite_rows(tmp_path / "store.db")["versions"])
        storage.grouped(lambda: [_ingest_file(storage, path, now) for path in paths[1:]])
        with sqlite3.connect(tmp_path / "store.db") as conn:
            rows = {h: (kind, dt.date.fromisoformat(day) if day else None, mtime_ns, path)
                    for h, kind, day, mtime_ns, path in conn.execute(
                        "SELECT text_hash, kind, published, key_mtime_ns, key_path FROM versions")}
    finally:
        storage.close()
    kept = {h: storage._facts.get(h) for h in rows}
    assert len(storage._facts) == len(rows) and kept == rows


def test_version_facts_keep_the_newest_within_their_bound() -> None:
    facts = VersionFacts(limit=4)
    for i in range(5):
        facts.learn(f"h{i}", ("brief", None, i, f"f{i}"))
    assert facts.get("h0") is not None  # pending: the transaction that learned it sees it
    facts.settle(True)
    assert len(facts) == 2 and [facts.get(f"h{i}") is not None for i in range(5)] == [False] * 3 + [True] * 2
    facts.learn("h9", ("brief", None, 9, "f9"))
    facts.settle(False)
    assert facts.get("h9") is None


def test_version_facts_are_settled_by_the_thread_that_learned_them() -> None:
    """Another thread's commit (an unsubscribe during a scan's group) settles nothing of
    what the group learned: that is kept only if the group itself commits."""
    facts = VersionFacts()
    facts.learn("h1", ("brief", None, 1, "f1"))
    other = threading.Thread(target=facts.settle, args=(True,))
    other.start()
    other.join(10)
    assert len(facts) == 0 and facts.get("h1") is not None
    facts.settle(False)
    assert facts.get("h1") is None and len(facts) == 0
    facts.learn("h2", ("brief", None, 2, "f2"))
    facts.settle(True)
    assert len(facts) == 1 and facts.get("h2") is not None


def _ingest_file(storage: Storage, path: Path, now: dt.datetime) -> None:
    prepared = prepare.digest(path.read_bytes())
    entries = [(item, prepared.fingerprint(i)) for i, item in enumerate(prepared.items)]
    info = FileInfo(path.name, path.stat().st_size, path.stat().st_mtime_ns)
    storage.ingest(info, prepared.sha256, entries, now)


@pytest.mark.parametrize("item", [
    Item(kind="brief", paragraphs=("On 11 December 2024, the delegation of Belarus arrived in Minsk for talks.",)),
    Item(kind="article", title="Talks", paragraphs=("The delegation arrived.", "Talks began at noon in Minsk.")),
    Item(kind="article", title="Empty lead", paragraphs=("...", "Talks began at noon in Minsk.")),
    Item(kind="brief", paragraphs=("x",)),
])
def test_a_fingerprint_arrives_from_the_helper_as_it_left(item: Item) -> None:
    """Fingerprints cross the helper's pipe in a packed form (Fingerprint.__reduce__)."""
    fp = fingerprint(item)
    back = pickle.loads(pickle.dumps(fp, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == fp and back.item == fp.item and back.words == fp.words
    assert back.lead_shingles == fp.lead_shingles and (back.lead_shingles is back.shingles) == (
        fp.lead_shingles is fp.shingles)
    assert back.slots == fp.slots


def test_a_pass_collects_less_often_and_restores_the_collector_even_when_it_fails() -> None:
    import gc

    from monitor import scan

    before = gc.get_threshold()
    with pytest.raises(RuntimeError), scan._fewer_collections():
        assert gc.get_threshold()[0] >= scan.PASS_GC_THRESHOLD
        raise RuntimeError("the pass failed")
    assert gc.get_threshold() == before
