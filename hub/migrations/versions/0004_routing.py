"""routing: rules, urgent triage phrases, hub settings

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEEDED_AT = datetime(2026, 11, 21, tzinfo=UTC)
# Kept in step with hub.routing.triage.DEFAULT_TRIAGE_PHRASES (revisions do not import hub;
# tests/test_routing.py checks the two agree).
TRIAGE_PHRASES = (
    "chest pain",
    "chest pains",
    "heart attack",
    "can't breathe",
    "can't breath",
    "cannot breathe",
    "can not breathe",
    "difficulty breathing",
    "trouble breathing",
    "not breathing",
    "choking",
    "suicide",
    "suicidal",
    "kill myself",
    "end my life",
    "want to die",
    "overdose",
    "overdosed",
    "stroke",
    "severe bleeding",
    "bleeding heavily",
    "unconscious",
    "passed out",
    "seizure",
    "seizures",
    "anaphylaxis",
    "anaphylactic",
)
TRIAGE_REPLY = (
    "If this is an emergency, call 911 or your local emergency number now. "
    "A member of our care team has been alerted."
)


def upgrade() -> None:
    op.create_table(
        "hub_setting",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_hub_setting")),
    )
    op.create_table(
        "routing_rule",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("conditions", sa.JSON(), nullable=False, server_default="{}"),
        sa.Column("actions", sa.JSON(), nullable=False, server_default="{}"),
        sa.Column("stop_processing", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_rule")),
    )
    with op.batch_alter_table("routing_rule", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_routing_rule_position"), ["position"], unique=False)

    op.create_table(
        "routing_triage_phrase",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("phrase", sa.String(length=120), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_triage_phrase")),
        sa.UniqueConstraint("phrase", name=op.f("uq_routing_triage_phrase_phrase")),
    )
    # Urgent triage works from the first inbound message of a fresh install.
    op.bulk_insert(
        sa.table(
            "routing_triage_phrase",
            sa.column("id", sa.Uuid()),
            sa.column("phrase", sa.String()),
            sa.column("enabled", sa.Boolean()),
            sa.column("created_at", sa.DateTime(timezone=True)),
        ),
        [
            {"id": uuid.uuid4(), "phrase": phrase, "enabled": True, "created_at": SEEDED_AT}
            for phrase in TRIAGE_PHRASES
        ],
    )
    op.bulk_insert(
        sa.table(
            "hub_setting",
            sa.column("key", sa.String()),
            sa.column("value", sa.JSON()),
            sa.column("updated_at", sa.DateTime(timezone=True)),
        ),
        [{"key": "triage.reply", "value": TRIAGE_REPLY, "updated_at": SEEDED_AT}],
    )


def downgrade() -> None:
    op.drop_table("routing_triage_phrase")
    with op.batch_alter_table("routing_rule", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_routing_rule_position"))

    op.drop_table("routing_rule")
    op.drop_table("hub_setting")
