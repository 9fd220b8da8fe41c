"""The index keys in two tiers: new keys go to small tables of recent keys, folded into
the main key tables in key order now and then (monitor/storage/keys.py).

Into a store of a million stories each new key landed on a leaf page of its own in an
index of millions of entries, which was read, written to the WAL and checkpointed:
most of what 1,000 new bulletins cost there beyond what they cost in an empty store.
A store upgraded here has every key it holds in the main tables, so its fold mark is
its highest version id.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("paragraph_keys", "band_keys")


def upgrade() -> None:
    for name in TABLES:
        op.create_table(
            f"recent_{name}",
            sa.Column("key", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("story_id", sa.Integer, sa.ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True),
            sqlite_with_rowid=False,
        )
    op.create_table("key_folds", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("version", sa.BigInteger, nullable=False))
    op.execute("INSERT INTO key_folds (id, version) SELECT 1, coalesce(max(id), 0) FROM versions")


def downgrade() -> None:
    for name in TABLES:
        op.execute(f"INSERT INTO {name} (key, story_id) SELECT key, story_id FROM recent_{name} "
                   "WHERE true ON CONFLICT DO NOTHING")
        op.drop_table(f"recent_{name}")
    op.drop_table("key_folds")
