"""staff TOTP second factor and recovery codes

A staff member may turn on a second factor (RFC 6238 TOTP): its secret is encrypted under the
key ring like PHI (whoever reads it can make codes), the last accepted time step is kept so a
code is accepted once, and ten single-use recovery codes are stored as Argon2 hashes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_staff_user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("second_factor", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("second_factor_since", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("totp_secret_enc", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("totp_last_step", sa.Integer(), nullable=True))
    op.create_table(
        "inbox_recovery_code",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("staff_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["inbox_staff_user.id"],
            name=op.f("fk_inbox_recovery_code_staff_id_inbox_staff_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_recovery_code")),
    )
    with op.batch_alter_table("inbox_recovery_code", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbox_recovery_code_staff_id"), ["staff_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("inbox_recovery_code", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_recovery_code_staff_id"))
    op.drop_table("inbox_recovery_code")
    with op.batch_alter_table("inbox_staff_user", schema=None) as batch_op:
        batch_op.drop_column("totp_last_step")
        batch_op.drop_column("totp_secret_enc")
        batch_op.drop_column("second_factor_since")
        batch_op.drop_column("second_factor")
