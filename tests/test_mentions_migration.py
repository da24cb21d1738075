"""Migration 0022 copies the mentions notes already hold into inbox_mention, as read (nobody
opens the new Mentions page to a history of "new" ones), and skips accounts since deleted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, select

from hub.db import Database, create_engine
from hub.enums import Channel
from hub.inbox.mention_models import Mention
from hub.inbox.models import Conversation, Note, Patient, StaffUser
from hub.migrations import alembic_config, upgrade_url
from tests.conftest import ON_POSTGRES, _admin_execute, _pg_url_for

WHEN = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
GONE = uuid.UUID("018f0000-0000-7000-8000-0000000000ff")


@pytest.fixture
async def at_0021(tmp_path: Path) -> AsyncIterator[str]:
    name = f"hub_test_0022_{uuid.uuid4().hex[:8]}"
    if ON_POSTGRES:
        await _admin_execute(f'CREATE DATABASE "{name}"')
        url = _pg_url_for(name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"
    await upgrade_url(url, "0021")
    try:
        yield url
    finally:
        if ON_POSTGRES:
            await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_existing_mentions_are_copied_in_as_read(at_0021: str) -> None:
    db = Database.connect(at_0021)
    try:
        async with db.transaction() as session:
            dana = StaffUser(email="dana@staff.example.org", display_name="Dana", password_hash="x")
            eli = StaffUser(email="eli@staff.example.org", display_name="Eli", password_hash="x")
            patient = Patient(verified=True)
            session.add_all([dana, eli, patient])
            await session.flush()
            conversation = Conversation(patient_id=patient.id, channel=Channel.SMS)
            session.add(conversation)
            await session.flush()
            mentions = [str(dana.id), str(GONE), str(eli.id), str(dana.id)]
            note = Note(conversation_id=conversation.id, mentions=mentions, created_at=WHEN)
            plain = Note(conversation_id=conversation.id, created_at=WHEN)
            session.add_all([note, plain])
        ids = (dana.id, eli.id, note.id, conversation.id)
    finally:
        await db.dispose()

    await upgrade_url(at_0021, "0022")

    db = Database.connect(at_0021)
    try:
        async with db.reader() as session:
            rows = (await session.scalars(select(Mention).order_by(Mention.staff_id))).all()
    finally:
        await db.dispose()
    dana_id, eli_id, note_id, conversation_id = ids
    assert sorted((r.staff_id, r.note_id, r.conversation_id) for r in rows) == sorted(
        [(dana_id, note_id, conversation_id), (eli_id, note_id, conversation_id)]
    )
    assert {(r.created_at, r.read_at) for r in rows} == {(WHEN, WHEN)}


def _downgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, "0021")


async def test_the_downgrade_drops_the_two_tables(at_0021: str) -> None:
    await upgrade_url(at_0021, "0022")
    engine = create_engine(at_0021)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await engine.dispose()
    assert "inbox_mention" not in tables and "inbox_staff_alert" not in tables
    assert "inbox_note" in tables
