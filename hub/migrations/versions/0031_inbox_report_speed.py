"""inbox reports at scale: the fact table's period indexes carry what the reports read

The Response times and Volume reports read a period's conversations by when they were opened
or first resolved, overall or for one team. Their indexes now carry the columns those reads
need, so PostgreSQL answers from the index alone (an index-only scan) instead of visiting a
table page per conversation. SQLite has no INCLUDE: its indexes are unchanged.

A fact also records the patient's last message (``last_inbound_at``, filled here from the
messages), so an agent's heatmap reads only their conversations a patient wrote in during the
period instead of every conversation they ever had.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "report_conversation_fact"
OPENED_READS = [
    "channel",
    "team_id",
    "assignee_id",
    "opened_day",
    "first_response_s",
    "first_response_bh_s",
    "resolved_at",
    "due_at",
    "wait_end_at",
]
"""What the first-response and volume statements read of a conversation opened in the period
(kept equal to ``hub.reports.models.OPENED_READS``)."""
RESOLVED_READS = [
    "channel",
    "team_id",
    "assignee_id",
    "resolution_s",
    "resolution_bh_s",
    "reopened",
]
"""The same for a conversation first resolved in the period."""
INDEXES = [
    ("ix_report_conversation_fact_opened", ["opened_at"], OPENED_READS),
    (
        "ix_report_conversation_fact_team_opened",
        ["team_id", "opened_at"],
        [c for c in OPENED_READS if c != "team_id"],
    ),
    ("ix_report_conversation_fact_resolved", ["resolved_at"], RESOLVED_READS),
    (
        "ix_report_conversation_fact_team_resolved",
        ["team_id", "resolved_at"],
        [c for c in RESOLVED_READS if c != "team_id"],
    ),
]


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        f"UPDATE {TABLE} SET last_inbound_at = (SELECT max(m.created_at) FROM inbox_message m "  # noqa: S608
        f"WHERE m.conversation_id = {TABLE}.conversation_id AND m.direction = 'inbound')"
    )
    op.create_index(
        "ix_report_conversation_fact_assignee_inbound", TABLE, ["assignee_id", "last_inbound_at"]
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, columns, include in INDEXES:
        op.drop_index(name, table_name=TABLE)
        op.create_index(name, TABLE, columns, postgresql_include=include)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, columns, _include in INDEXES:
            op.drop_index(name, table_name=TABLE)
            op.create_index(name, TABLE, columns)
    op.drop_index("ix_report_conversation_fact_assignee_inbound", table_name=TABLE)
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("last_inbound_at")
