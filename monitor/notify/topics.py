"""Which stories a subscriber's topics select: the configured `[[topics]]` queries.

A subscriber names topics; each name is a `[[topics]]` entry (config.py rejects an
unknown one), and a story belongs to a topic when its query matches it, decided by
`monitor.query.matches` exactly as the store decides a search and a topic feed. The
delivery run asks only `TopicMatcher.matching`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from monitor import query
from monitor.config import TopicSettings
from monitor.models import Story


class TopicMatcher(Protocol):
    def matching(self, topics: Sequence[str], stories: Sequence[Story]) -> set[str]:
        """The uids of the stories (as they read now) that any of these topics selects."""


class QueryMatcher:
    """A topic selects a story its `[[topics]]` query matches."""

    def __init__(self, topics: Sequence[TopicSettings]) -> None:
        self.queries = {t.name: query.parse(t.query) for t in topics}

    def matching(self, topics: Sequence[str], stories: Sequence[Story]) -> set[str]:
        wanted = [self.queries[name] for name in topics]  # names are checked when the config loads
        return {s.uid for s in stories if any(story_matches(q, s) for q in wanted)}


def story_matches(parsed: query.Query, story: Story) -> bool:
    # A brief's title is its text's opening, so only an article's title is text of its own.
    return query.matches(parsed, story.title if story.kind == "article" else None, story.paragraphs)


def default_matcher(topics: Sequence[TopicSettings]) -> TopicMatcher:
    return QueryMatcher(topics)
