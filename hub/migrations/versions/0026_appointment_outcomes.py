"""appointment outcomes: arrived, fulfilled, no-show and when a cancellation came in

``journey_appointment.status`` accepts the outcome states the feeds carry (FHIR arrived /
checked-in, fulfilled, noshow, entered-in-error); the column widens from 17 to 24 characters
like the model's str_enum. ``cancelled_at`` records when a cancellation came in (the reports
tell late cancellations from those in time); stored cancellations take their enrollment's
cancellation time, the best record there is of it. Indexes for the reports: appointments by
start, step runs by due time, outbound messages by creation (covering what the delivery report
groups by, on PostgreSQL). Downgrading fails while a row holds an outcome state (the CHECK
constraint would no longer hold): those rows must be set back to booked first.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("booked", "confirmed", "cancelled")
AFTER = (*BEFORE, "arrived", "fulfilled", "noshow", "entered_in_error")


def _status_column(values: tuple[str, ...], length: int, was: int) -> None:
    allowed = ", ".join(f"'{v}'" for v in values)
    name = op.f("ck_journey_appointment_appointment_status")
    with op.batch_alter_table("journey_appointment") as batch:
        batch.drop_constraint(name, type_="check")
        batch.alter_column(
            "status",
            existing_type=sa.String(length=was),
            type_=sa.String(length=length),
            existing_nullable=False,
        )
        batch.create_check_constraint(name, sa.text(f"status IN ({allowed})"))


def upgrade() -> None:
    _status_column(AFTER, 24, 17)
    with op.batch_alter_table("journey_appointment") as batch:
        batch.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_journey_appointment_start_at", ["start_at"], unique=False)
    op.execute(
        "UPDATE journey_appointment SET cancelled_at = (SELECT min(e.cancelled_at) "
        "FROM journey_enrollment e WHERE e.appointment_id = journey_appointment.id) "
        "WHERE status = 'cancelled'"
    )
    with op.batch_alter_table("journey_step_run") as batch:
        batch.create_index(
            "ix_journey_step_run_due_enrollment", ["due_at", "enrollment_id"], unique=False
        )
    op.create_index(
        "ix_inbox_message_outbound_created",
        "inbox_message",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("direction = 'outbound'"),
        sqlite_where=sa.text("direction = 'outbound'"),
        postgresql_include=["channel", "status", "provider", "error_code"],
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_message_outbound_created", table_name="inbox_message")
    with op.batch_alter_table("journey_step_run") as batch:
        batch.drop_index("ix_journey_step_run_due_enrollment")
    with op.batch_alter_table("journey_appointment") as batch:
        batch.drop_index("ix_journey_appointment_start_at")
        batch.drop_column("cancelled_at")
    _status_column(BEFORE, 17, 24)
