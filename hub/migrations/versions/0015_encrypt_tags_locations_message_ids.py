"""tags, appointment location and provider, and inbound Message-IDs stored encrypted

Tags move from JSON lists on conversations and patients to one sealed row per name
(``inbox_tag``, unique by the name's blind index) with link tables; appointments' location and
provider become ``*_enc`` columns; an inbound email's Message-ID is stored as its blind index
(messages and raw events) with the original sealed on the message.

Existing rows are converted in place, which needs the key ring: ``hub migrate`` hands it over
(``config.attributes["ring"]``); run through alembic directly, HUB_KEYS is read. A database with
nothing to convert needs no ring. The downgrade decrypts, so it needs the ring too, and stops
with a message when it lacks a key.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INBOUND_EMAIL = "email"
"""Inbound email's provider name on messages and raw events (see email_intake.PROVIDER)."""
MID_PREFIX = "mid:"
"""email_ids.INDEX_PREFIX, as this revision writes it."""

_conversation = sa.table(
    "inbox_conversation", sa.column("id", sa.Uuid()), sa.column("tags", sa.JSON())
)
_patient = sa.table("inbox_patient", sa.column("id", sa.Uuid()), sa.column("tags", sa.JSON()))
_tag = sa.table(
    "inbox_tag",
    sa.column("id", sa.Uuid()),
    sa.column("bidx", sa.LargeBinary()),
    sa.column("name_enc", sa.LargeBinary()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_conversation_tag = sa.table(
    "inbox_conversation_tag",
    sa.column("conversation_id", sa.Uuid()),
    sa.column("tag_id", sa.Uuid()),
)
_patient_tag = sa.table(
    "inbox_patient_tag", sa.column("patient_id", sa.Uuid()), sa.column("tag_id", sa.Uuid())
)
_appointment = sa.table(
    "journey_appointment",
    sa.column("id", sa.Uuid()),
    sa.column("location", sa.String()),
    sa.column("provider", sa.String()),
    sa.column("location_enc", sa.LargeBinary()),
    sa.column("provider_enc", sa.LargeBinary()),
)
_message = sa.table(
    "inbox_message",
    sa.column("id", sa.Uuid()),
    sa.column("provider", sa.String()),
    sa.column("direction", sa.String()),
    sa.column("provider_message_id", sa.String()),
    sa.column("provider_message_id_enc", sa.LargeBinary()),
)
_event = sa.table(
    "channel_inbound_event",
    sa.column("id", sa.Uuid()),
    sa.column("provider", sa.String()),
    sa.column("provider_event_id", sa.String()),
)


def _ring(needed_for: str) -> Any:
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
        f"migration 0015 must {needed_for}, which needs the key ring: run `hub migrate` with "
        "the hub's HUB_KEYS (or the ./var development ring it uses), not alembic by hand"
    )


def _aad(table: str, column: str, row_id: object) -> bytes:
    from hub.crypto import associated_data

    return associated_data(table, column, row_id)


def _now(bind: sa.Connection) -> datetime:
    now = datetime.now(UTC)
    return now.replace(tzinfo=None) if bind.dialect.name == "sqlite" else now


def upgrade() -> None:
    op.create_table(
        "inbox_tag",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("bidx", sa.LargeBinary(length=32), nullable=False),
        sa.Column("name_enc", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_tag")),
        sa.UniqueConstraint("bidx", name=op.f("uq_inbox_tag_bidx")),
    )
    for table, owner, owner_table in (
        ("inbox_conversation_tag", "conversation_id", "inbox_conversation"),
        ("inbox_patient_tag", "patient_id", "inbox_patient"),
    ):
        op.create_table(
            table,
            sa.Column(owner, sa.Uuid(), nullable=False),
            sa.Column("tag_id", sa.Uuid(), nullable=False),
            sa.ForeignKeyConstraint(
                [owner],
                [f"{owner_table}.id"],
                name=op.f(f"fk_{table}_{owner}_{owner_table}"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["tag_id"],
                ["inbox_tag.id"],
                name=op.f(f"fk_{table}_tag_id_inbox_tag"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint(owner, "tag_id", name=op.f(f"pk_{table}")),
        )
        op.create_index(f"ix_{table}_tag", table, ["tag_id", owner], unique=False)
    op.add_column("inbox_message", sa.Column("provider_message_id_enc", sa.LargeBinary()))
    op.add_column("journey_appointment", sa.Column("location_enc", sa.LargeBinary()))
    op.add_column("journey_appointment", sa.Column("provider_enc", sa.LargeBinary()))

    bind = op.get_bind()
    _seal_tags(bind)
    _seal_places(bind)
    _index_message_ids(bind)

    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a batch: a batch copies the table
    # and drops the original, which the foreign keys pointing at inbox_patient forbid.
    for table in ("inbox_conversation", "inbox_patient"):
        op.drop_column(table, "tags")
    op.drop_column("journey_appointment", "location")
    op.drop_column("journey_appointment", "provider")


def _seal_tags(bind: sa.Connection) -> None:
    owners: list[tuple[Any, Any, str, list[tuple[uuid.UUID, list[str]]]]] = []
    for table, links, column in (
        (_conversation, _conversation_tag, "conversation_id"),
        (_patient, _patient_tag, "patient_id"),
    ):
        rows = [(i, t) for i, t in bind.execute(sa.select(table.c.id, table.c.tags)) if t]
        owners.append((table, links, column, rows))
    if not any(rows for *_, rows in owners):
        return
    from hub.db import new_id
    from hub.inbox.actions.tags import normalize_tags

    ring = _ring("seal the tags of existing conversations and patients")
    tag_ids: dict[str, uuid.UUID] = {}
    for _table, links, column, rows in owners:
        link_rows = []
        for owner_id, tags in rows:
            for name in normalize_tags(str(t) for t in tags):
                if name not in tag_ids:
                    tag_id = tag_ids[name] = new_id()
                    bind.execute(
                        _tag.insert().values(
                            id=tag_id,
                            bidx=ring.blind_index("tag", name),
                            name_enc=ring.encrypt_text(name, _aad("inbox_tag", "name_enc", tag_id)),
                            created_at=_now(bind),
                        )
                    )
                link_rows.append({column: owner_id, "tag_id": tag_ids[name]})
        if link_rows:
            bind.execute(links.insert(), link_rows)


def _seal_places(bind: sa.Connection) -> None:
    t = _appointment
    rows = bind.execute(
        sa.select(t.c.id, t.c.location, t.c.provider).where(
            sa.or_(t.c.location.is_not(None), t.c.provider.is_not(None))
        )
    ).all()
    if not rows:
        return
    ring = _ring("seal the location and provider of existing appointments")
    for row_id, location, provider in rows:
        sealed = {
            f"{name}_enc": None
            if value is None
            else ring.encrypt_text(value, _aad("journey_appointment", f"{name}_enc", row_id))
            for name, value in (("location", location), ("provider", provider))
        }
        bind.execute(t.update().where(t.c.id == row_id).values(**sealed))


def _index_message_ids(bind: sa.Connection) -> None:
    m, e = _message, _event
    messages = bind.execute(
        sa.select(m.c.id, m.c.provider_message_id).where(
            m.c.provider == INBOUND_EMAIL,
            m.c.direction == "inbound",
            m.c.provider_message_id.is_not(None),
            m.c.provider_message_id_enc.is_(None),
        )
    ).all()
    events = bind.execute(
        sa.select(e.c.id, e.c.provider_event_id).where(
            e.c.provider == INBOUND_EMAIL,
            sa.not_(e.c.provider_event_id.startswith("sha256:")),
            sa.not_(e.c.provider_event_id.startswith(MID_PREFIX)),
        )
    ).all()
    if not messages and not events:
        return
    ring = _ring("replace the Message-IDs of existing inbound email by their blind index")

    def index(message_id: str) -> str:
        return MID_PREFIX + str(ring.blind_index("message_id", message_id).hex())

    for row_id, message_id in messages:
        bind.execute(
            m.update()
            .where(m.c.id == row_id)
            .values(
                provider_message_id=index(message_id),
                provider_message_id_enc=ring.encrypt_text(
                    message_id, _aad("inbox_message", "provider_message_id_enc", row_id)
                ),
            )
        )
    for row_id, message_id in events:
        bind.execute(e.update().where(e.c.id == row_id).values(provider_event_id=index(message_id)))


def downgrade() -> None:
    for table in ("inbox_conversation", "inbox_patient"):
        op.add_column(table, sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))
    op.add_column("journey_appointment", sa.Column("location", sa.String(length=200)))
    op.add_column("journey_appointment", sa.Column("provider", sa.String(length=200)))

    bind = op.get_bind()
    _unseal_tags(bind)
    _unseal_places(bind)
    _restore_message_ids(bind)

    op.drop_column("journey_appointment", "location_enc")
    op.drop_column("journey_appointment", "provider_enc")
    op.drop_column("inbox_message", "provider_message_id_enc")
    for table in ("inbox_patient_tag", "inbox_conversation_tag"):
        op.drop_index(f"ix_{table}_tag", table_name=table)
        op.drop_table(table)
    op.drop_table("inbox_tag")


def _unseal_tags(bind: sa.Connection) -> None:
    tags = bind.execute(sa.select(_tag.c.id, _tag.c.name_enc)).all()
    names: dict[uuid.UUID, str] = {}
    if tags:
        ring = _ring("decrypt tag names to put them back in clear")
        names = {
            i: ring.decrypt_text(blob, _aad("inbox_tag", "name_enc", i)) for i, blob in tags if blob
        }
    for table, links, column in (
        (_conversation, _conversation_tag, "conversation_id"),
        (_patient, _patient_tag, "patient_id"),
    ):
        by_owner: dict[uuid.UUID, list[str]] = {}
        for owner_id, tag_id in bind.execute(sa.select(links.c[column], links.c.tag_id)):
            by_owner.setdefault(owner_id, []).append(names[tag_id])
        for owner_id, owned in by_owner.items():
            bind.execute(table.update().where(table.c.id == owner_id).values(tags=sorted(owned)))


def _unseal_places(bind: sa.Connection) -> None:
    t = _appointment
    rows = bind.execute(
        sa.select(t.c.id, t.c.location_enc, t.c.provider_enc).where(
            sa.or_(t.c.location_enc.is_not(None), t.c.provider_enc.is_not(None))
        )
    ).all()
    if not rows:
        return
    ring = _ring("decrypt appointments' location and provider to put them back in clear")
    for row_id, location, provider in rows:
        plain = {
            name: None
            if blob is None
            else ring.decrypt_text(blob, _aad("journey_appointment", f"{name}_enc", row_id))
            for name, blob in (("location", location), ("provider", provider))
        }
        bind.execute(t.update().where(t.c.id == row_id).values(**plain))


def _restore_message_ids(bind: sa.Connection) -> None:
    m, e = _message, _event
    rows = bind.execute(
        sa.select(m.c.id, m.c.provider_message_id, m.c.provider_message_id_enc).where(
            m.c.provider_message_id_enc.is_not(None)
        )
    ).all()
    if not rows:
        return
    ring = _ring("decrypt inbound Message-IDs to put them back in clear")
    for row_id, index, blob in rows:
        message_id = ring.decrypt_text(
            blob, _aad("inbox_message", "provider_message_id_enc", row_id)
        )
        bind.execute(m.update().where(m.c.id == row_id).values(provider_message_id=message_id))
        # The raw event was keyed by the same index: it gets the same id back.
        bind.execute(
            e.update()
            .where(e.c.provider == INBOUND_EMAIL, e.c.provider_event_id == index)
            .values(provider_event_id=message_id)
        )
