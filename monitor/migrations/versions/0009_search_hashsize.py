"""SQLite: the FTS5 index gathers up to 4 MB of new terms before it writes a segment.

At FTS5's default of 1 MB, the pass's one INSERT of 44,000 new versions (10,000
bench/gen.py bulletins) wrote a segment every 1 MB and merged them as it went; with 4 MB
it writes a quarter as many and merges less: 0.86 s became 0.58 s in isolation, and
searches over the result take the same time (monitor.storage.search.FTS_HASHSIZE). The
setting is a row of the index's own config table. PostgreSQL has no FTS5: nothing
changes there.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

from monitor.storage.search import DEFAULT_HASHSIZE, FTS_HASHSIZE, set_hashsize

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    set_hashsize(op.get_bind(), FTS_HASHSIZE)


def downgrade() -> None:
    set_hashsize(op.get_bind(), DEFAULT_HASHSIZE)
