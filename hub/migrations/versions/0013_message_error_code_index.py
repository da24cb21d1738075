"""failed messages by error code, without reading every message

The journeys page's banner and each /metrics scrape count the step messages a template failed
to render (``error_code = 'template_render'``). Without an index that is a scan of every
message ever stored; a partial index holds only the few rows that carry an error code.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = sa.text("error_code IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_inbox_message_error_code",
        "inbox_message",
        ["error_code"],
        postgresql_where=WHERE,
        sqlite_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_message_error_code", table_name="inbox_message")
