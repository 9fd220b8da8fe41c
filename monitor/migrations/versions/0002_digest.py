"""The digest outbox: digests, the story versions each carried, and their recipients.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from monitor.storage.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("message_id", sa.Text, unique=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.Column("sent", UTCDateTime),
        sa.Column("version_upto", sa.BigInteger, nullable=False),
        sa.Column("new_count", sa.Integer, nullable=False),
        sa.Column("revised_count", sa.Integer, nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_digests_status", "digests", ["status"])
    op.create_index("ix_digests_version_upto", "digests", ["version_upto"])
    op.create_table(
        "digest_stories",
        sa.Column("digest_id", sa.Integer, sa.ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("story_id", sa.Integer, sa.ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("text_hash", sa.Text, nullable=False, unique=True),
        sa.Column("section", sa.Text, nullable=False),
    )
    op.create_index("ix_digest_stories_story", "digest_stories", ["story_id", "digest_id"])
    op.create_table(
        "digest_recipients",
        sa.Column("digest_id", sa.Integer, sa.ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("address", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reply", sa.Text),
        sa.Column("updated", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    for name in ("digest_recipients", "digest_stories", "digests"):
        op.drop_table(name)
