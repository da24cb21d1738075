"""CSAT after resolution

``csat_setting`` is a team's switch (off by default) and delay; ``csat_survey`` ties each
resolution of a conversation by a person to the journey enrollment that asks the patient
(the team and the person who resolved it, for the report). No patient data: the answer and
its comment are the journey's ``journey_survey_answer`` row.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "csat_setting",
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("delay_minutes", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["inbox_team.id"],
            name=op.f("fk_csat_setting_team_id_inbox_team"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("team_id", name=op.f("pk_csat_setting")),
    )
    op.create_table(
        "csat_survey",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("enrollment_id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=True),
        sa.Column("agent_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["inbox_conversation.id"],
            name=op.f("fk_csat_survey_conversation_id_inbox_conversation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["journey_enrollment.id"],
            name=op.f("fk_csat_survey_enrollment_id_journey_enrollment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["inbox_team.id"],
            name=op.f("fk_csat_survey_team_id_inbox_team"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["inbox_staff_user.id"],
            name=op.f("fk_csat_survey_agent_id_inbox_staff_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_csat_survey")),
        sa.UniqueConstraint(
            "conversation_id",
            "resolved_at",
            name=op.f("uq_csat_survey_conversation_id_resolved_at"),
        ),
        sa.UniqueConstraint("enrollment_id", name=op.f("uq_csat_survey_enrollment_id")),
    )
    op.create_index(
        op.f("ix_csat_survey_conversation_id"), "csat_survey", ["conversation_id"], unique=False
    )
    op.create_index("ix_csat_survey_resolved_at", "csat_survey", ["resolved_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_csat_survey_resolved_at", table_name="csat_survey")
    op.drop_index(op.f("ix_csat_survey_conversation_id"), table_name="csat_survey")
    op.drop_table("csat_survey")
    op.drop_table("csat_setting")
