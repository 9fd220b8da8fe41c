"""Bytes in, items out: decoding, paragraphs, briefs and articles, dates. Pure.

The layout (see BULLETINS.md): briefs first, one paragraph each; then articles, each a
title line, a ``DD.MM.YYYY`` date line (sometimes glued to the first body paragraph),
and body paragraphs up to the next article's title or the end of the file.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from monitor.models import Bulletin, Item, Rejected

# Legacy code pages that real producers use for Russian text. Letting the detector
# guess freely misreads short cp1251 lines (as cp1125 and others), see STANDARDS.md.
LEGACY_ENCODINGS = ["cp1251", "koi8_r"]

# Share of characters that may be control or replacement characters before a file is
# called binary rather than text with a few stray bytes; a handful of stray control
# characters in a short bulletin is still text (they are removed from the paragraphs).
# charset-normalizer already refuses random bytes that are not UTF-8; this catches
# binary data that happens to be valid UTF-8 (mostly ASCII control bytes).
MAX_CONTROL_SHARE = 0.02
STRAY_CONTROLS = 8

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Vertical tab and form feed are soft line breaks (word processors export them so), not noise.
_NOISE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd]")
# Bidi embedding, override and isolate controls can make shown text read differently
# from what was written ("Trojan Source"); a bulletin has no use for them.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n|\u2028|\u2029|\x1c|\x1d|\x1e|\x85")
# A soft line break inside a paragraph reads as a space: the paragraph goes on.
_SOFT_BREAK = re.compile(r"[ \t]*[\x0b\x0c]+[ \t]*")
# The ASCII characters that _NOISE and the line and paragraph rules look for, as bytes to
# keep: nearly every bulletin is ASCII with none of them but its newlines, and one
# bytes.translate finds that where the regexes went over every character (a fifth of
# parse() on bench/gen.py's bulletins).
_ASCII_CONTROLS = bytes(range(0x20)) + b"\x7f"
_NOT_CONTROL = bytes(c for c in range(256) if c not in _ASCII_CONTROLS)
_ASCII_NOISE = b"".join(bytes([c]) for c in _ASCII_CONTROLS if _NOISE.match(chr(c)))

MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
    "января": 1, "февраля": 2, "марта": 3, "апреля": 4, "мая": 5, "июня": 6, "июля": 7,
    "августа": 8, "сентября": 9, "октября": 10, "ноября": 11, "декабря": 12,
}
_MONTH = "(" + "|".join(sorted(MONTHS, key=len, reverse=True)) + ")"
_DAY = r"(\d{1,2})(?:\s*(?:and|и|-|–|—)\s*(\d{1,2}))?"
_YEAR = r"(?:,?\s+(\d{4}))?"
# Groups of the two date patterns: (first day, last day of a range, month, year).
_GROUPS = ((1, 2, 3, 4), (2, 3, 1, 4))
# "10 December 2024", "10 and 11 December", "20 декабря 2024 года"
_DAY_MONTH = re.compile(rf"\b{_DAY}\s+{_MONTH}{_YEAR}(?!\d)", re.IGNORECASE)
# "December 11, 2024", "December 10-11"
_MONTH_DAY = re.compile(rf"\b{_MONTH}\s+{_DAY}{_YEAR}(?!\d)", re.IGNORECASE)
# The same two patterns for find_dates(), which reads every paragraph: month names as
# written in running text (lower case or capitalised) instead of IGNORECASE, which makes
# the month alternation several times slower.
_MONTH_CASED = "(" + "|".join(f"{m}|{m.capitalize()}" for m in sorted(MONTHS, key=len, reverse=True)) + ")"
_DAY_MONTH_CASED = re.compile(rf"\b{_DAY}\s+{_MONTH_CASED}{_YEAR}(?!\d)")
_MONTH_DAY_CASED = re.compile(rf"\b{_MONTH_CASED}\s+{_DAY}{_YEAR}(?!\d)")
_DIGIT = re.compile(r"\d")  # what _DAY starts with, in both patterns
# A date line, possibly glued to its text; the year may run straight into a Russian lead
# that opens with its own date ("18.01.202418 января 2024 года ..."), so four digits
# followed by a day and a month name still end the date line.
_DATE_LINE = re.compile(rf"^(\d{{1,2}})\.(\d{{1,2}})\.(\d{{4}})(?:(?!\d)|(?=\d{{1,2}}\s+{_MONTH}))\s*(.*)$",
                        re.DOTALL | re.IGNORECASE)
_OPENING_DATE = re.compile(rf"\d{{1,2}}(?:\s*(?:and|и|-|–|—)\s*\d{{1,2}})?\s+{_MONTH}\b", re.IGNORECASE)
# A brief's own date is the one it opens with ("On 11 December 2024, ..."), not a date
# mentioned further on; this is how far into the paragraph we look for it.
LEAD_CHARS = 60
# A brief has no title of its own: readers see its opening words, cut on a word boundary.
TITLE_CHARS = 90
_UP_TO_LAST_SPACE = re.compile(r".*\s", re.DOTALL)  # greedy: ends just after the last one
# A brief's dateline ("On December 11, 2024, ", "20 декабря 2024 года ") says what the
# date shown beside the title says already; the words after it make the better title.
_DATELINE = re.compile(
    rf"^(?:on\s+)?(?:{_DAY}\s+{_MONTH}|{_MONTH}\s+{_DAY}){_YEAR}(?:\s+года|\s+г\.)?\s*,?\s+",
    re.IGNORECASE)
# What must remain after the dateline for it to be a title rather than a fragment.
TITLE_MIN_WORDS = 4
_TITLE_TAIL = re.compile(r"[\s,;:\-\u2013\u2014]+$")


def parse(data: bytes) -> Bulletin | Rejected:
    """Decode and segment a bulletin, or say why the file is not one."""
    text = decode(data)
    if isinstance(text, Rejected):
        return text
    content, encoding = text
    paragraphs = split_paragraphs(content)
    if not paragraphs:
        return Rejected("no text: the file is empty or blank")
    items = segment(paragraphs)
    if not items:
        return Rejected("no news items: the file holds nothing but date lines")
    # Item(...) rather than dataclasses.replace(), which looks the fields up again for
    # every item (0.7 µs instead of 1.5, for some 60,000 items in 10,000 files).
    return Bulletin(items=tuple(Item(item.kind, item.paragraphs, item.title, item.published, headline(item))
                                for item in items), encoding=encoding)


def decode(data: bytes) -> tuple[str, str] | Rejected:
    """Return (text, encoding name) or the reason the bytes are not text."""
    if not data or data.isspace():  # data.strip() without copying the file
        return Rejected("no text: the file is empty or blank")
    if b"\x00" in data:
        return Rejected("binary data: the file contains NUL bytes")
    try:
        text, encoding = data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        # Imported here: most bulletins are UTF-8, and an idle `monitor scan` reads none.
        from charset_normalizer import from_bytes

        match = from_bytes(data, cp_isolation=LEGACY_ENCODINGS).best()
        if match is None:
            return Rejected("undecodable: neither UTF-8 nor a known Cyrillic code page")
        text, encoding = str(match), match.encoding
    noise = _noise(text)
    if noise > max(MAX_CONTROL_SHARE * len(text), STRAY_CONTROLS):
        return Rejected(f"binary data: {noise} control characters in {len(text)}")
    return text, encoding


def _noise(text: str) -> int:
    """How many characters of `text` _NOISE matches."""
    if text.isascii():
        return sum(map(_ascii_controls(text).count, _ASCII_NOISE))
    return len(_NOISE.findall(text))


def _ascii_controls(text: str) -> bytes:
    """The control characters of an ASCII text, in order (one C pass over it)."""
    return text.encode("ascii").translate(None, _NOT_CONTROL)


def clean_line(line: str) -> str:
    """A line as shown to readers: no control characters, no outer whitespace."""
    # Tabs, control and bidi characters are all unprintable: a printable line (most are)
    # has none to remove, and an ASCII one is in NFC already.
    if not line.isprintable():
        line = _BIDI.sub("", _CONTROL.sub("", line.replace("\t", " ")))
    elif line.isascii():
        return line.strip()
    return unicodedata.normalize("NFC", line).strip()


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs are non-blank lines, whatever the line ends and blank-line habits."""
    if text.isascii() and not _ascii_controls(text).replace(b"\n", b""):
        # Printable ASCII but its newlines: what _any_paragraphs() comes to.
        return [line for raw in text.split("\n") if (line := raw.strip())]
    return _any_paragraphs(text)


def _any_paragraphs(text: str) -> list[str]:
    if "\x0b" in text or "\x0c" in text:
        text = _SOFT_BREAK.sub(" ", text)
    lines = (clean_line(line) for line in _LINE_BREAK.split(text))
    return [line for line in lines if line]


def segment(paragraphs: list[str]) -> tuple[Item, ...]:
    """Split paragraphs into briefs and articles."""
    date_at = [i for i, p in enumerate(paragraphs) if _date_line(p) is not None]
    # An article starts at its title, the paragraph before its date line.
    starts = [max(i - 1, 0) for i in date_at]
    briefs = paragraphs[: starts[0]] if starts else paragraphs
    items: list[Item] = [Item(kind="brief", paragraphs=(p,)) for p in briefs]
    for n, (start, line_at) in enumerate(zip(starts, date_at, strict=True)):
        end = starts[n + 1] if n + 1 < len(starts) else len(paragraphs)
        article = _article(paragraphs, start, line_at, end)
        if article.paragraphs:  # a bare date line, with no title and no body, says nothing
            items.append(article)
    return _date_items(items)


def _article(paragraphs: list[str], start: int, line_at: int, end: int) -> Item:
    parsed = _date_line(paragraphs[line_at])
    assert parsed is not None
    date, rest = parsed
    title = paragraphs[start] if start < line_at else None
    body = ([rest] if rest else []) + paragraphs[line_at + 1 : end]
    if title is not None and not body:
        # A title and a date with nothing under them: keep the words as the body.
        body = [title]
    return Item(kind="article", paragraphs=tuple(body), title=title, published=date)


def _date_line(paragraph: str) -> tuple[dt.date | None, str] | None:
    """A ``DD.MM.YYYY`` date line (possibly glued to text): (date, the text after it)."""
    m = _DATE_LINE.match(paragraph)
    if not m:
        return None
    rest = m.group(5).strip()
    if rest and rest[0].isdigit() and not _OPENING_DATE.match(rest):
        return None  # "01.02.2024 12:00" or a number: text, not a date line
    try:
        return dt.date(int(m.group(3)), int(m.group(2)), int(m.group(1))), rest
    except ValueError:
        return None


def find_dates(text: str) -> list[tuple[int, int, int | None]]:
    """Every (day, month, year or None) date in `text`, English or Russian, in text order;
    a range ("10 and 11 December") gives both its days. Month names in capitals
    ("11 DECEMBER") are not read here (see _MONTH_CASED)."""
    if not _DIGIT.search(text):  # a date has a day: one scan instead of both patterns' two
        return []
    found = []
    for rx, (day, last, month, year) in zip((_DAY_MONTH_CASED, _MONTH_DAY_CASED), _GROUPS, strict=True):
        for m in rx.finditer(text):
            y = int(m.group(year)) if m.group(year) else None
            mon = MONTHS[m.group(month).lower()]
            found.append((m.start(), (int(m.group(day)), mon, y)))
            if m.group(last):
                found.append((m.start(), (int(m.group(last)), mon, y)))
    return [date for _, date in sorted(found)]


def find_date(text: str) -> tuple[int, int, int | None] | None:
    """The first (day, month, year or None) date in `text`, English or Russian."""
    best: tuple[int, tuple[int, int, int | None]] | None = None
    for rx, (day, _, month, year) in zip((_DAY_MONTH, _MONTH_DAY), _GROUPS, strict=True):
        m = rx.search(text)
        if m and (best is None or m.start() < best[0]):
            y = int(m.group(year)) if m.group(year) else None
            best = (m.start(), (int(m.group(day)), MONTHS[m.group(month).lower()], y))
    return best[1] if best else None


def _date_items(items: list[Item]) -> tuple[Item, ...]:
    """Give briefs their opening date; complete a missing year from this bulletin only."""
    found: list[tuple[int, int, int | None] | None] = []
    for item in items:
        found.append(find_date(item.paragraphs[0][:LEAD_CHARS]) if item.kind == "brief" else None)
    full: list[dt.date | None] = [item.published for item in items if item.published]
    full += [_safe_date(y, m, d) for d, m, y in filter(None, found) if y]
    known = [d for d in full if d]
    reference = max(known) if known else None
    dated: list[Item] = []
    for item, parts in zip(items, found, strict=True):
        if item.published is None and parts is not None:
            day, month, year = parts
            date = _safe_date(year, month, day) if year else _nearest(reference, month, day)
            item = Item(kind=item.kind, paragraphs=item.paragraphs, title=item.title, published=date)
        dated.append(item)
    return tuple(dated)


def _nearest(reference: dt.date | None, month: int, day: int) -> dt.date | None:
    """The date with this day and month closest to the bulletin's latest full date."""
    if reference is None:
        return None
    options = [_safe_date(y, month, day) for y in (reference.year - 1, reference.year, reference.year + 1)]
    valid = [d for d in options if d]
    return min(valid, key=lambda d: abs((d - reference).days)) if valid else None


def _safe_date(year: int | None, month: int, day: int) -> dt.date | None:
    if year is None:
        return None
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def headline(item: Item) -> str:
    """What readers see as the item's title: an article's title; a brief's opening words."""
    return item.title if item.title else brief_title(item.paragraphs[0])


def brief_title(paragraph: str) -> str:
    """The opening words of a paragraph after its dateline, cut on a word boundary, as a title."""
    lead = _DATELINE.match(paragraph)
    # Enough words after the dateline, counted without splitting the whole paragraph.
    if lead and len(paragraph[lead.end():].split(None, TITLE_MIN_WORDS)) >= TITLE_MIN_WORDS:
        rest = paragraph[lead.end():]
        paragraph = rest[:1].upper() + rest[1:]
    if len(paragraph) <= TITLE_CHARS:
        return paragraph
    head = paragraph[: TITLE_CHARS + 1]
    # The last space of any kind (typeset text uses non-breaking ones) before the limit;
    # a single word longer than the limit is cut where it must be.
    last = _UP_TO_LAST_SPACE.match(head)
    cut = _TITLE_TAIL.sub("", head[: last.end() - 1]) if last else ""
    return (cut or paragraph[:TITLE_CHARS]) + "\u2026"
