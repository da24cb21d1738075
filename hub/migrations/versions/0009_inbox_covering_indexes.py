"""inbox list at scale: the conversation indexes the inbox reads cover its filter and rank columns

The inbox ranks every conversation matching its filters (the rank depends on the current time)
and counts the unread ones. With these columns in the index (PostgreSQL INCLUDE) both are
index-only scans instead of reading one heap page per conversation. SQLite has no INCLUDE: the
indexes are rebuilt as they were.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COVERED = [
    "id",
    "priority",
    "assignee_id",
    "channel",
    "first_responded_at",
    "first_response_due_at",
    "last_inbound_at",
]
"""Everything the inbox list filters, ranks and counts unread by, besides the key columns."""
INDEXES = {
    "ix_inbox_conversation_status_activity": ["status", "last_activity_at"],
    "ix_inbox_conversation_team_status": ["team_id", "status", "last_activity_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.drop_index(name, table_name="inbox_conversation")
        op.create_index(name, "inbox_conversation", columns, postgresql_include=COVERED)


def downgrade() -> None:
    for name, columns in INDEXES.items():
        op.drop_index(name, table_name="inbox_conversation")
        op.create_index(name, "inbox_conversation", columns)
