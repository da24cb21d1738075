"""patient erasure and retention: kept opt-outs, provider deletions, daily purge runs

``consent_suppression`` keeps an erased patient's opt-outs against the blind index of the
address they were about; ``rights_provider_deletion`` queues files (voicemail recordings) to
delete at the provider until it confirms; ``rights_retention_run`` is one row per day's purge,
whose key and lease let one worker run it.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(name: str, length: int, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=length)


def upgrade() -> None:
    op.create_table(
        "consent_suppression",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("address_bidx", sa.LargeBinary(length=32), nullable=False),
        sa.Column(
            "channel",
            _enum("channel", 16, "sms", "email", "voice", "chat", "whatsapp"),
            nullable=False,
        ),
        sa.Column(
            "purpose",
            _enum("purpose", 17, "care", "reminders", "surveys", "marketing", "service"),
            nullable=False,
        ),
        sa.Column(
            "source",
            _enum(
                "consent_source",
                22,
                "keyword",
                "web_form",
                "staff",
                "import",
                "unsubscribe",
                "voice_keypress",
                "provider",
            ),
            nullable=False,
        ),
        sa.Column("evidence", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_suppression")),
        sa.UniqueConstraint(
            "address_bidx",
            "channel",
            "purpose",
            name=op.f("uq_consent_suppression_address_bidx_channel_purpose"),
        ),
    )
    op.create_index(
        op.f("ix_consent_suppression_address_bidx"),
        "consent_suppression",
        ["address_bidx"],
        unique=False,
    )
    op.create_table(
        "rights_provider_deletion",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("resource_sid", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rights_provider_deletion")),
        sa.UniqueConstraint(
            "provider",
            "resource_sid",
            name=op.f("uq_rights_provider_deletion_provider_resource_sid"),
        ),
    )
    op.create_index(
        "ix_rights_provider_deletion_due",
        "rights_provider_deletion",
        ["done_at", "next_attempt_at"],
        unique=False,
    )
    op.create_table(
        "rights_retention_run",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_rights_retention_run")),
    )


def downgrade() -> None:
    op.drop_table("rights_retention_run")
    op.drop_index("ix_rights_provider_deletion_due", table_name="rights_provider_deletion")
    op.drop_table("rights_provider_deletion")
    op.drop_index(op.f("ix_consent_suppression_address_bidx"), table_name="consent_suppression")
    op.drop_table("consent_suppression")
