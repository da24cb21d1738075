"""free-text survey answers: encrypted text beside the (now optional) score

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("journey_survey_answer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("text_enc", sa.LargeBinary(), nullable=True))
        batch_op.alter_column("score", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("journey_survey_answer", schema=None) as batch_op:
        batch_op.alter_column("score", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("text_enc")
