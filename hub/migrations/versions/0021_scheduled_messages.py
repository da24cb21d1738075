"""scheduled replies: ``inbox_scheduled_message``, a reply written now and sent later

A staff member schedules a reply for a time; the tick turns each due row into an ordinary
queued message through the consent gate as it is then. Outbound attachments need no schema
change: they are ``inbox_attachment`` rows of the outbound message, like inbound ones.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "inbox_scheduled_message"


def _enum(name: str, length: int, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=length)


def _fk(column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{TABLE}_{column}_{target}"),
        ondelete=ondelete,
    )


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column(
            "channel",
            _enum("channel", 16, "sms", "email", "voice", "chat", "whatsapp"),
            nullable=False,
        ),
        sa.Column("body_enc", sa.LargeBinary(), nullable=True),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "state",
            _enum("scheduled_state", 17, "scheduled", "sent", "failed", "cancelled"),
            nullable=False,
        ),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("cancelled_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _fk("conversation_id", "inbox_conversation", "CASCADE"),
        _fk("author_id", "inbox_staff_user", "SET NULL"),
        _fk("message_id", "inbox_message", "SET NULL"),
        _fk("cancelled_by", "inbox_staff_user", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{TABLE}")),
    )
    with op.batch_alter_table(TABLE) as batch:
        batch.create_index(
            "ix_inbox_scheduled_message_state_send_at", ["state", "send_at"], unique=False
        )
        batch.create_index(
            "ix_inbox_scheduled_message_conversation", ["conversation_id", "state"], unique=False
        )


def downgrade() -> None:
    op.drop_table(TABLE)
