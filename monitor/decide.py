"""New, revised or repeat: the decision for one file's items. Pure.

Given the items of one bulletin, their fingerprints, and what the store knows that
could match them (exact text hashes and candidate stories found through the index
keys), say what each item is. Like reader's update Decider, this does not touch any
dependency, it only processes data.

Which text is current must not depend on the order files are processed in: a story
shows the version from the latest bulletin (by file mtime, then name) that carried a
new text of it. A late copy of an old bulletin therefore never flips a story back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Literal, NamedTuple

from monitor.hashset import shared
from monitor.identity import LEAD_CONTAINMENT, MIN_SHARED_WORDS, Fingerprint, containment, similarity
from monitor.models import Item, Kind

BulletinKey = tuple[int, str]  # (mtime_ns, path) of the bulletin that carried a version
Action = Literal["new", "revise", "repeat", "older"]


# NamedTuples, not frozen dataclasses: a pass over 10,000 bench/gen.py bulletins makes
# about 240,000 candidates and 73,000 decisions, and a frozen dataclass took 1.5 µs to
# make where a NamedTuple takes 0.4.
class Candidate(NamedTuple):
    """A stored story that an item may belong to, as its current version."""

    story: int
    fingerprint: Fingerprint
    paragraphs: int
    key: BulletinKey
    kind: Kind | None = None  # None: not known, judged by the paragraph count alone
    published: dt.date | None = None  # the story's date


class Decision(NamedTuple):
    """What one item is.

    new:    a story nobody has carried; `story` is a provisional negative id so later
            items of the same file can refer to it.
    revise: a new text of `story` that becomes its current text.
    older:  a new text of `story` from an older bulletin than its current text; kept
            as a version, but the story does not change.
    repeat: a text the store already has.

    `published` is the date to record with the new version: the item's own, or, when the
    bulletin gave it no full date (a year-less brief in a bulletin without a full date),
    the story's known date, so a correction never loses it.
    """

    action: Action
    story: int
    score: float = 1.0
    published: dt.date | None = None


def decide(
    items: Sequence[tuple[Item, Fingerprint]],
    known: Mapping[str, int],
    candidates: Sequence[Candidate],
    key: BulletinKey,
    shortlist: Mapping[str, Collection[int]] | None = None,
) -> tuple[Decision, ...]:
    """Decide every item of one bulletin, in file order.

    Two items of one bulletin are two stories, however alike (BULLETINS.md): the producer
    carried both. So each stored story goes to the one item of the file that matches it
    best (the best score first, then file order), and items never match each other, with
    two exceptions: an exact repeat of a text (one story), and a brief next to its own
    full article (the brief is the article's lead, slots included): one story, whose
    current text is the article, as when the two come in different bulletins.

    `shortlist` (by text hash) names the candidates each item is compared with: the
    stories its own index keys found (ingest); without it, every item meets every one.
    """
    known = dict(known)
    first_of = _first_of_text(items, known)
    claim = _assign(items, first_of, candidates, key, shortlist or {})
    pool = {c.story: c for c in candidates}
    decisions: list[Decision] = []
    for n, (item, fp) in enumerate(items):
        if fp.text_hash in known:
            decisions.append(Decision("repeat", known[fp.text_hash]))
            continue
        story, score = claim.get(n, (None, 0.0))
        if story is None:
            story = _pair_in_file(n, items, decisions)
        if story is None:
            story = -(n + 1)
            decisions.append(Decision("new", story, published=item.published))
            known[fp.text_hash] = story
            pool[story] = Candidate(story, fp, len(item.paragraphs), key, item.kind, item.published)
            continue
        current = pool[story]
        published = item.published or current.published
        if current.key == key or not score:  # the story changed in this file, or a pair in this file
            score = similarity(fp, current.fingerprint, len(item.paragraphs), current.paragraphs,
                               new_is_older=key < current.key) or 1.0
        known[fp.text_hash] = story
        if key < current.key or _brief_inside(item, current):
            decisions.append(Decision("older", story, score, published))
            continue
        decisions.append(Decision("revise", story, score, published))
        pool[story] = Candidate(story, fp, len(item.paragraphs), key, item.kind, published)
    return tuple(decisions)


def _first_of_text(items: Sequence[tuple[Item, Fingerprint]], known: Mapping[str, int]) -> list[bool]:
    """Whether each item is the first carrier of a text the store does not have."""
    seen = set(known)
    first = []
    for _, fp in items:
        first.append(fp.text_hash not in seen)
        seen.add(fp.text_hash)
    return first


def _assign(items: Sequence[tuple[Item, Fingerprint]], first_of: Sequence[bool], candidates: Sequence[Candidate],
            key: BulletinKey, shortlist: Mapping[str, Collection[int]]) -> dict[int, tuple[int, float]]:
    """Item index -> (stored story, score): the best-scoring pairs first, each story to one
    item (or to a brief and its own article), ties to the earlier item and the lower id."""
    pairs = []
    by_story = {c.story: c for c in candidates}
    for n, (item, fp) in enumerate(items):
        if not first_of[n]:
            continue
        words = fp.words
        listed = shortlist.get(fp.text_hash)
        # Only the item's own shortlist (a file's candidates are its items' together): the
        # pairs are sorted below, so the order they are scored in does not matter.
        for c in candidates if listed is None else [by_story[s] for s in listed if s in by_story]:
            if shared(words, c.fingerprint.words) < MIN_SHARED_WORDS:
                continue  # similarity()'s first test, inline: most of a day's stories stop here
            score = similarity(fp, c.fingerprint, len(item.paragraphs), c.paragraphs, new_is_older=key < c.key)
            if score > 0:
                pairs.append((-score, n, -c.story, c.story))
    claim: dict[int, tuple[int, float]] = {}
    holders: dict[int, list[int]] = {}
    for score, n, _, story in sorted(pairs):
        if n in claim:
            continue
        if all(_brief_and_article(items[n], items[m]) for m in holders.get(story, [])):
            claim[n] = (story, -score)
            holders.setdefault(story, []).append(n)
    return claim


def _pair_in_file(n: int, items: Sequence[tuple[Item, Fingerprint]], decisions: Sequence[Decision]) -> int | None:
    """The story of an earlier item of this file that is this item's brief or article."""
    for m, decision in enumerate(decisions):
        if decision.action != "repeat" and _brief_and_article(items[n], items[m]):
            return decision.story
    return None


def _brief_and_article(a: tuple[Item, Fingerprint], b: tuple[Item, Fingerprint]) -> bool:
    """One is a one-paragraph brief and the other's lead contains it, slots agreeing."""
    (ia, fa), (ib, fb) = a, b
    if (len(ia.paragraphs) == 1) == (len(ib.paragraphs) == 1):
        return False
    brief, article = (fa, fb) if len(ia.paragraphs) == 1 else (fb, fa)
    return (containment(brief.lead_shingles, article.lead_shingles) >= LEAD_CONTAINMENT
            and similarity(fa, fb, len(ia.paragraphs), len(ib.paragraphs)) > 0)


def _brief_inside(item: Item, candidate: Candidate) -> bool:
    """A brief whose article is already stored adds nothing: keep the fuller text (and
    the article's title, even when its body is that one paragraph)."""
    if len(item.paragraphs) != 1:
        return False
    return candidate.paragraphs > 1 or (item.kind == "brief" and candidate.kind == "article")
