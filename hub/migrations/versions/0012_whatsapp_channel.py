"""whatsapp channel: WhatsApp messages through the Twilio number are stored as WhatsApp

Every column typed by the Channel enum (conversations, messages, consent records, template
variants) accepts "whatsapp", so a WhatsApp message is no longer stored as an SMS and a STOP on
WhatsApp is recorded for WhatsApp. The value is longer than the others: the columns widen from
13 to 16 characters like the model's str_enum. Downgrading fails while a row says whatsapp
(the CHECK constraint would no longer hold): resolve or delete those first.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("inbox_conversation", "inbox_message", "consent_record", "template_variant")
BEFORE = ("sms", "email", "voice", "chat")
AFTER = (*BEFORE, "whatsapp")


def _channel_column(values: tuple[str, ...], length: int, was: int) -> None:
    allowed = ", ".join(f"'{v}'" for v in values)
    for table in TABLES:
        name = op.f(f"ck_{table}_channel")
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_="check")
            batch.alter_column(
                "channel",
                existing_type=sa.String(length=was),
                type_=sa.String(length=length),
                existing_nullable=False,
            )
            batch.create_check_constraint(name, sa.text(f"channel IN ({allowed})"))


def upgrade() -> None:
    _channel_column(AFTER, 16, 13)


def downgrade() -> None:
    _channel_column(BEFORE, 13, 16)
