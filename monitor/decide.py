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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from monitor.identity import Fingerprint, similarity
from monitor.models import Item, Kind

BulletinKey = tuple[int, str]  # (mtime_ns, path) of the bulletin that carried a version
Action = Literal["new", "revise", "repeat", "older"]


@dataclass(frozen=True)
class Candidate:
    """A stored story that an item may belong to, as its current version."""

    story: int
    fingerprint: Fingerprint
    paragraphs: int
    key: BulletinKey
    kind: Kind | None = None  # None: not known, judged by the paragraph count alone


@dataclass(frozen=True)
class Decision:
    """What one item is.

    new:    a story nobody has carried; `story` is a provisional negative id so later
            items of the same file can refer to it.
    revise: a new text of `story` that becomes its current text.
    older:  a new text of `story` from an older bulletin than its current text; kept
            as a version, but the story does not change.
    repeat: a text the store already has.
    """

    action: Action
    story: int
    score: float = 1.0


def decide(
    items: Sequence[tuple[Item, Fingerprint]],
    known: Mapping[str, int],
    candidates: Sequence[Candidate],
    key: BulletinKey,
) -> tuple[Decision, ...]:
    """Decide every item of one bulletin, in file order."""
    known = dict(known)
    pool = {c.story: c for c in candidates}
    decisions: list[Decision] = []
    for n, (item, fp) in enumerate(items):
        count = len(item.paragraphs)
        if fp.text_hash in known:
            decisions.append(Decision("repeat", known[fp.text_hash]))
            continue
        match = _best(fp, count, pool.values())
        if match is None:
            story = -(n + 1)
            decisions.append(Decision("new", story))
        else:
            candidate, score = match
            story = candidate.story
            if key < candidate.key or _brief_inside(item, candidate):
                decisions.append(Decision("older", story, score))
                known[fp.text_hash] = story
                continue
            decisions.append(Decision("revise", story, score))
        known[fp.text_hash] = story
        pool[story] = Candidate(story, fp, count, key, item.kind)
    return tuple(decisions)


def _best(fp: Fingerprint, count: int, pool: Iterable[Candidate]) -> tuple[Candidate, float] | None:
    best: tuple[Candidate, float] | None = None
    for candidate in pool:
        score = similarity(fp, candidate.fingerprint, count, candidate.paragraphs)
        if score <= 0:
            continue
        if best is None or (score, -candidate.story) > (best[1], -best[0].story):
            best = (candidate, score)
    return best


def _brief_inside(item: Item, candidate: Candidate) -> bool:
    """A brief whose article is already stored adds nothing: keep the fuller text (and
    the article's title, even when its body is that one paragraph)."""
    if len(item.paragraphs) != 1:
        return False
    return candidate.paragraphs > 1 or (item.kind == "brief" and candidate.kind == "article")
