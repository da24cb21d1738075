"""sms channel consent delivery

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Existing rows get server defaults for the new NOT NULL columns (attachments already stored,
messages for care, no attempts, every channel reachable).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_inbound_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_event_id", sa.String(length=128), nullable=False),
        sa.Column("payload_enc", sa.LargeBinary(), nullable=True),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["inbox_message.id"],
            name=op.f("fk_channel_inbound_event_message_id_inbox_message"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_inbound_event")),
        sa.UniqueConstraint(
            "provider",
            "provider_event_id",
            name=op.f("uq_channel_inbound_event_provider_provider_event_id"),
        ),
    )
    op.create_table(
        "consent_record",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "sms",
                "email",
                "voice",
                "chat",
                name="channel",
                native_enum=False,
                create_constraint=True,
                length=13,
            ),
            nullable=False,
        ),
        sa.Column(
            "purpose",
            sa.Enum(
                "care",
                "reminders",
                "surveys",
                "marketing",
                "service",
                name="purpose",
                native_enum=False,
                create_constraint=True,
                length=17,
            ),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "granted",
                "revoked",
                "unknown",
                name="consent_state",
                native_enum=False,
                create_constraint=True,
                length=15,
            ),
            nullable=False,
        ),
        sa.Column(
            "source",
            sa.Enum(
                "keyword",
                "web_form",
                "staff",
                "import",
                "unsubscribe",
                "voice_keypress",
                "provider",
                name="consent_source",
                native_enum=False,
                create_constraint=True,
                length=22,
            ),
            nullable=False,
        ),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("evidence", sa.String(length=200), nullable=False),
        sa.Column("evidence_message_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["evidence_message_id"],
            ["inbox_message.id"],
            name=op.f("fk_consent_record_evidence_message_id_inbox_message"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["inbox_patient.id"],
            name=op.f("fk_consent_record_patient_id_inbox_patient"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_record")),
    )
    with op.batch_alter_table("consent_record", schema=None) as batch_op:
        batch_op.create_index(
            "ix_consent_record_lookup",
            ["patient_id", "channel", "purpose", "created_at"],
            unique=False,
        )

    op.create_table(
        "inbox_delivery_attempt",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_message_id", sa.String(length=128), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "received",
                "queued",
                "sending",
                "sent",
                "delivered",
                "read",
                "undelivered",
                "failed",
                name="message_status",
                native_enum=False,
                create_constraint=True,
                length=19,
            ),
            nullable=False,
        ),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["inbox_message.id"],
            name=op.f("fk_inbox_delivery_attempt_message_id_inbox_message"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_delivery_attempt")),
        sa.UniqueConstraint(
            "message_id", "attempt", name=op.f("uq_inbox_delivery_attempt_message_id_attempt")
        ),
        sa.UniqueConstraint(
            "provider",
            "provider_message_id",
            name=op.f("uq_inbox_delivery_attempt_provider_provider_message_id"),
        ),
    )
    with op.batch_alter_table("inbox_attachment", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "state",
                sa.Enum(
                    "pending",
                    "stored",
                    "failed",
                    name="attachment_state",
                    native_enum=False,
                    create_constraint=True,
                    length=15,
                ),
                nullable=False,
                server_default="stored",
            )
        )
        batch_op.add_column(sa.Column("source_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("error_reason", sa.Text(), nullable=True))

    with op.batch_alter_table("inbox_conversation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("channel_address", sa.String(length=64), nullable=True))

    with op.batch_alter_table("inbox_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purpose", sa.String(length=16), nullable=False, server_default="care")
        )
        batch_op.add_column(
            sa.Column("send_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("inbox_patient", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unreachable", sa.JSON(), nullable=False, server_default="{}")
        )


def downgrade() -> None:
    with op.batch_alter_table("inbox_patient", schema=None) as batch_op:
        batch_op.drop_column("unreachable")

    with op.batch_alter_table("inbox_message", schema=None) as batch_op:
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("send_attempts")
        batch_op.drop_column("purpose")

    with op.batch_alter_table("inbox_conversation", schema=None) as batch_op:
        batch_op.drop_column("channel_address")

    with op.batch_alter_table("inbox_attachment", schema=None) as batch_op:
        batch_op.drop_column("error_reason")
        batch_op.drop_column("source_url")
        batch_op.drop_column("state")

    op.drop_table("inbox_delivery_attempt")
    with op.batch_alter_table("consent_record", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_record_lookup")

    op.drop_table("consent_record")
    op.drop_table("channel_inbound_event")
