"""A regex's words, found faster on ASCII text. Pure.

Identity (`\\w+`) and search (`[^\\W_]+`) split normalized text into runs of one character
class. On ASCII text, `str.translate` (cached there) turning every character outside the
class into a space, then `split()`, gives the same list three times as fast as `findall`.
"""

from __future__ import annotations

import re
from collections.abc import Callable


def splitter(word: re.Pattern[str]) -> Callable[[str], list[str]]:
    """`word.findall`, for a pattern that is a run of one character class (`[...]+`)."""
    outside = str.maketrans({chr(c): " " for c in range(128) if not word.fullmatch(chr(c))})
    findall = word.findall

    def split(text: str) -> list[str]:
        return text.translate(outside).split() if text.isascii() else findall(text)

    return split
