"""journeys

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journey_journey",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "paused",
                "stopped",
                name="journey_status",
                native_enum=False,
                create_constraint=True,
                length=15,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_journey")),
        sa.UniqueConstraint("key", name=op.f("uq_journey_journey_key")),
    )
    op.create_table(
        "journey_appointment",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=120), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("location", sa.String(length=200), nullable=True),
        sa.Column("provider", sa.String(length=200), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "booked",
                "confirmed",
                "cancelled",
                name="appointment_status",
                native_enum=False,
                create_constraint=True,
                length=17,
            ),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["inbox_patient.id"],
            name=op.f("fk_journey_appointment_patient_id_inbox_patient"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_appointment")),
        sa.UniqueConstraint(
            "source", "external_id", name=op.f("uq_journey_appointment_source_external_id")
        ),
    )
    with op.batch_alter_table("journey_appointment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_journey_appointment_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "journey_enrollment",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("journey_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("appointment_id", sa.Uuid(), nullable=True),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("anchor_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "completed",
                "cancelled",
                "stopped",
                name="enrollment_status",
                native_enum=False,
                create_constraint=True,
                length=17,
            ),
            nullable=False,
        ),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["journey_appointment.id"],
            name=op.f("fk_journey_enrollment_appointment_id_journey_appointment"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["journey_id"],
            ["journey_journey.id"],
            name=op.f("fk_journey_enrollment_journey_id_journey_journey"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["inbox_patient.id"],
            name=op.f("fk_journey_enrollment_patient_id_inbox_patient"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_enrollment")),
        sa.UniqueConstraint(
            "journey_id", "dedupe_key", name=op.f("uq_journey_enrollment_journey_id_dedupe_key")
        ),
    )
    with op.batch_alter_table("journey_enrollment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_journey_enrollment_appointment_id"), ["appointment_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_journey_enrollment_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "journey_step_run",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("enrollment_id", sa.Uuid(), nullable=False),
        sa.Column("step_id", sa.String(length=80), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "planned",
                "claimed",
                "sent",
                "skipped",
                "cancelled",
                "failed",
                name="run_status",
                native_enum=False,
                create_constraint=True,
                length=17,
            ),
            nullable=False,
        ),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["journey_enrollment.id"],
            name=op.f("fk_journey_step_run_enrollment_id_journey_enrollment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["inbox_message.id"],
            name=op.f("fk_journey_step_run_message_id_inbox_message"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_step_run")),
        sa.UniqueConstraint(
            "enrollment_id",
            "step_id",
            "attempt",
            name=op.f("uq_journey_step_run_enrollment_id_step_id_attempt"),
        ),
    )
    with op.batch_alter_table("journey_step_run", schema=None) as batch_op:
        batch_op.create_index("ix_journey_step_run_due", ["status", "due_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_journey_step_run_enrollment_id"), ["enrollment_id"], unique=False
        )

    op.create_table(
        "journey_survey_answer",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("enrollment_id", sa.Uuid(), nullable=False),
        sa.Column("step_id", sa.String(length=80), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["journey_enrollment.id"],
            name=op.f("fk_journey_survey_answer_enrollment_id_journey_enrollment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["inbox_message.id"],
            name=op.f("fk_journey_survey_answer_message_id_inbox_message"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_survey_answer")),
        sa.UniqueConstraint(
            "enrollment_id", "step_id", name=op.f("uq_journey_survey_answer_enrollment_id_step_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("journey_survey_answer")
    with op.batch_alter_table("journey_step_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_journey_step_run_enrollment_id"))
        batch_op.drop_index("ix_journey_step_run_due")

    op.drop_table("journey_step_run")
    with op.batch_alter_table("journey_enrollment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_journey_enrollment_patient_id"))
        batch_op.drop_index(batch_op.f("ix_journey_enrollment_appointment_id"))

    op.drop_table("journey_enrollment")
    with op.batch_alter_table("journey_appointment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_journey_appointment_patient_id"))

    op.drop_table("journey_appointment")
    op.drop_table("journey_journey")
