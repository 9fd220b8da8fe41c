"""Which stories a subscriber's topics select: a narrow interface, and the matcher used today.

Subscribers name topics; named topics with their search queries (`[[topics]]`) come
from the search work. Until that is wired in, `WordMatcher` reads a topic name as the
words to look for, which is what a one-word query does. The delivery run asks only
`TopicMatcher.matching`, so swapping in the query-backed matcher is one line
(`default_matcher`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Protocol

from monitor.models import Story


class TopicMatcher(Protocol):
    def matching(self, topics: Sequence[str], stories: Sequence[Story]) -> set[str]:
        """The uids of the stories (as they read now) that any of these topics selects."""


class Everything:
    def matching(self, topics: Sequence[str], stories: Sequence[Story]) -> set[str]:
        return {s.uid for s in stories}


class WordMatcher:
    """A topic selects a story whose title or text holds the topic's words in a row (any case)."""

    def matching(self, topics: Sequence[str], stories: Sequence[Story]) -> set[str]:
        wanted = [_words(t) for t in topics if _words(t)]
        out = set()
        for story in stories:
            text = f" {' '.join(_words(' '.join((story.title, *story.paragraphs))))} "
            if any(f" {' '.join(w)} " in text for w in wanted):
                out.add(story.uid)
        return out


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold())


def default_matcher() -> TopicMatcher:
    return WordMatcher()
