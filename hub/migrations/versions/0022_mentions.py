"""mentions with read state, and the offline-alert throttle

``inbox_mention`` holds one row per note and mentioned person (the Mentions view and its unread
count); notes written before it are copied in as already read, so nobody opens the page to a
history of "new" mentions. ``inbox_staff_alert`` remembers when a person was last emailed about
a conversation, so a busy thread sends one email per window, not one per note.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_mention",
        sa.Column("note_id", sa.Uuid(), nullable=False),
        sa.Column("staff_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["inbox_conversation.id"],
            name=op.f("fk_inbox_mention_conversation_id_inbox_conversation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["note_id"],
            ["inbox_note.id"],
            name=op.f("fk_inbox_mention_note_id_inbox_note"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["inbox_staff_user.id"],
            name=op.f("fk_inbox_mention_staff_id_inbox_staff_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("note_id", "staff_id", name=op.f("pk_inbox_mention")),
    )
    with op.batch_alter_table("inbox_mention", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbox_mention_conversation_id"), ["conversation_id"], unique=False
        )
        batch_op.create_index(
            "ix_inbox_mention_staff_created", ["staff_id", "created_at"], unique=False
        )
    op.create_table(
        "inbox_staff_alert",
        sa.Column("staff_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["inbox_conversation.id"],
            name=op.f("fk_inbox_staff_alert_conversation_id_inbox_conversation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["inbox_staff_user.id"],
            name=op.f("fk_inbox_staff_alert_staff_id_inbox_staff_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("staff_id", "conversation_id", name=op.f("pk_inbox_staff_alert")),
    )
    _copy_existing_mentions()


def _copy_existing_mentions() -> None:
    bind = op.get_bind()
    staff = {_uuid(row[0]) for row in bind.execute(sa.text("SELECT id FROM inbox_staff_user"))}
    notes = bind.execute(
        sa.text("SELECT id, conversation_id, mentions, created_at FROM inbox_note")
    ).all()
    # Note and conversation ids and times go back as the engine gave them; only the staff ids,
    # read from JSON, need the column's own form (hex text on SQLite, uuid on PostgreSQL).
    insert = sa.text(
        "INSERT INTO inbox_mention (note_id, staff_id, conversation_id, created_at, read_at) "
        "VALUES (:note_id, :staff_id, :conversation_id, :created_at, :created_at)"
    ).bindparams(sa.bindparam("staff_id", type_=sa.Uuid()))
    for note_id, conversation_id, mentions, created_at in notes:
        ids = json.loads(mentions) if isinstance(mentions, str) else (mentions or [])
        for staff_id in dict.fromkeys(_uuid(i) for i in ids):
            if staff_id in staff:  # a deleted account's mention has no one to read it
                bind.execute(
                    insert,
                    {
                        "note_id": note_id,
                        "staff_id": staff_id,
                        "conversation_id": conversation_id,
                        "created_at": created_at,
                    },
                )


def _uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def downgrade() -> None:
    op.drop_table("inbox_staff_alert")
    with op.batch_alter_table("inbox_mention", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_mention_staff_created")
        batch_op.drop_index(batch_op.f("ix_inbox_mention_conversation_id"))
    op.drop_table("inbox_mention")
