"""A regex's words, found faster on ASCII text. Pure.

Identity (`\\w+`) and search (`[^\\W_]+`) split normalized text into runs of one character
class. On ASCII text, `bytes.translate` turning every character outside the class into a
space, then `split()`, gives the same list several times as fast as `findall`.
"""

from __future__ import annotations

import re
from collections.abc import Callable


def splitter(word: re.Pattern[str]) -> Callable[[str], list[str]]:
    """`word.findall`, for a pattern that is a run of one character class (`[...]+`)."""
    # A byte table: bytes.translate is one lookup per byte, where str.translate on
    # identity's longer texts took half as long again (a dict consulted per character).
    outside = bytes(c if c >= 128 or word.fullmatch(chr(c)) else 32 for c in range(256))
    findall = word.findall

    def split(text: str) -> list[str]:
        if text.isascii():
            return text.encode("ascii").translate(outside).decode("ascii").split()
        return findall(text)

    return split
