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

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from monitor.models import Item

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

_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u00ad": None,
})
_WORD = re.compile(r"\w+")
# Control, zero-width, bidi and BOM characters are deleted, in the same pass as the folding.
_INVISIBLE = [(0x00, 0x1F), (0x7F, 0x9F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2069), (0xFEFF, 0xFEFF)]
_FOLD = {**_QUOTES, **{c: None for first, last in _INVISIBLE for c in range(first, last + 1)}}
_MASK64 = (1 << 64) - 1
# Distinct words whose hash is kept: a bulletin's vocabulary, a few megabytes at most.
WORD_CACHE = 1 << 15
_WORD_HASHES: dict[str, tuple[int, int, int]] = {}


def normalize(text: str) -> str:
    """The text as identity sees it: NFKC, folded quotes/dashes/spaces, casefolded."""
    text = unicodedata.normalize("NFKC", text).translate(_FOLD)
    # split() and strip() take the same whitespace as the regex \s: runs become one space.
    return " ".join(text.split()).casefold()


def _normalize_again(text: str) -> str:
    """normalize() of normalized paragraphs joined by newlines. On ASCII, normalize()
    only deletes the newlines (the rest is done already), which is much cheaper."""
    return text.replace("\n", "") if text.isascii() else normalize(text)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _signed(value: int) -> int:
    """Fit a 64-bit value in a signed BIGINT column."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _word_hashes(word: str) -> tuple[int, int, int]:
    """Three independent 64-bit hashes of a word, one for each place in a shingle."""
    found = _WORD_HASHES.get(word)
    if found is None:
        d = hashlib.blake2b(word.encode(), digest_size=24).digest()
        found = int.from_bytes(d[:8], "big"), int.from_bytes(d[8:16], "big"), int.from_bytes(d[16:], "big")
        if len(_WORD_HASHES) >= WORD_CACHE:
            _WORD_HASHES.clear()  # a long-running service meets new words forever
        _WORD_HASHES[word] = found
    return found


def _words(text: str) -> list[str]:
    return _WORD.findall(normalize(text))


def shingles(text: str) -> frozenset[str]:
    """The word shingles of a text, as text (what shingle_hashes() hashes)."""
    words = _words(text)
    if len(words) <= SHINGLE_WORDS:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1))


def _shingle_hash(words: Sequence[str]) -> int:
    h = 0
    for place, word in enumerate(words):
        h ^= _word_hashes(word)[place]
    return h


def _shingle_hashes(words: list[str]) -> frozenset[int]:
    if len(words) <= SHINGLE_WORDS:
        return frozenset([_shingle_hash(words)]) if words else frozenset()
    # _shingle_hash() unrolled for SHINGLE_WORDS == 3: this is most of a fingerprint's cost.
    t: list[Any] = list(map(_WORD_HASHES.get, words))
    if None in t:
        t = [_word_hashes(w) for w in words]
    return frozenset(a[0] ^ b[1] ^ c[2] for a, b, c in zip(t, t[1:], t[2:], strict=False))


def shingle_hashes(text: str) -> frozenset[int]:
    """The 64-bit hashes of a text's shingles: what fingerprints and band keys are made of."""
    return _shingle_hashes(_words(text))


def band_keys(shingle_set: frozenset[str]) -> tuple[int, ...]:
    """The band keys of a set of shingles given as text (see shingles())."""
    return _band_keys(frozenset(_shingle_hash(s.split(" ")) for s in shingle_set))


def _band_keys(hashes: frozenset[int]) -> tuple[int, ...]:
    if not hashes:
        return ()
    bins = [_MASK64] * BINS
    for h in hashes:
        b = h % BINS
        if h < bins[b]:
            bins[b] = h
    # Densify empty bins from the next filled one (the first one after the last) so short
    # texts still get full bands. One pass backwards: `after` is the next filled bin.
    after = next(i for i, v in enumerate(bins) if v != _MASK64)
    for i in range(BINS - 1, -1, -1):
        if bins[i] == _MASK64:
            bins[i] = bins[after] ^ (i * 0x9E3779B97F4A7C15 & _MASK64)
        else:
            after = i
    keys = []
    for band in range(BANDS):
        row = bins[band * ROWS : (band + 1) * ROWS]
        keys.append(_signed(_hash64(f"{band}:" + ",".join(map(str, row)))))
    return tuple(keys)


@dataclass(frozen=True)
class Fingerprint:
    """Everything identity needs to know about one item's text."""

    text_hash: str
    paragraph_keys: tuple[int, ...]
    band_keys: tuple[int, ...]
    shingles: frozenset[int]  # shingle_hashes(): Jaccard on hashes, as on the texts
    lead_shingles: frozenset[int]


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
    return Fingerprint(text_hash, (), (), frozenset(), frozenset())


def fingerprint(item: Item, normalized: list[str] | None = None) -> Fingerprint:
    if normalized is None:
        normalized = normalized_paragraphs(item)
    all_shingles = _shingle_hashes(_WORD.findall(_normalize_again("\n".join(normalized))))
    pkeys = tuple(
        dict.fromkeys(_signed(_hash64(p)) for p in normalized if len(p.split()) >= MIN_KEY_WORDS)
    )
    return Fingerprint(
        text_hash=_repeat_key(item, normalized),
        paragraph_keys=pkeys,
        band_keys=_band_keys(all_shingles),
        shingles=all_shingles,
        lead_shingles=_shingle_hashes(_WORD.findall(_normalize_again(normalized[0]))) if normalized else frozenset(),
    )


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def containment(small: frozenset[int], big: frozenset[int]) -> float:
    return len(small & big) / len(small) if small else 0.0


def similarity(new: Fingerprint, old: Fingerprint, new_paragraphs: int, old_paragraphs: int) -> float:
    """How sure we are that `new` is a revision of `old` (0 when it is not).

    Either the whole texts are close (a correction, an added paragraph), or one of them
    is a one-paragraph brief and the other's lead paragraph contains it (the brief
    published in full as an article, or the reverse arriving late).
    """
    score = jaccard(new.shingles, old.shingles)
    if score >= SAME_STORY_JACCARD:
        return score
    if (new_paragraphs == 1) != (old_paragraphs == 1):
        brief, article = (new, old) if new_paragraphs == 1 else (old, new)
        lead = containment(brief.lead_shingles, article.lead_shingles)
        if lead >= LEAD_CONTAINMENT:
            return lead
    return 0.0
