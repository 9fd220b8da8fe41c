"""Files, stories, versions, identity keys and scans.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from monitor.storage.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, nullable=False, unique=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_files_sha256", "files", ["sha256"])
    op.create_table(
        "stories",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("uid", sa.Text, nullable=False, unique=True),
        sa.Column("first_seen", UTCDateTime, nullable=False),
        sa.Column("updated", UTCDateTime, nullable=False),
        sa.Column("current_hash", sa.Text, nullable=False),
    )
    op.create_index("ix_stories_updated", "stories", ["updated", "id"])
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("story_id", sa.Integer, sa.ForeignKey("stories.id", ondelete="CASCADE"), nullable=False),
        sa.Column("text_hash", sa.Text, nullable=False, unique=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("paragraphs", sa.Text, nullable=False),
        sa.Column("published", sa.Date),
        sa.Column("key_mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("key_path", sa.Text, nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_versions_story", "versions", ["story_id"])
    for name in ("paragraph_keys", "band_keys"):
        op.create_table(
            name,
            sa.Column("key", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("story_id", sa.Integer, sa.ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True),
        )
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("started", UTCDateTime, nullable=False),
        sa.Column("finished", UTCDateTime, nullable=False),
        *(sa.Column(c, sa.Integer, nullable=False)
          for c in ("files_read", "new", "revised", "unchanged", "skipped", "rejected")),
    )
    op.create_index("ix_scans_finished", "scans", ["finished"])


def downgrade() -> None:
    for name in ("scans", "band_keys", "paragraph_keys", "versions", "stories", "files"):
        op.drop_table(name)
