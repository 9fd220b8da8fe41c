"""Every version keeps its headline; versions get distinct times, and a story's times are its versions'.

* `versions.headline`: what readers see as the title (an article's title, a brief's
  opening words), written at ingest from then on, so that reading the store never
  needs the parser. Existing rows get it here, computed from their stored text.
* `versions.seen_at` becomes strictly increasing in (seen_at, id) order: the stories
  of one file were stamped with one time, so feed entries shared an `updated` and ties
  were ordered differently by the feed and the page. Ties move forward by microseconds,
  and only as far as needed; the order of the versions is unchanged. From here on
  ingest gives every version its own tick (monitor.storage.ingest).
* `versions.seq`: the timeline, 1, 2, 3, ... in the order written, for the texts that
  became their story's current one then (ingest knows: a new story or a revision, not a
  late copy of an older text); `versions.correction` marks the revisions among them.
  For existing rows it is worked out from the order of the bulletins: a version became
  current if its bulletin is later than every one seen before it for that story and it
  was seen before the current version, which always did.
* A story's `updated` is its current version's time and `first_seen` its first
  version's, so the feed, its archives and the corrections feed agree on every date.
* Indexes: `ix_versions_seen_at` (the latest time, at every ingest), the unique one on
  `seq` (archives are ranges of it), and a partial one on the corrections by time.

Revision ID: 0005
Revises: 0003
"""

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

# Two microseconds apart, as ingest writes them: a correction entry takes the one between.
TICK = dt.timedelta(microseconds=2)
BATCH = 1000
CORRECTION = sa.text("correction")


def upgrade() -> None:
    # The parser's title rule, applied once to the texts stored before ingest kept it.
    from monitor.bulletin import brief_title
    from monitor.storage.schema import UTCDateTime

    op.add_column("versions", sa.Column("headline", sa.Text))
    op.add_column("versions", sa.Column("seq", sa.BigInteger))
    op.add_column("versions", sa.Column("correction", sa.Boolean, nullable=False, server_default=sa.false()))
    versions = sa.table("versions", sa.column("id", sa.Integer), sa.column("story_id", sa.Integer),
                        sa.column("text_hash", sa.Text), sa.column("title", sa.Text),
                        sa.column("paragraphs", sa.Text), sa.column("seen_at", UTCDateTime),
                        sa.column("key_mtime_ns", sa.BigInteger), sa.column("key_path", sa.Text),
                        sa.column("headline", sa.Text), sa.column("seq", sa.BigInteger),
                        sa.column("correction", sa.Boolean))
    conn = op.get_bind()
    # Times and the timeline need every version's key columns, in the order written (no text).
    current = set(conn.execute(sa.text("SELECT current_hash FROM stories")).scalars())
    rows = conn.execute(sa.select(versions.c.id, versions.c.story_id, versions.c.text_hash, versions.c.seen_at,
                                  versions.c.key_mtime_ns, versions.c.key_path)
                        .order_by(versions.c.seen_at, versions.c.id)).all()
    update = (sa.update(versions).where(versions.c.id == sa.bindparam("vid"))
              .values(seen_at=sa.bindparam("t"), seq=sa.bindparam("n"), correction=sa.bindparam("c")))
    last: dt.datetime | None = None
    seq = 0
    started: set[int] = set()  # stories with a text in the timeline so far
    changes: list[dict[str, object]] = []
    for row, shown in zip(rows, _shown(rows, current), strict=True):
        stamp = row.seen_at if last is None or row.seen_at >= last + TICK else last + TICK
        last = stamp
        seq += shown
        changes.append({"vid": row.id, "t": stamp, "n": seq if shown else None,
                        "c": shown and row.story_id in started})
        if shown:
            started.add(row.story_id)
    for start in range(0, len(changes), BATCH):
        conn.execute(update, changes[start:start + BATCH])
    op.create_index("ix_versions_seen_at", "versions", ["seen_at", "id"])
    op.create_index("ix_versions_seq", "versions", ["seq"], unique=True)
    op.create_index("ix_versions_corrections", "versions", ["seen_at", "id"], sqlite_where=CORRECTION,
                    postgresql_where=CORRECTION)
    # Headlines: an article's is its title; a brief's comes from its text, read in batches.
    conn.execute(sa.text("UPDATE versions SET headline = title WHERE title IS NOT NULL"))
    set_headline = (sa.update(versions).where(versions.c.id == sa.bindparam("vid"))
                    .values(headline=sa.bindparam("h")))
    after = 0
    while batch := conn.execute(sa.select(versions.c.id, versions.c.paragraphs)
                                .where(versions.c.title.is_(None), versions.c.id > after)
                                .order_by(versions.c.id).limit(BATCH)).all():
        conn.execute(set_headline, [{"vid": vid, "h": brief_title(json.loads(text)[0])} for vid, text in batch])
        after = batch[-1].id
    conn.execute(sa.text(
        "UPDATE stories SET "
        "updated = (SELECT v.seen_at FROM versions AS v WHERE v.text_hash = stories.current_hash), "
        "first_seen = (SELECT min(v.seen_at) FROM versions AS v WHERE v.story_id = stories.id)"))


def _shown(rows: Sequence[Any], current: set[str]) -> list[bool]:
    """For versions in the order written: did the text become its story's current one then?
    The current text did; an earlier one did if its bulletin was later than every one
    written before it for that story."""
    current_at = {row.story_id: n for n, row in enumerate(rows) if row.text_hash in current}
    latest: dict[int, tuple[int, str]] = {}
    shown = []
    for n, row in enumerate(rows):
        key = (row.key_mtime_ns, row.key_path)
        before = latest.get(row.story_id)
        shown.append(row.text_hash in current or (n < current_at[row.story_id] and (before is None or key >= before)))
        latest[row.story_id] = key if before is None else max(key, before)
    return shown


def downgrade() -> None:
    for name in ("ix_versions_corrections", "ix_versions_seq", "ix_versions_seen_at"):
        op.drop_index(name, table_name="versions")
    with op.batch_alter_table("versions") as batch:
        for column in ("correction", "seq", "headline"):
            batch.drop_column(column)
