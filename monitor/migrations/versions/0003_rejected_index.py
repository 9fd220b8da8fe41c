"""Rejected files get a partial index of their own.

Every pass asks for the files rejected for their permissions (to read them again once
they are readable); with this index that costs as much as there are rejected files,
not as much as there are files.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

REJECTED = sa.text("status = 'rejected'")


def upgrade() -> None:
    op.create_index("ix_files_rejected", "files", ["path"], sqlite_where=REJECTED, postgresql_where=REJECTED)


def downgrade() -> None:
    op.drop_index("ix_files_rejected", table_name="files")
