"""inbound mail sender verification, and a date of birth for the phone cancellation PIN

``inbox_message.sender_verified`` / ``sender_check``: whether an inbound mail's From address
was proven (SPF, DKIM, DMARC or a trusted relay's verdict) and why not; NULL on every other
message and on mail received before this revision (which no check ran on).
``inbox_patient.birth_date_enc``: the patient's date of birth, encrypted like their name; a
clinic may ask its month and day on the keypad before a phone cancellation.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sender_verified", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("sender_check", sa.String(length=24), nullable=True))
    with op.batch_alter_table("inbox_patient", schema=None) as batch_op:
        batch_op.add_column(sa.Column("birth_date_enc", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_patient", schema=None) as batch_op:
        batch_op.drop_column("birth_date_enc")
    with op.batch_alter_table("inbox_message", schema=None) as batch_op:
        batch_op.drop_column("sender_check")
        batch_op.drop_column("sender_verified")
