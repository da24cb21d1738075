"""saved cohort column mappings

``journey_cohort_mapping`` keeps the column mapping a coordinator last confirmed for a cohort
file's header (keyed by a hash of its column names and separator), so the next export with the
same columns opens with it. Column names and choices only: no patient data.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journey_cohort_mapping",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("header_key", sa.String(length=64), nullable=False),
        sa.Column("mapping", sa.Text(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_cohort_mapping")),
        sa.UniqueConstraint("header_key", name=op.f("uq_journey_cohort_mapping_header_key")),
    )


def downgrade() -> None:
    op.drop_table("journey_cohort_mapping")
