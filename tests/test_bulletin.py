"""The parser, table-driven: every sample in tests/data/ against the JSON next to it."""

from __future__ import annotations

import codecs
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, seed

from monitor.bulletin import TITLE_CHARS, brief_title, decode, find_date, parse, split_paragraphs
from monitor.models import Bulletin, Item, Rejected

SAMPLES = sorted(p for p in DATA.iterdir() if p.suffix in (".txt", ".bin"))


def expected_for(sample: Path) -> dict[str, Any]:
    return json.loads(sample.with_suffix(".json").read_text(encoding="utf-8"))


def test_every_sample_has_an_expectation() -> None:
    assert len(SAMPLES) >= 15
    for sample in SAMPLES:
        assert sample.with_suffix(".json").is_file(), f"{sample.name} has no expected JSON next to it"


def check_item(item: Item, want: dict[str, Any], where: str) -> None:
    assert item.kind == want["kind"], where
    assert item.title == want.get("title"), where
    published = dt.date.fromisoformat(want["published"]) if want.get("published") else None
    assert item.published == published, where
    if "paragraphs" in want:
        assert list(item.paragraphs) == want["paragraphs"], where
    if "paragraph_count" in want:
        assert len(item.paragraphs) == want["paragraph_count"], where
    if "first_words" in want:
        assert item.paragraphs[0].startswith(want["first_words"]), where


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample(sample: Path) -> None:
    want = expected_for(sample)
    got = parse(sample.read_bytes())
    if "rejected" in want:
        assert isinstance(got, Rejected), f"{sample.name} was accepted: {got}"
        assert got.reason.startswith(want["rejected"]), got.reason
        return
    assert isinstance(got, Bulletin), f"{sample.name}: {got}"
    if "encoding" in want:
        assert codecs.lookup(got.encoding).name == codecs.lookup(want["encoding"]).name
    assert len(got.items) == len(want["items"]), [i.kind for i in got.items]
    for n, (item, item_want) in enumerate(zip(got.items, want["items"], strict=True)):
        check_item(item, item_want, f"{sample.name} item {n}")


def test_layout_variants_give_the_same_items() -> None:
    """BOM, CRLF, blank lines and trailing spaces change nothing a reader sees."""
    plain = parse((DATA / "en_utf8_lf.txt").read_bytes())
    dressed = parse((DATA / "en_utf8_bom_crlf_blank_lines.txt").read_bytes())
    assert isinstance(plain, Bulletin) and isinstance(dressed, Bulletin)
    assert plain.items == dressed.items


LAYOUTS = [(enc, nl) for enc in ("utf-8", "utf-8-sig", "cp1251")
           for nl in ("\n", "\r\n", "\r", "\n\n", "\r\n\r\n", "\u2028") if not (enc == "cp1251" and nl == "\u2028")]


@pytest.mark.parametrize(("encoding", "newline"), LAYOUTS)
def test_russian_any_encoding_any_line_end(encoding: str, newline: str) -> None:
    text = newline.join([
        "20 декабря 2024 года в Москве состоялось заседание Совета министров иностранных дел ОДКБ.",
        "Итоги года подведены в Секретариате",
        "21.12.2024",
        "Генеральный секретарь подвёл итоги уходящего года на встрече с сотрудниками.",
    ])
    got = parse(text.encode(encoding))
    assert isinstance(got, Bulletin)
    brief, article = got.items
    assert brief.published == dt.date(2024, 12, 20)
    assert brief.paragraphs[0].startswith("20 декабря 2024 года в Москве")
    assert article.title == "Итоги года подведены в Секретариате"
    assert article.published == dt.date(2024, 12, 21)
    assert article.paragraphs == ("Генеральный секретарь подвёл итоги уходящего года на встрече с сотрудниками.",)


def test_seed_000() -> None:
    got = parse(seed("000"))
    assert isinstance(got, Bulletin)
    kinds = [item.kind for item in got.items]
    assert kinds == ["brief"] * 4 + ["article"]
    article = got.items[-1]
    assert article.title == (
        "A meeting of the Working Group on Military-Economic Cooperation under the Chairman of the CSTO "
        "Interstate Commission on Military-Economic Cooperation was held on 17-18 April 2024")
    assert article.published == dt.date(2024, 4, 18)
    assert len(article.paragraphs) == 6
    assert article.paragraphs[0].startswith("The meeting was held in the city of Moscow")
    assert not any("18.04.2024" in p for p in article.paragraphs)
    assert article.paragraphs[-1] == "In addition, the draft Work Plan of the Commission for 2025 was agreed upon."
    # 'On 20 December' and 'On 10 and 11 December' take 2024 from the other briefs
    assert [i.published for i in got.items[:4]] == [
        dt.date(2024, 12, 20), dt.date(2024, 12, 10), dt.date(2024, 12, 11), dt.date(2024, 12, 11)]


def test_seed_004() -> None:
    got = parse(seed("004"))
    first = parse(seed("000"))
    assert isinstance(got, Bulletin) and isinstance(first, Bulletin)
    assert [item.kind for item in got.items] == ["brief"] * 4 + ["article"]
    assert got.items[:4] == first.items[:4]
    article = got.items[-1]
    assert article.title == ("The CSTO Secretariat hosted consultations of the heads of press services "
                             "(information units) of the foreign ministries of the CSTO member states")
    assert article.published == dt.date(2024, 12, 10)
    assert len(article.paragraphs) == 6
    assert article.paragraphs[0].startswith("On 10 December 2024, in the CSTO Secretariat")


@pytest.mark.parametrize(("text", "want"), [
    ("On December 11, 2024, the meeting", (11, 12, 2024)),
    ("On 10 December 2024 the meeting", (10, 12, 2024)),
    ("On 10\u00a0December\u00a02024 the meeting", (10, 12, 2024)),
    ("On 10 and 11 December, consultations", (10, 12, None)),
    ("On December 10-11, consultations", (10, 12, None)),
    ("20 декабря 2024 года в Москве", (20, 12, 2024)),
    ("1 мая в Минске", (1, 5, None)),
    ("On 20 December, a joint training", (20, 12, None)),
    ("The Secretary General spoke to the press", None),
    ("On 2024-12-11 something", None),
])
def test_find_date(text: str, want: tuple[int, int, int | None] | None) -> None:
    assert find_date(text) == want


def test_brief_date_is_its_opening_not_a_later_mention() -> None:
    text = ("The Secretary General received the delegation of the Parliamentary Assembly and the "
            "chairs of the committees, recalling the summit of 5 May 2023.")
    got = parse(text.encode())
    assert isinstance(got, Bulletin)
    assert got.items[0].published is None


def test_year_is_never_taken_from_the_clock() -> None:
    got = parse(b"On 1 January, the new chairmanship began.\n")
    assert isinstance(got, Bulletin)
    assert got.items[0].published is None


def test_impossible_dates_are_not_dates() -> None:
    got = parse(b"On 31 February 2024, nothing happened.\nA title\n31.02.2024\nBody text here.\n")
    assert isinstance(got, Bulletin)
    assert got.items[0].published is None
    # 31.02.2024 is no date line, so there is no article either: every line is a brief
    assert {i.kind for i in got.items} == {"brief"}
    assert all(i.published is None for i in got.items)


def test_very_long_paragraph() -> None:
    words = " ".join(f"word{n}" for n in range(30_000))
    assert len(words) > 200_000
    got = parse(("On 5 May 2024, " + words + ".\nShort brief.\n").encode())
    assert isinstance(got, Bulletin)
    assert len(got.items) == 2
    assert got.items[0].paragraphs[0].endswith("word29999.")
    assert got.items[0].published == dt.date(2024, 5, 5)


@pytest.mark.parametrize("data", [b"", b"\n\n", b"   \t\r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf \r\n"])
def test_blank_is_rejected(data: bytes) -> None:
    got = parse(data)
    assert isinstance(got, Rejected)
    assert got.reason.startswith("no text")


def test_nul_byte_means_binary_even_in_text() -> None:
    got = decode(b"On 5 May 2024, a perfectly normal brief.\x00\n")
    assert isinstance(got, Rejected)
    assert "NUL" in got.reason


def test_a_few_stray_control_characters_are_removed_not_rejected() -> None:
    got = parse(b"On 5 May 2024,\x01 a brief\x07 with\x1b stray\x7f controls.\n")
    assert isinstance(got, Bulletin)
    assert got.items[0].paragraphs == ("On 5 May 2024, a brief with stray controls.",)


def test_bidi_controls_are_removed() -> None:
    got = parse("On 5 May 2024, admin\u202e gnp.exe\u202c was seen.".encode())
    assert isinstance(got, Bulletin)
    assert "\u202e" not in got.items[0].paragraphs[0]


def test_split_paragraphs_line_ends() -> None:
    assert split_paragraphs("a\r\nb\rc\nd\n\n\ne  \r\n\t f") == ["a", "b", "c", "d", "e", "f"]


def test_brief_title_cuts_on_a_word_boundary() -> None:
    paragraph = ("On December 11, 2024, Taalatbek Masadykov, the CSTO Deputy Secretary General and Special "
                 "Representative of the CSTO Secretary General for Peacekeeping, held a meeting.")
    title = brief_title(paragraph)
    assert title.endswith("\u2026")
    words = title[:-1].split()
    # the dateline is left out (the date is shown beside the title); whole words only after it
    assert words == paragraph.split()[4: 4 + len(words)]
    assert len(title) <= TITLE_CHARS + 1
    assert brief_title("Short brief.") == "Short brief."


@pytest.mark.parametrize(("paragraph", "title"), [
    ("On December 11, 2024, the CSTO Secretary General received the Ambassador.",
     "The CSTO Secretary General received the Ambassador."),
    ("On 10 and 11 December, the staff met in Minsk.", "The staff met in Minsk."),
    ("20 декабря 2024 года в Москве состоялось заседание Совета.", "В Москве состоялось заседание Совета."),
    # too little after the dateline for a title: the whole opening stays
    ("On 10 December 2024, talks ended.", "On 10 December 2024, talks ended."),
    # a date further on is no dateline
    ("The Council met on 10 December 2024 in Minsk.", "The Council met on 10 December 2024 in Minsk."),
])
def test_brief_title_leaves_out_the_dateline(paragraph: str, title: str) -> None:
    assert brief_title(paragraph) == title


def test_brief_title_cuts_at_non_breaking_spaces_too() -> None:
    paragraph = "\u00a0".join(["Генеральный", "секретарь", "ОДКБ", "провёл", "встречу"] * 6)
    title = brief_title(paragraph)
    assert title.endswith("\u2026")
    words = title[:-1].split("\u00a0")
    assert words == paragraph.split("\u00a0")[: len(words)]


def test_brief_title_of_one_endless_word() -> None:
    assert brief_title("x" * 500) == "x" * TITLE_CHARS + "\u2026"


@pytest.mark.parametrize(("data", "items"), [(b"1.1.0001", 0), (b"18.04.2024\n", 0),
                                             (b"On 1 May 2024, a brief.\n18.04.2024", 1)])
def test_a_bare_date_line_is_no_item(data: bytes, items: int) -> None:
    """Found by hypothesis: a date line with neither title nor body made an empty article."""
    parsed = parse(data)
    if items == 0:
        assert isinstance(parsed, Rejected) and parsed.reason.startswith("no news items")
    else:
        assert isinstance(parsed, Bulletin) and len(parsed.items) == items
        assert all(item.paragraphs for item in parsed.items)
