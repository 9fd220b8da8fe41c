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
from dataclasses import dataclass

from monitor.models import Item

SHINGLE_WORDS = 3

# MinHash by one-permutation hashing: every shingle is hashed once and falls into one
# of BANDS * ROWS bins; each bin keeps its minimum. A band key hashes ROWS bins.
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
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_MASK64 = (1 << 64) - 1


def normalize(text: str) -> str:
    """The text as identity sees it: NFKC, folded quotes/dashes/spaces, casefolded."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _INVISIBLE.sub("", text)
    return _WS.sub(" ", text).strip().casefold()


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _signed(value: int) -> int:
    """Fit a 64-bit value in a signed BIGINT column."""
    return value - (1 << 64) if value >= 1 << 63 else value


def shingles(text: str) -> frozenset[str]:
    words = _WORD.findall(normalize(text))
    if len(words) <= SHINGLE_WORDS:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1))


def band_keys(shingle_set: frozenset[str]) -> tuple[int, ...]:
    if not shingle_set:
        return ()
    bins = [_MASK64] * BINS
    for s in shingle_set:
        h = _hash64(s)
        b = h % BINS
        if h < bins[b]:
            bins[b] = h
    # Densify empty bins from the next filled one so short texts still get full bands.
    filled = [i for i, v in enumerate(bins) if v != _MASK64]
    for i, v in enumerate(bins):
        if v == _MASK64:
            j = next((k for k in filled if k > i), filled[0])
            bins[i] = bins[j] ^ (i * 0x9E3779B97F4A7C15 & _MASK64)
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
    shingles: frozenset[str]
    lead_shingles: frozenset[str]


def text_hash(item: Item) -> str:
    """The exact-repeat key alone: what fingerprint() puts in `text_hash`, at a fraction of its cost."""
    return _repeat_key(item, [normalize(p) for p in item.paragraphs])


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


def fingerprint(item: Item) -> Fingerprint:
    normalized = [normalize(p) for p in item.paragraphs]
    joined = "\n".join(normalized)
    all_shingles = shingles(joined)
    pkeys = tuple(
        dict.fromkeys(_signed(_hash64(p)) for p in normalized if len(p.split()) >= MIN_KEY_WORDS)
    )
    return Fingerprint(
        text_hash=_repeat_key(item, normalized),
        paragraph_keys=pkeys,
        band_keys=band_keys(all_shingles),
        shingles=all_shingles,
        lead_shingles=shingles(normalized[0]) if normalized else frozenset(),
    )


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def containment(small: frozenset[str], big: frozenset[str]) -> float:
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
