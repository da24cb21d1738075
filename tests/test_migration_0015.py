"""Migration 0015 seals what a clinic already stored in clear (tags, appointment places, inbound
Message-IDs), with the ring `hub migrate` passes, and the downgrade puts them back."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Connection, select

from hub.crypto import KeyRing, associated_data
from hub.db import Database, create_engine
from hub.inbox.actions.tags import tagged_filter, tags_of_conversation_in, tags_of_patient_in
from hub.inbox.email_ids import email_id_index
from hub.inbox.models import Conversation, InboundEvent, Message
from hub.journeys.models import Appointment
from hub.migrations import alembic_config, current_revision, upgrade_url
from tests.conftest import ON_POSTGRES, _admin_execute, _pg_url_for

PATIENT = uuid.UUID("018f0000-0000-7000-8000-000000000001")
CONVERSATION = uuid.UUID("018f0000-0000-7000-8000-000000000002")
APPOINTMENT = uuid.UUID("018f0000-0000-7000-8000-000000000003")
MESSAGE = uuid.UUID("018f0000-0000-7000-8000-000000000004")
EVENT = uuid.UUID("018f0000-0000-7000-8000-000000000005")
MAIL_ID = "legacy.jordan.doe@old-laptop.patient.example"
WHEN = datetime(2026, 11, 2, 15, tzinfo=UTC)


@pytest.fixture
async def at_0014(tmp_path: Path) -> AsyncIterator[str]:
    """A database at revision 0014 holding a clinic's data as that schema kept it."""
    name = f"hub_test_0015_{uuid.uuid4().hex[:8]}"
    if ON_POSTGRES:
        await _admin_execute(f'CREATE DATABASE "{name}"')
        url = _pg_url_for(name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"
    await upgrade_url(url, "0014")
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_legacy_rows)
    finally:
        await engine.dispose()
    try:
        yield url
    finally:
        if ON_POSTGRES:
            await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _at(conn: Connection) -> datetime:
    return WHEN.replace(tzinfo=None) if conn.dialect.name == "sqlite" else WHEN


def _legacy_rows(conn: Connection) -> None:
    meta = sa.MetaData()
    meta.reflect(conn)
    for table in meta.tables.values():
        for column in table.columns:
            # SQLite reflects a Uuid column as CHAR(32): bind uuids as the models do.
            if isinstance(column.type, sa.CHAR | sa.Uuid) and column.name.endswith("id"):
                column.type = sa.Uuid()
    t = meta.tables
    at = _at(conn)
    conn.execute(
        t["inbox_patient"]
        .insert()
        .values(
            id=PATIENT,
            language="en",
            time_zone="UTC",
            channel_order=["sms"],
            tags=["Oncology ", "VIP"],
            verified=True,
            unreachable={},
            created_at=at,
            updated_at=at,
        )
    )
    conn.execute(
        t["inbox_conversation"]
        .insert()
        .values(
            id=CONVERSATION,
            patient_id=PATIENT,
            status="open",
            priority="normal",
            channel="email",
            tags=["chemo-week", "vip"],
            created_at=at,
            last_activity_at=at,
        )
    )
    conn.execute(
        t["journey_appointment"]
        .insert()
        .values(
            id=APPOINTMENT,
            patient_id=PATIENT,
            source="api",
            external_id="legacy-1",
            start_at=at,
            location="Psychiatry, room 12",
            provider="Dr. Legacy Example",
            status="booked",
            updated_at=at,
        )
    )
    conn.execute(
        t["inbox_message"]
        .insert()
        .values(
            id=MESSAGE,
            conversation_id=CONVERSATION,
            direction="inbound",
            channel="email",
            provider="email",
            provider_message_id=MAIL_ID,
            status="received",
            purpose="care",
            delivery_notes=[],
            send_attempts=0,
            created_at=at,
            updated_at=at,
        )
    )
    conn.execute(
        t["channel_inbound_event"]
        .insert()
        .values(
            id=EVENT,
            provider="email",
            provider_event_id=MAIL_ID,
            message_id=MESSAGE,
            received_at=at,
        )
    )


def _unseal(ring: KeyRing, table: str, column: str, row_id: uuid.UUID, blob: bytes) -> str:
    return ring.decrypt_text(blob, associated_data(table, column, row_id))


def _downgrade(conn: Connection, ring: KeyRing) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    cfg.attributes["ring"] = ring
    command.downgrade(cfg, "0014")


async def test_without_the_ring_it_stops_and_changes_nothing(
    at_0014: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUB_KEYS", raising=False)
    with pytest.raises(RuntimeError, match="needs the key ring: run `hub migrate`"):
        await upgrade_url(at_0014)
    engine = create_engine(at_0014)
    try:
        assert await current_revision(engine) == "0014"  # nothing half-applied
    finally:
        await engine.dispose()


async def test_existing_rows_are_sealed_and_read_back_and_the_downgrade_restores_them(
    at_0014: str, ring: KeyRing
) -> None:
    await upgrade_url(at_0014, "0015", ring=ring)
    db = Database.connect(at_0014)
    try:
        async with db.reader() as session:
            assert await tags_of_patient_in(session, ring, PATIENT) == ["oncology", "vip"]
            assert await tags_of_conversation_in(session, ring, CONVERSATION) == [
                "chemo-week",
                "vip",
            ]
            found = await session.scalars(
                select(Conversation.id).where(tagged_filter(ring, "Chemo-Week"))
            )
            assert found.all() == [CONVERSATION]
            tag_rows = (await session.execute(sa.text("SELECT COUNT(*) FROM inbox_tag"))).scalar()
            assert tag_rows == 3  # "vip" of patient and conversation is one name
            # Columns, not whole rows: the models may be ahead of 0015 (later revisions).
            location, provider = (
                await session.execute(
                    select(Appointment.location_enc, Appointment.provider_enc).where(
                        Appointment.id == APPOINTMENT
                    )
                )
            ).one()
            assert location is not None and b"Psychiatry" not in location
            assert _unseal(ring, "journey_appointment", "location_enc", APPOINTMENT, location) == (
                "Psychiatry, room 12"
            )
            assert _unseal(ring, "journey_appointment", "provider_enc", APPOINTMENT, provider) == (
                "Dr. Legacy Example"
            )
            index, sealed = (
                await session.execute(
                    select(Message.provider_message_id, Message.provider_message_id_enc).where(
                        Message.id == MESSAGE
                    )
                )
            ).one()
            assert index == email_id_index(ring, MAIL_ID)
            assert _unseal(ring, "inbox_message", "provider_message_id_enc", MESSAGE, sealed) == (
                MAIL_ID
            )
            event_key = await session.scalar(
                select(InboundEvent.provider_event_id).where(InboundEvent.id == EVENT)
            )
            assert event_key == email_id_index(ring, MAIL_ID)
    finally:
        await db.dispose()

    engine = create_engine(at_0014)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, ring)
        async with engine.connect() as conn:
            tags = (await conn.execute(sa.text("SELECT tags FROM inbox_patient"))).scalar_one()
            place = (
                await conn.execute(sa.text("SELECT location, provider FROM journey_appointment"))
            ).one()
            mail_id = (
                await conn.execute(sa.text("SELECT provider_message_id FROM inbox_message"))
            ).scalar_one()
            event_id = (
                await conn.execute(sa.text("SELECT provider_event_id FROM channel_inbound_event"))
            ).scalar_one()
    finally:
        await engine.dispose()
    # SQLite hands JSON back as text, PostgreSQL's driver as a list.
    assert (tags if isinstance(tags, list) else json.loads(tags)) == ["oncology", "vip"]
    assert tuple(place) == ("Psychiatry, room 12", "Dr. Legacy Example")
    assert mail_id == event_id == MAIL_ID
