"""inbox teams hours tokens canned

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_api_token",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("staff_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["inbox_staff_user.id"],
            name=op.f("fk_inbox_api_token_staff_id_inbox_staff_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_api_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_inbox_api_token_token_hash")),
    )
    with op.batch_alter_table("inbox_api_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbox_api_token_staff_id"), ["staff_id"], unique=False)

    op.create_table(
        "inbox_canned_response",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=True),
        sa.Column("title", sa.String(length=120), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["inbox_team.id"],
            name=op.f("fk_inbox_canned_response_team_id_inbox_team"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_canned_response")),
    )
    op.create_table(
        "inbox_read_marker",
        sa.Column("staff_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["inbox_conversation.id"],
            name=op.f("fk_inbox_read_marker_conversation_id_inbox_conversation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["inbox_staff_user.id"],
            name=op.f("fk_inbox_read_marker_staff_id_inbox_staff_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("staff_id", "conversation_id", name=op.f("pk_inbox_read_marker")),
    )
    with op.batch_alter_table("inbox_conversation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("after_hours_replied_at", sa.DateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("inbox_note", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mentions", sa.JSON(), nullable=False, server_default="[]"))

    with op.batch_alter_table("inbox_staff_user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_assigned_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("inbox_team", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_default", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("business_hours", sa.JSON(), nullable=False, server_default="{}")
        )
        batch_op.add_column(sa.Column("holidays", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("after_hours_reply", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_team", schema=None) as batch_op:
        batch_op.drop_column("after_hours_reply")
        batch_op.drop_column("holidays")
        batch_op.drop_column("business_hours")
        batch_op.drop_column("is_default")

    with op.batch_alter_table("inbox_staff_user", schema=None) as batch_op:
        batch_op.drop_column("password_changed_at")
        batch_op.drop_column("last_assigned_at")

    with op.batch_alter_table("inbox_note", schema=None) as batch_op:
        batch_op.drop_column("mentions")

    with op.batch_alter_table("inbox_conversation", schema=None) as batch_op:
        batch_op.drop_column("after_hours_replied_at")
        batch_op.drop_column("last_inbound_at")
        batch_op.drop_column("assigned_at")
        batch_op.drop_column("tags")

    op.drop_table("inbox_read_marker")
    op.drop_table("inbox_canned_response")
    with op.batch_alter_table("inbox_api_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_api_token_staff_id"))

    op.drop_table("inbox_api_token")
