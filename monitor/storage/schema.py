"""Tables of the state store. Alembic scripts in monitor/migrations create them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    select,
    text,
)

from monitor.models import Story
from monitor.storage.sql import naive_utc


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite as on PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        return None if value is None else naive_utc(value)

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        return value.replace(tzinfo=dt.UTC) if value is not None else None


metadata = MetaData()

files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("sha256", Text),
    # "read", "rejected", or "settling": a version seen but not read yet (its mtime is in the
    # future, so the pass waits until it has been seen unchanged for settle_seconds).
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("item_count", Integer, nullable=False, default=0),
    Column("seen_at", UTCDateTime, nullable=False),
    Index("ix_files_sha256", "sha256"),
    # Every pass reads the rejected files (migration 0003): as many rows as there are of them.
    Index("ix_files_rejected", "path", sqlite_where=text("status = 'rejected'"),
          postgresql_where=text("status = 'rejected'")),
)

stories = Table(
    "stories",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uid", Text, nullable=False, unique=True),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    # text_hash of the current version (a plain column: versions point at stories).
    Column("current_hash", Text, nullable=False),
    Index("ix_stories_updated", "updated", "id"),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("story_id", Integer, ForeignKey("stories.id", ondelete="CASCADE"), nullable=False),
    Column("text_hash", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("title", Text),
    Column("headline", Text),  # the title readers see, from the parser at ingest (migration 0005)
    Column("paragraphs", Text, nullable=False),  # JSON list of strings
    Column("published", Date),
    # The bulletin that carried this text first: (mtime_ns, path) orders versions.
    Column("key_mtime_ns", BigInteger, nullable=False),
    Column("key_path", Text, nullable=False),
    # Distinct for every version, and increasing in the order versions were written.
    Column("seen_at", UTCDateTime, nullable=False),
    # The timeline: 1, 2, 3, ... for the texts that became their story's current one when
    # written (new or a revision), in the order written; NULL for a late copy of an older
    # text. Dense, so feed archive n is a range of it (migration 0005).
    Column("seq", BigInteger),
    # A revision: in the timeline, and not its story's first text (the corrections feed).
    Column("correction", Boolean, nullable=False, server_default=false()),
    Index("ix_versions_story", "story_id"),
    Index("ix_versions_seen_at", "seen_at", "id"),
    Index("ix_versions_seq", "seq", unique=True),
    Index("ix_versions_corrections", "seen_at", "id", sqlite_where=text("correction"),
          postgresql_where=text("correction")),
)

def _key_table(name: str) -> Table:
    """An index key table: (key, story) rows, the primary key the table (migration 0008)."""
    return Table(
        name,
        metadata,
        Column("key", BigInteger, primary_key=True, autoincrement=False),
        Column("story_id", Integer, ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True),
        sqlite_with_rowid=False,
    )


paragraph_keys = _key_table("paragraph_keys")
band_keys = _key_table("band_keys")
# The keys written since the last fold (monitor/storage/keys.py, migration 0010): the
# lookups read both tiers, and a fold moves these into the tables above in key order.
recent_paragraph_keys = _key_table("recent_paragraph_keys")
recent_band_keys = _key_table("recent_band_keys")

# One row: the highest version id when the recent keys were last folded.
key_folds = Table(
    "key_folds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", BigInteger, nullable=False),
)

scans = Table(
    "scans",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("started", UTCDateTime, nullable=False),
    Column("finished", UTCDateTime, nullable=False),
    Column("files_read", Integer, nullable=False),
    Column("new", Integer, nullable=False),
    Column("revised", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Index("ix_scans_finished", "finished"),
)

# -- the channel-neutral outbox (migration 0007; 0002's digest tables moved here) ----

# Baselines ("everything stored now counts as sent") hold for every channel and subscriber.
EVERYONE = "*"

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("channel", Text, nullable=False),  # "email", "apprise", or EVERYONE for a baseline
    Column("subscriber", Text, nullable=False),
    # Made once with the row and reused on every retry (the email Message-ID).
    Column("message_key", Text, nullable=False),
    # "pending", "sent", "refused" (for good), "dropped" (unsubscribed), "baseline" or "start"
    Column("status", Text, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("sent", UTCDateTime),
    Column("next_attempt", UTCDateTime),  # a retry waits until then (backoff)
    # The highest versions.id this message looked at: that subscriber's next one starts above it.
    Column("version_upto", BigInteger, nullable=False),
    Column("new_count", Integer, nullable=False),
    Column("revised_count", Integer, nullable=False),
    Column("address", Text),  # the envelope recipient of an email; never an Apprise URL
    Column("payload", Text),  # exactly what is sent, so a retry sends the same bytes
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    UniqueConstraint("channel", "subscriber", "message_key", name="uq_outbox_key"),
    Index("ix_outbox_status", "status"),
    Index("ix_outbox_subscriber", "channel", "subscriber", "version_upto"),
)

deliveries = Table(
    "deliveries",
    metadata,
    # One row per channel, subscriber and story version: the primary key is the promise
    # that no version reaches a subscriber twice on one channel.
    Column("channel", Text, primary_key=True),
    Column("subscriber", Text, primary_key=True),
    Column("text_hash", Text, primary_key=True),
    Column("story_id", Integer, ForeignKey("stories.id", ondelete="CASCADE"), nullable=False),
    Column("outbox_id", Integer, ForeignKey("outbox.id", ondelete="CASCADE"), nullable=False),
    Column("section", Text, nullable=False),  # "new", "revised", "more" (summarised) or "baseline"
    Index("ix_deliveries_story", "channel", "subscriber", "story_id", "outbox_id"),
    Index("ix_deliveries_outbox", "outbox_id"),
)

unsubscribed = Table(
    "unsubscribed",
    metadata,
    Column("subscriber", Text, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
)


def story_query() -> Any:
    """The columns of a published story: a story joined to its current version."""
    return (select(stories.c.uid, versions.c.kind, versions.c.headline, versions.c.paragraphs,
                   versions.c.published, stories.c.first_seen, stories.c.updated)
            .join(versions, versions.c.text_hash == stories.c.current_hash))


def story_from_row(row: Any) -> Story:
    uid, kind, title, paragraphs, published, first_seen, updated = row
    paras = tuple(json.loads(paragraphs))
    return Story(uid=uid, kind=kind, title=title or "", paragraphs=paras,
                 published=published, first_seen=first_seen, updated=updated)
