"""patient search: blind-indexed name prefixes, external ids (MRN), merges

``inbox_patient_search_term`` holds the keyed blind index of each prefix of each name word
(hub.inbox.search_terms); ``inbox_patient_external_id`` holds record numbers as (assigning
authority, sealed value, blind index of the value); ``inbox_patient_merge`` keeps what a merge
moved so an admin can undo it, and ``inbox_patient.merged_into_id`` marks a merged record.

Existing patients are indexed here, which decrypts their names and so needs the key ring:
``hub migrate`` hands it over; run through alembic directly, HUB_KEYS is read. A database
without named patients needs no ring.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_BATCH = 2_000
"""Patients read and indexed per round while existing names are indexed."""

_patient = sa.table(
    "inbox_patient", sa.column("id", sa.Uuid()), sa.column("name_enc", sa.LargeBinary())
)
_term = sa.table(
    "inbox_patient_search_term",
    sa.column("term", sa.LargeBinary()),
    sa.column("patient_id", sa.Uuid()),
)


def upgrade() -> None:
    with op.batch_alter_table("inbox_patient") as batch:
        batch.add_column(sa.Column("merged_into_id", sa.Uuid(), nullable=True))
        batch.create_index("ix_inbox_patient_merged_into_id", ["merged_into_id"])
        batch.create_foreign_key(
            "fk_inbox_patient_merged_into_id_inbox_patient",
            "inbox_patient",
            ["merged_into_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.create_table(
        "inbox_patient_search_term",
        sa.Column("term", sa.LargeBinary(32), nullable=False),
        sa.Column(
            "patient_id",
            sa.Uuid(),
            sa.ForeignKey(
                "inbox_patient.id",
                ondelete="CASCADE",
                name="fk_inbox_patient_search_term_patient_id_inbox_patient",
            ),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("term", "patient_id", name="pk_inbox_patient_search_term"),
    )
    op.create_index(
        "ix_inbox_patient_search_term_patient", "inbox_patient_search_term", ["patient_id"]
    )
    op.create_table(
        "inbox_patient_external_id",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "patient_id",
            sa.Uuid(),
            sa.ForeignKey(
                "inbox_patient.id",
                ondelete="CASCADE",
                name="fk_inbox_patient_external_id_patient_id_inbox_patient",
            ),
            nullable=False,
        ),
        sa.Column("system", sa.String(200), nullable=False),
        sa.Column("value_enc", sa.LargeBinary(), nullable=True),
        sa.Column("value_bidx", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_patient_external_id"),
        sa.UniqueConstraint(
            "system", "value_bidx", name="uq_inbox_patient_external_id_system_value_bidx"
        ),
    )
    op.create_index(
        "ix_inbox_patient_external_id_patient_id", "inbox_patient_external_id", ["patient_id"]
    )
    op.create_index(
        "ix_inbox_patient_external_id_value", "inbox_patient_external_id", ["value_bidx"]
    )
    op.create_table(
        "inbox_patient_merge",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "source_id",
            sa.Uuid(),
            sa.ForeignKey(
                "inbox_patient.id",
                ondelete="CASCADE",
                name="fk_inbox_patient_merge_source_id_inbox_patient",
            ),
            nullable=False,
        ),
        sa.Column(
            "target_id",
            sa.Uuid(),
            sa.ForeignKey(
                "inbox_patient.id",
                ondelete="CASCADE",
                name="fk_inbox_patient_merge_target_id_inbox_patient",
            ),
            nullable=False,
        ),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("moved", sa.JSON(), nullable=False),
        sa.Column("copied", sa.JSON(), nullable=False),
        sa.Column("source_index", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_by", sa.String(80), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_patient_merge"),
    )
    op.create_index(
        "ix_inbox_patient_unverified",
        "inbox_patient",
        ["id"],
        postgresql_where=sa.text("NOT verified"),
        sqlite_where=sa.text("NOT verified"),
    )
    op.create_index("ix_inbox_patient_merge_source_id", "inbox_patient_merge", ["source_id"])
    op.create_index("ix_inbox_patient_merge_target_id", "inbox_patient_merge", ["target_id"])
    _index_existing_names(op.get_bind())


def _ring() -> Any:
    """The key ring ``hub migrate`` passed, else HUB_KEYS; an error naming what needs it."""
    config = op.get_context().config
    ring = config.attributes.get("ring") if config is not None else None
    if ring is not None:
        return ring
    spec = os.environ.get("HUB_KEYS")
    if spec:
        from hub.crypto import KeyRing

        return KeyRing.parse(spec)
    raise RuntimeError(
        "migration 0020 must index the names of existing patients for search, which needs "
        "the key ring: run `hub migrate` with the hub's HUB_KEYS (or the ./var development "
        "ring it uses), not alembic by hand"
    )


def _index_existing_names(bind: sa.Connection) -> None:
    # The term format is the application's (a stored format, see hub.inbox.search_terms).
    from hub.crypto import associated_data
    from hub.inbox.search_terms import name_terms

    named = sa.select(_patient.c.id, _patient.c.name_enc).where(_patient.c.name_enc.is_not(None))
    if bind.execute(named.limit(1)).first() is None:
        return
    ring = _ring()
    last = None
    while True:
        stmt = named.order_by(_patient.c.id).limit(BACKFILL_BATCH)
        if last is not None:
            stmt = stmt.where(_patient.c.id > last)
        rows = bind.execute(stmt).all()
        if not rows:
            return
        terms = []
        for patient_id, blob in rows:
            name = ring.decrypt_text(blob, associated_data("inbox_patient", "name_enc", patient_id))
            terms += [{"term": t, "patient_id": patient_id} for t in name_terms(ring, name)]
        if terms:
            bind.execute(_term.insert(), terms)
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_table("inbox_patient_merge")
    op.drop_index("ix_inbox_patient_unverified", "inbox_patient")
    op.drop_table("inbox_patient_external_id")
    op.drop_table("inbox_patient_search_term")
    with op.batch_alter_table("inbox_patient") as batch:
        batch.drop_constraint("fk_inbox_patient_merged_into_id_inbox_patient", type_="foreignkey")
        batch.drop_index("ix_inbox_patient_merged_into_id")
        batch.drop_column("merged_into_id")
