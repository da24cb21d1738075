"""staff time zone: every time a person reads is shown in their zone

Existing staff take the clinic's zone, which is the default team's (else UTC); a person changes
theirs on the Account page.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_staff_user") as batch:
        batch.add_column(
            sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC")
        )
    bind = op.get_bind()
    zone = bind.execute(
        sa.text("SELECT time_zone FROM inbox_team ORDER BY is_default DESC, name LIMIT 1")
    ).scalar()
    if zone:
        bind.execute(sa.text("UPDATE inbox_staff_user SET time_zone = :z"), {"z": zone})


def downgrade() -> None:
    with op.batch_alter_table("inbox_staff_user") as batch:
        batch.drop_column("time_zone")
