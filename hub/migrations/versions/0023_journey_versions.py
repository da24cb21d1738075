"""journey definition versions

``journey_version`` keeps every saved definition of a journey; ``journey_journey.version`` says
which one new enrollments follow and ``journey_enrollment.version`` pins an enrollment to the
version it was made under (NULL: the current one; saving a new version pins the NULLs first).
Every existing journey becomes version 1, its stored text copied in, and its enrollments
follow it.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journey_version",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("journey_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["journey_id"],
            ["journey_journey.id"],
            name=op.f("fk_journey_version_journey_id_journey_journey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_version")),
        sa.UniqueConstraint(
            "journey_id", "version", name=op.f("uq_journey_version_journey_id_version")
        ),
    )
    with op.batch_alter_table("journey_journey", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
    with op.batch_alter_table("journey_enrollment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=True))
    _first_versions()


def _first_versions() -> None:
    """Version 1 of each journey is the text it runs today."""
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, definition FROM journey_journey")).all()
    insert = sa.text(
        "INSERT INTO journey_version (id, journey_id, version, definition, created_at) "
        "VALUES (:id, :journey_id, 1, :definition, :created_at)"
    ).bindparams(
        sa.bindparam("id", type_=sa.Uuid()),
        sa.bindparam("created_at", type_=sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # the models' UTCDateTime stores naive UTC there
    for journey_id, definition in rows:
        bind.execute(
            insert,
            {
                "id": uuid.uuid4(),
                "journey_id": journey_id,
                "definition": definition,
                "created_at": now,
            },
        )


def downgrade() -> None:
    with op.batch_alter_table("journey_enrollment", schema=None) as batch_op:
        batch_op.drop_column("version")
    with op.batch_alter_table("journey_journey", schema=None) as batch_op:
        batch_op.drop_column("version")
    op.drop_table("journey_version")
