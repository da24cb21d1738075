"""inbox list at scale: read each status and rank in activity order

The inbox list used to rank every conversation matching its filters (the rank depends on the
current time) and keep the first page. It now reads each status and rank as its own index scan
in last-activity order that stops after a page: urgent conversations and unanswered ones from
partial indexes of their own, the rest from the status index, which now carries the team so an
agent's list stays index-only.

Revision ID: 0029
Revises: 0027
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0027"
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
"""As migration 0009 carried them."""
BY_STATUS = [*COVERED, "team_id"]
PARTIAL = {
    "ix_inbox_conversation_urgent_activity": "priority = 'urgent'",
    "ix_inbox_conversation_unanswered_activity": "first_responded_at IS NULL",
}


def upgrade() -> None:
    op.drop_index("ix_inbox_conversation_status_activity", table_name="inbox_conversation")
    op.create_index(
        "ix_inbox_conversation_status_activity",
        "inbox_conversation",
        ["status", "last_activity_at"],
        postgresql_include=BY_STATUS,
    )
    for name, where in PARTIAL.items():
        op.create_index(
            name,
            "inbox_conversation",
            ["status", "last_activity_at"],
            postgresql_include=BY_STATUS,
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )


def downgrade() -> None:
    for name in PARTIAL:
        op.drop_index(name, table_name="inbox_conversation")
    op.drop_index("ix_inbox_conversation_status_activity", table_name="inbox_conversation")
    op.create_index(
        "ix_inbox_conversation_status_activity",
        "inbox_conversation",
        ["status", "last_activity_at"],
        postgresql_include=COVERED,
    )
