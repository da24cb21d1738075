"""conversations by assignee: agents' open loads and "mine" without scanning every open thread

Round-robin counts each online agent's open and pending conversations on every inbound
message that needs an assignee, and the inbox's "mine" view filters by assignee. Without an
index on the assignee both read every open conversation.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_inbox_conversation_assignee_status", "inbox_conversation", ["assignee_id", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_conversation_assignee_status", table_name="inbox_conversation")
