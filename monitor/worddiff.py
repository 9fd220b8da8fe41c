"""A short word-level diff of two texts, for the digest's revised stories. Pure.

Closing punctuation is a token of its own, so an addition reads `Moscow {+and agreed+}.`
rather than swallowing the full stop; a few words of context stay either side of a
change, and a long diff is cut (the digest links to the whole text).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence

from monitor.escape import escape_html

DIFF_CONTEXT = 5  # words kept either side of a change
DIFF_WORDS = 80  # a longer diff is cut: the link leads to the whole text


def word_diff(old: str, new: str, *, context: int = DIFF_CONTEXT,
              limit: int = DIFF_WORDS) -> list[tuple[str, str]]:
    """A short word-level diff: ("same"|"del"|"ins"|"gap", words) pieces, cut at `limit` words."""
    a, b = _tokens(old), _tokens(new)
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    pieces: list[tuple[str, str]] = []
    for n, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag == "equal":
            pieces += _context(a[i1:i2], context, first=n == 0, last=n == len(ops) - 1)
            continue
        if i2 > i1:
            pieces.append(("del", _join(a[i1:i2])))
        if j2 > j1:
            pieces.append(("ins", _join(b[j1:j2])))
    return _cut(pieces, limit)


_WORD_AND_PUNCT = re.compile(r"(.*?[^.,;:!?)\]»”…\"'])([.,;:!?)\]»”…\"']+)")
_CLOSING = re.compile(r"[.,;:!?)\]»”…\"']+")


def _tokens(text: str) -> list[str]:
    """Words, with closing punctuation as tokens of their own: "Moscow." -> "Moscow", "."."""
    out: list[str] = []
    for word in text.split():
        m = _WORD_AND_PUNCT.fullmatch(word)
        out += [m[1], m[2]] if m else [word]
    return out


def _join(tokens: Sequence[str]) -> str:
    text = ""
    for t in tokens:
        text += t if not text or _CLOSING.fullmatch(t) else " " + t
    return text


def _context(words: list[str], context: int, *, first: bool, last: bool) -> list[tuple[str, str]]:
    if first and last:
        return []  # no change at all
    if first:
        return ([("gap", "…")] if len(words) > context else []) + [("same", _join(words[-context:]))]
    if last:
        return [("same", _join(words[:context]))] + ([("gap", "…")] if len(words) > context else [])
    if len(words) <= 2 * context:
        return [("same", _join(words))]
    return [("same", _join(words[:context])), ("gap", "…"), ("same", _join(words[-context:]))]


def _cut(pieces: list[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    count = 0
    for kind, words in pieces:
        n = len(words.split())
        if count + n > limit:
            keep = " ".join(words.split()[: max(limit - count, 0)])
            if keep:
                out.append((kind, keep))
            out.append(("gap", "…"))
            break
        out.append((kind, words))
        count += n
    return out


def _render(pieces: Sequence[tuple[str, str]], marks: dict[str, str], escape: Callable[[str], str]) -> str:
    text = ""
    for kind, words in pieces:
        piece = marks[kind].format(escape(words))
        glued = kind == "same" and _CLOSING.match(words)  # "plan+}." rather than "plan+} ."
        text += piece if not text or glued else " " + piece
    return text


def diff_text(pieces: Sequence[tuple[str, str]]) -> str:
    """Like `git diff --word-diff=plain`: [-removed-] {+added+}."""
    return _render(pieces, {"same": "{}", "gap": "{}", "del": "[-{}-]", "ins": "{{+{}+}}"}, str)


def diff_html(pieces: Sequence[tuple[str, str]]) -> str:
    return _render(pieces, {"same": "{}", "gap": "{}", "del": '<del style="color:#a00">{}</del>',
                                   "ins": '<ins style="color:#060">{}</ins>'}, escape_html)
