"""The full-text search index over every story version, filled from the stored versions.

SQLite: an FTS5 table without stored content (rowid = versions.id), over the stems
that monitor.query makes. PostgreSQL: a tsvector of the same stems per version with a
GIN index. See monitor/storage/search.py.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from monitor.storage.search import create_index, drop_index, reindex_all

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    create_index(conn)
    reindex_all(conn)


def downgrade() -> None:
    drop_index(op.get_bind())
