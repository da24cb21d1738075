"""message delivery notes: why a send used its channel and time

Revision ID: 0004a
Revises: 0004
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004a"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("delivery_notes", sa.JSON(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("inbox_message", schema=None) as batch_op:
        batch_op.drop_column("delivery_notes")
