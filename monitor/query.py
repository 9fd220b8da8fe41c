"""The one query language of search and topics, and the words both stores index. Pure.

A query is words, `"phrases"`, `OR` between two terms, and `-term` to exclude one:
`Сердюков OR Serdyukov "joint staff" -exercise`. Terms side by side must all match;
`OR` binds tighter than that (as in web search engines), so `a b OR c` is a AND (b OR c).
`parse` never raises: an unbalanced quote is dropped, characters that mean something
to FTS5 or tsquery are only word separators, and a very long query keeps its first
MAX_TERMS terms.

Both stores index the same stemmed tokens (`index_text`), made here with the Snowball
stemmers for English and Russian, so `заседание` finds `заседания` and `meeting`
finds `meetings` on SQLite FTS5 and PostgreSQL alike, and the two agree on every match.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from monitor.tokens import splitter

# Letters and digits: the tokens of both stores (FTS5's unicode61 and PostgreSQL's
# parser also split on everything else, so quoting these is always safe).
WORD = re.compile(r"[^\W_]+")
_tokens = splitter(WORD)  # WORD.findall, faster on ASCII
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_LATIN = re.compile(r"[a-z]")
_PHRASE = re.compile(r'(-?)"([^"]*)"|(\S+)')
RUSSIAN_PASSES = 4
# Stems are cached by word; a pure-Python Snowball stem costs some 50 µs, a lookup 0.1 µs.
# 50,000 words (about 7 MB) hold a press office's vocabulary; 200,000 cost 30 MB of the
# 150 MB budget in the helper that indexes ahead (monitor/prepare.py), for names and
# numbers met once.
STEM_CACHE = 50_000
_STEMS: dict[str, str] = {}
_STEM_LOCK = threading.Lock()
MAX_QUERY_CHARS = 2000
MAX_TERMS = 32
MAX_PHRASE_WORDS = 16
MAX_WORD_CHARS = 64
# A story longer than this (a whole 10 MB file as one paragraph) is indexed by its start.
MAX_INDEX_WORDS = 20_000


@dataclass(frozen=True)
class Term:
    """One word or a phrase, as stems in order."""

    stems: tuple[str, ...]


@dataclass(frozen=True)
class Query:
    """Every group must match (one of its terms, at least), no excluded term may."""

    groups: tuple[tuple[Term, ...], ...] = ()
    excluded: tuple[Term, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to look for (an empty query, or exclusions alone): matches no story."""
        return not self.groups

    def stems(self) -> frozenset[str]:
        """The stems that a match shows (for highlighting)."""
        return frozenset(s for group in self.groups for term in group for s in term.stems)


# -- tokens -----------------------------------------------------------------------------


def normalize(text: str) -> str:
    if text.isascii():  # most English text: NFKC and casefold change nothing lower() does not
        return text.lower()
    return unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")


def words(text: str) -> list[str]:
    return _tokens(normalize(text))


@lru_cache(maxsize=1)
def _stemmers() -> tuple[Callable[[str], str], Callable[[str], str]]:
    # Imported on first use: a scan that finds nothing new, or a config load, does not pay
    # for it. The pure-Python classes by name: `snowballstemmer.stemmer()` would switch to
    # PyStemmer when that happens to be installed, whose Snowball version may stem a word
    # differently from the one that built the index.
    from snowballstemmer.english_stemmer import EnglishStemmer
    from snowballstemmer.russian_stemmer import RussianStemmer

    return EnglishStemmer().stemWord, RussianStemmer().stemWord


def stem(word: str) -> str:
    """The stem of a normalized word: Russian for Cyrillic, English for Latin, else the word."""
    found = _STEMS.get(word)
    if found is None:
        # A Snowball stemmer keeps the word it works on in itself: one thread at a time
        # (the service stems queries in HTTP threads while a scan indexes).
        with _STEM_LOCK:
            if len(_STEMS) >= STEM_CACHE:
                _STEMS.clear()
            found = _STEMS[word] = _stem(word[:MAX_WORD_CHARS])
    return found


def _stem(word: str) -> str:
    english, russian = _stemmers()
    if _CYRILLIC.search(word):
        # Snowball takes the end of some nominatives for an ending (Афганистан -> афганиста:
        # "-н" as a verb's; Сердюков -> сердюк) and keeps it in the other cases (Афганистану ->
        # афганистан). Stemming again until nothing changes brings the forms together.
        for _ in range(RUSSIAN_PASSES):
            shorter = russian(word)
            if shorter == word or len(shorter) < 3:
                break
            word = shorter
        return word
    if _LATIN.search(word):
        return english(word) or word
    return word


def stems(text: str) -> list[str]:
    # The hot loop of indexing: a dict lookup per word (a bulletin's words are mostly known),
    # all of them in one map(); the words not cached yet (no stem is empty) are stemmed after.
    words = _tokens(normalize(text))
    found = list(map(_STEMS.get, words))
    if None in found:
        found = [known or stem(word) for known, word in zip(found, words, strict=True)]
    return found  # type: ignore[return-value]  # no None left


def index_text(title: str | None, paragraphs: Sequence[str]) -> str:
    """What both stores index for one version: its stems, space-separated, in text order."""
    text = "\n".join([title or "", *paragraphs])
    return " ".join(stems(text)[:MAX_INDEX_WORDS])


# -- parsing ----------------------------------------------------------------------------


def parse(text: str, stemmer: Callable[[str], str] = stem) -> Query:
    """The query in `text`; never raises (see the module docstring). The config check
    passes `stemmer=str` to look at the words without loading the stemmers."""
    text = text[:MAX_QUERY_CHARS]
    if text.count('"') % 2:
        head, _, tail = text.rpartition('"')
        text = head + " " + tail
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    pending_or = False
    count = 0
    for match in _PHRASE.finditer(text):
        if count >= MAX_TERMS:
            break
        negate, quoted, bare = match.groups()
        if bare is not None:
            if bare == "OR":
                pending_or = bool(groups)
                continue
            if bare == "AND":  # implicit anyway
                continue
            negate = "-" if bare.startswith("-") else ""
            quoted = bare.lstrip("-")
        found = tuple(stemmer(w) for w in words(quoted)[:MAX_PHRASE_WORDS])
        if not found:
            continue
        term = Term(found)
        count += 1
        if negate:
            excluded.append(term)
            pending_or = False
        elif pending_or:
            groups[-1].append(term)
            pending_or = False
        else:
            groups.append([term])
    return Query(tuple(tuple(g) for g in groups), tuple(excluded))


def describe(query: Query) -> str:
    """The query as stems, in the query language (logs, tests)."""
    def term(t: Term) -> str:
        return t.stems[0] if len(t.stems) == 1 else '"' + " ".join(t.stems) + '"'

    parts = [" OR ".join(term(t) for t in group) for group in query.groups]
    return " ".join(parts + ["-" + term(t) for t in query.excluded])


# -- the two stores' syntaxes ---------------------------------------------------------------


def to_fts5(query: Query) -> str:
    """An FTS5 MATCH expression over the indexed stems (only quoted tokens, so always valid)."""
    def term(t: Term) -> str:
        return '"' + " ".join(t.stems) + '"'

    positive = " AND ".join("(" + " OR ".join(term(t) for t in group) + ")" for group in query.groups)
    if query.excluded:
        positive = f"({positive}) NOT (" + " OR ".join(term(t) for t in query.excluded) + ")"
    return positive


def to_tsquery(query: Query) -> str:
    """A PostgreSQL tsquery (for to_tsquery('simple', ...)) over the indexed stems."""
    def term(t: Term) -> str:
        return "(" + " <-> ".join(f"'{s}'" for s in t.stems) + ")"

    parts = ["(" + " | ".join(term(t) for t in group) + ")" for group in query.groups]
    parts += ["!" + term(t) for t in query.excluded]
    return " & ".join(parts)


# -- ranking, matching and highlighting in Python ---------------------------------------------

BM25_K1 = 1.2
BM25_B = 0.75


def rank(query: Query, docs: Sequence[Sequence[str]]) -> list[float]:
    """BM25 of each document (its stems, in order) for the query's terms; document
    frequencies and the average length are those of `docs`, the matches being ranked."""
    terms = [t.stems for group in query.groups for t in group]
    counts = [[_occurrences(t, doc) for t in terms] for doc in docs]
    n = len(docs)
    if not n:
        return []
    avg = sum(len(d) for d in docs) / n or 1.0
    idf = []
    for i in range(len(terms)):
        df = sum(1 for c in counts if c[i])
        idf.append(math.log(1 + (n - df + 0.5) / (df + 0.5)))
    scores = []
    for doc, tfs in zip(docs, counts, strict=True):
        norm = BM25_K1 * (1 - BM25_B + BM25_B * len(doc) / avg)
        scores.append(sum(w * tf * (BM25_K1 + 1) / (tf + norm) for w, tf in zip(idf, tfs, strict=True) if tf))
    return scores


def _occurrences(term: tuple[str, ...], doc: Sequence[str]) -> int:
    if len(term) == 1:
        return doc.count(term[0])
    first, n = term[0], len(term)
    count, at = 0, -1
    try:
        while True:
            at = doc.index(first, at + 1)  # a C scan to each start, not a Python loop over every word
            count += tuple(doc[at:at + n]) == term
    except ValueError:
        return count


# -- matching and highlighting in Python (the digest, snippets) -----------------------------


def matches(query: Query, title: str | None, paragraphs: Sequence[str]) -> bool:
    """Whether one text matches, exactly as the stores decide it."""
    if query.empty:
        return False
    found = index_text(title, paragraphs).split()
    present = set(found)

    def has(t: Term) -> bool:
        if len(t.stems) == 1:
            return t.stems[0] in present
        n = len(t.stems)
        return any(tuple(found[i:i + n]) == t.stems for i in range(len(found) - n + 1))

    return (all(any(has(t) for t in group) for group in query.groups)
            and not any(has(t) for t in query.excluded))


def snippet(query: Query, paragraphs: Sequence[str], width: int = 30) -> list[tuple[str, bool]]:
    """About `width` words of the text around its first match, as (text, is a match) runs,
    unescaped: each renderer escapes the text and marks the matches its own way."""
    text = " ".join(paragraphs)
    wanted = query.stems()
    spans = [(m.start(), m.end(), stem(normalize(m.group())) in wanted)
             for m in WORD.finditer(text)]
    if not spans:
        return [(text[:200], False)] if text else []
    first = next((i for i, (_, _, hit) in enumerate(spans) if hit), 0)
    lo = max(0, first - width // 3)
    hi = min(len(spans), lo + width)
    out: list[tuple[str, bool]] = []
    if lo > 0:
        out.append(("…", False))
    pos = spans[lo][0] if lo > 0 else 0
    for a, b, hit in spans[lo:hi]:
        if hit:
            if a > pos:
                out.append((text[pos:a], False))
            out.append((text[a:b], True))
            pos = b
    end = spans[hi - 1][1] if hi < len(spans) else len(text)
    if end > pos:
        out.append((text[pos:end], False))
    if hi < len(spans):
        out.append(("…", False))
    return out
