"""Story identity: normalisation, hashes, shingles, MinHash band keys. Pure.

Two texts are the same story when they are the same words after normalisation
(exact repeat), or when a verified similarity says one is a revision of the other.
Candidates for that check come from two kinds of index keys, both stored as plain
indexed rows so a lookup costs the same in a store of a thousand or a million stories:

* paragraph hashes: a revision that leaves any paragraph untouched (a word changed
  elsewhere, a paragraph added, a brief published as an article's first paragraph)
  shares that paragraph's hash with its earlier self;
* MinHash LSH band keys over word shingles: a one-paragraph brief with a word changed
  shares no paragraph, but still shares most shingles.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import xor

from monitor import slots as slot
from monitor.hashset import EMPTY, HashSet, from_wire, pack, shared, size, to_wire
from monitor.hashset import speedups as _speedups
from monitor.models import Item
from monitor.slots import Slots
from monitor.tokens import splitter

SHINGLE_WORDS = 3

# MinHash by one-permutation hashing: every shingle is hashed once and falls into one
# of BANDS * ROWS bins; each bin keeps its minimum. A shingle's hash is simple
# tabulation hashing over its words: the XOR of one independent 64-bit blake2b value
# per (word, place in the shingle), so each distinct word is hashed once, not each
# shingle, and the hash is the same in every process and on every machine. Simple
# tabulation is 3-independent and known to behave like a truly random hash for MinHash
# (Dahlgaard, Knudsen, Thorup 2017; Patrascu, Thorup 2012). A band key hashes ROWS bins.
# Two texts with shingle Jaccard similarity J share at least one band key with
# probability 1 - (1 - J**ROWS) ** BANDS. With 10 bands of 4 rows:
#   J = 0.85 (one word changed in a 40-word brief)  -> 0.9994
#   J = 0.60 (a heavier correction)                  -> 0.75
#   J = 0.20 (different stories, shared boilerplate) -> 0.016
# A shared key only makes a candidate; verify() decides.
BANDS = 10
ROWS = 4
BINS = BANDS * ROWS

# A paragraph this short ("In addition, the plan was agreed.") is too generic to
# point at one story, so it gets no paragraph key.
MIN_KEY_WORDS = 8

# Verification thresholds (see verify()):
# whole-text shingle Jaccard at or above this is a revision; corrections measured on
# the seeds score 0.85-0.98, while the two seed briefs that share their opening
# "On December 11, 2024, ... the CSTO Deputy Secretary General" score 0.05.
SAME_STORY_JACCARD = 0.5
# a brief published in full: the brief's shingles lie inside the article's lead
# paragraph to at least this share.
LEAD_CONTAINMENT = 0.8
# "at least half of the words stay" (BULLETINS.md): a large edit that replaces words all
# over a text destroys most of its 3-shingles, so the rule is also checked on words: the
# share of the older text's lower-case content words (not stopwords, stems for Russian)
# still found in the newer text.
KEPT_WORDS = 0.5
# Fewer shared content words than this and nothing is verified, whatever the shingles
# say: "On 17 May 2024, p1." and "On 17 May 2024, p2." share half their shingles (the
# date) and nothing else. Three: a 14-word brief with one word changed still shares
# its actor, its place and its verb or more.
MIN_SHARED_WORDS = 3
# ... and a large edit still keeps runs of words: at least this share of the older text's
# 3-shingles. A third of the words replaced at random keeps (2/3)^3 = 0.30 of them (the
# benchmark's large edits keep 0.29-0.6); two unrelated texts, even long ones drawing on
# one vocabulary (their distinct words overlap by half), share next to none, and two
# briefs of one day written to one formula about different meetings share its phrases
# only (0.24 for the Joint Staff brief of tests/test_hostile.py and the seed's).
KEPT_SHINGLES = 0.27

_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u00ad": None,
})
_WORD = re.compile(r"\w+")
# The words of a normalized text: _WORD.findall, faster on ASCII.
tokens = splitter(_WORD)
# Control, zero-width, bidi and BOM characters are deleted, in the same pass as the folding.
_INVISIBLE = [(0x00, 0x1F), (0x7F, 0x9F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2069), (0xFEFF, 0xFEFF)]
_FOLD = {**_QUOTES, **{c: None for first, last in _INVISIBLE for c in range(first, last + 1)}}
_DELETED = re.compile("[" + "".join(re.escape(chr(c)) for c, to in _FOLD.items() if to is None) + "]")
_FOLDS = [(chr(c), to) for c, to in _QUOTES.items() if to is not None]
_MASK64 = (1 << 64) - 1
# Distinct words whose hashes are kept: a bulletin's vocabulary, a few megabytes at most.
WORD_CACHE = 1 << 14
# A word's three hashes, one table per place in a shingle, so that a text's shingle hashes
# are three C-level lookups per word and two XORs, with no Python loop (most of a
# fingerprint's cost was that loop).
_PLACES: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})
# For a word that counts for Fingerprint.words (not a stopword, a single letter or a
# number), the 64-bit value that stands for it there (its first place's hash), else 0;
# learned with its hashes. Sets of ints compare as sets of the words would (two words
# share a value with a chance of 2**-64), and are built from the helper's pipe
# (monitor/prepare.py) in a third of the time: a str must be hashed, an int is its hash.
_CONTENT: dict[str, int] = {}
# For monitor/_speedups.c, each word's 24-byte digest (its three hashes, big-endian) and a
# byte that is 1 for a content word: one lookup per word instead of four.
_RECORDS: dict[str, bytes] = {}
_BIN = BINS.__rmod__  # h -> h % BINS
_BAND_PREFIXES = [f"{band}:" for band in range(BANDS)]


def _fold(text: str) -> str:
    """text.translate(_FOLD), which looks every character of a non-ASCII text up in a dict
    (27 µs for a Russian paragraph of 500 characters, a tenth of that this way): texts
    without characters to delete (nearly all) get one replace() per folded character
    they contain."""
    if text.isascii() and text.isprintable():
        return text
    if _DELETED.search(text):
        return text.translate(_FOLD)
    for char, folded in _FOLDS:
        if char in text:
            text = text.replace(char, folded)
    return text


def normalize(text: str) -> str:
    """The text as identity sees it: NFKC, folded quotes/dashes/spaces, casefolded."""
    if text.isascii() and text.isprintable():
        # NFKC and the folding leave printable ASCII as it is, and its only whitespace is
        # the space: without a double one, split() and join() come to strip(), in half the
        # time of the whole (most paragraphs).
        return (text.strip() if "  " not in text else " ".join(text.split())).casefold()
    return _normalize_any(text)


def _normalize_any(text: str) -> str:
    text = _fold(unicodedata.normalize("NFKC", text))
    # split() and strip() take the same whitespace as the regex \s: runs become one space.
    return " ".join(text.split()).casefold()


def _normalize_again(text: str) -> str:
    """normalize() of normalized paragraphs joined by newlines. On ASCII, normalize()
    only deletes the newlines (the rest is done already), which is much cheaper."""
    return text.replace("\n", "") if text.isascii() else normalize(text)


def _py_hash64(text: str) -> int:
    """A signed 64-bit hash of a text (blake2b), to fit a BIGINT column."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


_hash64 = _speedups.hash64 if _speedups else _py_hash64


def _learn(words: set[str]) -> None:
    """Hash the words not in the tables yet: three independent 64-bit values each."""
    h0, h1, h2 = _PLACES
    new = [w for w in words if w not in h0]
    if len(h0) + len(new) > WORD_CACHE:
        for table in (*_PLACES, _CONTENT, _RECORDS):  # a long-running service meets new words forever
            table.clear()
        new = list(words)
    for word in new:
        d = hashlib.blake2b(word.encode(), digest_size=24).digest()
        h0[word], h1[word], h2[word] = (int.from_bytes(d[:8], "big"), int.from_bytes(d[8:16], "big"),
                                        int.from_bytes(d[16:], "big"))
        content = word not in slot.STOPWORDS and len(word) > 1 and not word.isdigit()
        _CONTENT[word] = h0[word] if content else 0
        _RECORDS[word] = d + (b"\x01" if content else b"\x00")


def _content_words(words: list[str]) -> frozenset[int]:  # without the extension
    distinct = set(words)
    try:
        return frozenset(filter(None, map(_CONTENT.__getitem__, distinct)))
    except KeyError:
        _learn(distinct)
        return frozenset(filter(None, map(_CONTENT.__getitem__, distinct)))


def _words(text: str) -> list[str]:
    return tokens(normalize(text))


def shingles(text: str) -> frozenset[str]:
    """The word shingles of a text, as text (what shingle_hashes() hashes)."""
    words = _words(text)
    if len(words) <= SHINGLE_WORDS:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1))


def _shingle_hash(words: Sequence[str]) -> int:
    _learn(set(words))
    h = 0
    for place, word in enumerate(words):
        h ^= _PLACES[place][word]
    return h


def _word_sets(words: list[str]) -> tuple[HashSet, HashSet]:
    """The shingle hashes and the content words (as _content_words()) of a text's words."""
    if _speedups is None:
        return _py_shingle_hashes(words), _content_words(words)
    found = _speedups.word_sets(words, _RECORDS)
    if found is None:  # a word not learned yet
        _learn(set(words))
        found = _speedups.word_sets(words, _RECORDS)
    assert found is not None  # _learn() leaves every one of the words in the table
    return found


def _shingle_hashes(words: list[str]) -> HashSet:
    # Without the extension, the shingles alone: a lead's content words are never used.
    return _word_sets(words)[0] if _speedups is not None else _py_shingle_hashes(words)


def _py_shingle_hashes(words: list[str]) -> frozenset[int]:
    if len(words) <= SHINGLE_WORDS:
        return frozenset([_shingle_hash(words)]) if words else frozenset()
    h0, h1, h2 = _PLACES
    first = list(map(h0.get, words))
    if None in first:
        _learn(set(words))
        first = list(map(h0.__getitem__, words))
    # The XOR of each word's first, the next word's second and the one after's third hash.
    return frozenset(map(xor, map(xor, first, map(h1.__getitem__, words[1:])), map(h2.__getitem__, words[2:])))


def shingle_hashes(text: str) -> HashSet:
    """The 64-bit hashes of a text's shingles: what fingerprints and band keys are made of."""
    return _shingle_hashes(_words(text))


def band_keys(shingle_set: frozenset[str]) -> tuple[int, ...]:
    """The band keys of a set of shingles given as text (see shingles())."""
    return _band_keys(pack({_shingle_hash(s.split(" ")) for s in shingle_set}))


def _band_keys(hashes: HashSet) -> tuple[int, ...]:
    if _speedups is None:
        return _py_band_keys(hashes)
    return _speedups.band_keys(hashes, BANDS, ROWS)  # type: ignore[arg-type]


def _py_band_keys(hashes: frozenset[int]) -> tuple[int, ...]:
    if not hashes:
        return ()
    # Each bin's minimum: sorted largest first, the smallest hash of a bin is written last.
    ordered = sorted(hashes, reverse=True)
    filled = dict(zip(map(_BIN, ordered), ordered, strict=True))
    if len(filled) == BINS:
        bins = [filled[i] for i in range(BINS)]
    else:
        # Densify empty bins from the next filled one (the first one after the last) so
        # short texts still get full bands. One pass backwards: `after` is the next filled bin.
        bins = [0] * BINS
        after = min(filled)
        for i in range(BINS - 1, -1, -1):
            if i in filled:
                bins[i] = filled[i]
                after = i
            else:
                bins[i] = filled[after] ^ (i * 0x9E3779B97F4A7C15 & _MASK64)
    rows = list(map(str, bins))
    return tuple(_py_hash64(prefix + ",".join(rows[band * ROWS : (band + 1) * ROWS]))
                 for band, prefix in enumerate(_BAND_PREFIXES))


@dataclass(frozen=True)
class Fingerprint:
    """Everything identity needs to know about one item's text."""

    text_hash: str
    paragraph_keys: tuple[int, ...]
    band_keys: tuple[int, ...]
    shingles: HashSet  # shingle_hashes(): Jaccard on hashes, as on the texts
    lead_shingles: HashSet
    # The event-date key (none without a full date), looked up with the band keys: a large
    # edit or a reworded brief published in full shares few shingles, and so few band
    # keys, with its earlier self, but keeps its date. A press office publishes a bounded
    # number of stories a day, so the key stays uncrowded however large the store grows.
    # Stored only for items of up to DATE_KEY_WORDS words (stored_date_keys()): a long
    # article keeps some paragraph or wording of its own, and verifying every long
    # article of a day against each other would cost more than it finds.
    date_keys: tuple[int, ...] = ()
    length: int = 0  # words
    # Distinct words, casefolded, without stopwords and numbers (as _CONTENT's values):
    # the cheap measure of what two texts share, taken before the slots are.
    words: HashSet = EMPTY
    item: Item | None = field(default=None, compare=False, repr=False)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # What the helper process sends for every fresh text (monitor/prepare.py): the
        # sets of 64-bit values packed, which load many times faster than a pickled int
        # per element. The slots are not sent.
        lead = None if self.lead_shingles is self.shingles else to_wire(self.lead_shingles)
        return _unpickled, (self.text_hash, self.paragraph_keys, self.band_keys, to_wire(self.shingles),
                            lead, self.date_keys, self.length, to_wire(self.words), self.item)

    @functools.cached_property
    def slots(self) -> Slots:
        """The item's identity slots, extracted on first use: most candidates are rejected
        on shared words and shingles without them (a fingerprint is immutable, so the
        cache is its own)."""
        return slot.extract(self.item) if self.item is not None else slot.EMPTY

    @functools.cached_property
    def content_words(self) -> frozenset[str]:
        """The body's lower-case content words as slots.content_words() gives them, on first use."""
        return slot.content_words(self.item) if self.item is not None else frozenset()


def _unpickled(text_hash: str, paragraph_keys: tuple[int, ...], band_keys: tuple[int, ...], shingles: bytes,
               lead: bytes | None, date_keys: tuple[int, ...], length: int, words: bytes,
               item: Item | None) -> Fingerprint:
    all_shingles = from_wire(shingles)
    return Fingerprint(text_hash, paragraph_keys, band_keys, all_shingles,
                       all_shingles if lead is None else from_wire(lead), date_keys, length,
                       from_wire(words), item)


def normalized_paragraphs(item: Item) -> list[str]:
    """What text_hash() and fingerprint() start from; pass it to both to normalize once."""
    return [normalize(p) for p in item.paragraphs]


def text_hash(item: Item, normalized: list[str] | None = None) -> str:
    """The exact-repeat key alone: what fingerprint() puts in `text_hash`, at a fraction of its cost."""
    return _repeat_key(item, normalized_paragraphs(item) if normalized is None else normalized)


def _repeat_key(item: Item, normalized: list[str]) -> str:
    """Equal for exact repeats only. An article's title and date line are part of its text,
    so a corrected title or date is a revision, and a brief published as an article with
    that one paragraph as its body takes the article's title. A brief's date is left out:
    a year-less one is completed from its bulletin, which differs from copy to copy."""
    parts = normalized
    if item.kind == "article":
        date = item.published.isoformat() if item.published else ""
        parts = [f"{normalize(item.title or '')}\x1f{date}", *normalized]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def known_fingerprint(text_hash: str) -> Fingerprint:
    """The fingerprint of a text the store already has: an exact repeat is decided on its
    hash alone (decide.py), so its shingles and index keys are never computed."""
    return Fingerprint(text_hash, (), (), EMPTY, EMPTY)


def fingerprint(item: Item, normalized: list[str] | None = None, *, keys: bool = True,
                hashed: str | None = None) -> Fingerprint:
    """What identity needs of an item; without `keys`, no index keys (a stored candidate
    is verified, never looked up, and its band keys are a good part of the cost).
    `hashed`: text_hash(item, normalized), where the caller has it already."""
    if normalized is None:
        normalized = normalized_paragraphs(item)
    all_words = tokens(_normalize_again("\n".join(normalized)))
    all_shingles, content = _word_sets(all_words)
    # A normalized paragraph's words are separated by single spaces.
    pkeys = tuple(
        dict.fromkeys(_hash64(p) for p in normalized if p.count(" ") >= MIN_KEY_WORDS - 1)
    ) if keys else ()
    if len(normalized) == 1:
        lead = all_shingles
    else:
        lead = _shingle_hashes(tokens(_normalize_again(normalized[0]))) if normalized else EMPTY
    return Fingerprint(
        text_hash=_repeat_key(item, normalized) if hashed is None else hashed,
        paragraph_keys=pkeys,
        band_keys=_band_keys(all_shingles) if keys else (),
        shingles=all_shingles,
        lead_shingles=lead,
        date_keys=(_hash64(f"date:{item.published.isoformat()}"),) if item.published else (),
        words=content,
        length=len(all_words),
        item=item,
    )


DATE_KEY_WORDS = 600


def stored_date_keys(fp: Fingerprint) -> tuple[int, ...]:
    """The date keys to store for an item: those of items up to DATE_KEY_WORDS words."""
    return fp.date_keys if fp.length <= DATE_KEY_WORDS else ()


def jaccard(a: HashSet, b: HashSet) -> float:
    if not a or not b:
        return 0.0
    both = shared(a, b)  # the union's size from the intersection's: no union set built
    return both / (size(a) + size(b) - both)


def containment(small: HashSet, big: HashSet) -> float:
    return shared(small, big) / size(small) if small else 0.0


def similarity(new: Fingerprint, old: Fingerprint, new_paragraphs: int, old_paragraphs: int,
               *, new_is_older: bool = False) -> float:
    """How sure we are that `new` is a revision of `old` (0 when it is not).

    First the identity slots must agree (conflict()): a formula's sibling differs in a
    date, a country, a city, a person or a body, however many words it shares. Then
    enough must be shared (MIN_SHARED_WORDS), and either the whole texts are close (shingle
    Jaccard: a correction, an added paragraph), or at least half of the older text's
    content words stay (KEPT_WORDS: a large edit), or one of them is a one-paragraph
    brief and the other's lead paragraph contains it (the brief published in full as an
    article, or the reverse arriving late). `new_is_older`: `new` comes from an older
    bulletin than `old` (a late copy), so `new` is the text whose words must stay.
    """
    # The cheap measures first (sets the fingerprint has), the slots last.
    both = shared(new.words, old.words)
    if both < MIN_SHARED_WORDS:
        return 0.0
    score = _closeness(new, old, new_paragraphs, old_paragraphs, both, new_is_older)
    same_lead = bool(new.lead_shingles) and new.lead_shingles == old.lead_shingles
    if not score or conflict(new.slots, old.slots, same_lead=same_lead):
        return 0.0
    return score


def _closeness(new: Fingerprint, old: Fingerprint, new_paragraphs: int, old_paragraphs: int, both: int,
               new_is_older: bool) -> float:
    score = jaccard(new.shingles, old.shingles)
    if score >= SAME_STORY_JACCARD:
        return score
    if (new_paragraphs == 1) != (old_paragraphs == 1):
        brief, article = (new, old) if new_paragraphs == 1 else (old, new)
        lead = containment(brief.lead_shingles, article.lead_shingles)
        if lead >= LEAD_CONTAINMENT:
            return lead
    older, newer = (new, old) if new_is_older else (old, new)
    if both < KEPT_WORDS * size(older.words) or containment(older.shingles, newer.shingles) < KEPT_SHINGLES:
        return 0.0  # far from half of the words, or not the same text at all
    # Counted on lower-case words: the names agree already (no conflict), and counting
    # them would let two stories of one day about the same people pass on names alone.
    a, b = older.content_words, newer.content_words
    kept = len(a & b) / len(a) if a else 0.0
    # Below any Jaccard or containment score: a closer candidate wins over a large edit.
    return kept * SAME_STORY_JACCARD if kept >= KEPT_WORDS else 0.0


def conflict(a: Slots, b: Slots, *, same_lead: bool = False) -> bool:
    """Whether two items differ in an identity slot, so they cannot be one story.

    A difference is a conflict only when it goes both ways: each side has a slot the
    other lacks (Nicaragua here, Cambodia there; 20 December here, 27 December there).
    A slot on one side only is an addition (an appended sentence), a removal (a dropped
    paragraph) or a wording change, all of which a revision may make.

    * Dates: the dates of the two lead sentences (a year left out matches any year),
      each looked for in the other's body and date line. Two articles whose leads differ
      and whose lead sentences give no date differ when their date lines do; with the
      lead unchanged, a new date line is a correction.
    * Names: the body's names, each looked for in the other's body and title. Names
      within a typo of each other (slots.close_names) are one name.
    """
    if _uncovered_dates(a.core_dates, b) and _uncovered_dates(b.core_dates, a):
        return True
    if (a.date_line and b.date_line and a.date_line != b.date_line and not same_lead
            and not a.core_dates and not b.core_dates):
        return True
    only_a, only_b = a.names - b.names - b.title_names, b.names - a.names - a.title_names
    return bool(only_a and only_b and _uncovered(only_a, only_b) and _uncovered(only_b, only_a))


def _uncovered_dates(dates: frozenset[slot.Date], other: Slots) -> bool:
    """Whether one of `dates` is not in the other item's body or date line."""
    pool = set(other.dates)
    if other.date_line:
        pool.add((other.date_line.year, other.date_line.month, other.date_line.day))
    return any(not any(_same_date(d, e) for e in pool) for d in dates)


def _same_date(a: slot.Date, b: slot.Date) -> bool:
    return a[1:] == b[1:] and (a[0] == b[0] or not a[0] or not b[0])


def _uncovered(names: frozenset[str] | set[str], pool: frozenset[str] | set[str]) -> set[str]:
    """The names not found in `pool`, not even within a typo."""
    return {n for n in names if not any(slot.close_names(n, p) for p in pool)}
