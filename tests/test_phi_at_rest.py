"""PHI is unreadable at rest, findable through the blind index, and bound to its row."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from hub.audit import Actor
from hub.crypto import IntegrityCheckFailed, KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.actions.tags import tagged_filter, tags_of_conversation_in
from hub.inbox.models import Conversation, Message, Patient
from hub.inbox.schemas import NewPatient
from hub.journeys.models import Appointment
from tests.conftest import ON_POSTGRES
from tests.sealed_helpers import (
    CONVERSATION_TAG,
    LOCATION,
    MAIL_ID,
    PATIENT_TAG,
    PROVIDER,
    seed_sealed_values,
)

STAFF = Actor.staff("00000000-0000-7000-8000-000000000001")


async def _seed(db: Database, ring: KeyRing) -> tuple[uuid.UUID, uuid.UUID]:
    patient_id = await actions.do_create_patient(
        db,
        ring,
        STAFF,
        NewPatient(
            name="Avery Sample",
            phone="+1 (555) 123-4567",
            email="Avery@Example.org",
            tags=[PATIENT_TAG],
        ),
        region="US",
    )
    message_id = await actions.do_record_inbound(
        db, ring, patient_id, Channel.SMS, "chest pain since Tuesday"
    )
    async with db.reader() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        conversation_id = message.conversation_id
    await seed_sealed_values(db, ring, STAFF, patient_id, conversation_id)
    return patient_id, message_id


CONFIG_TABLES = ("routing_triage_phrase",)
"""Clinic configuration, not patient data: the triage phrase list itself says "chest pain"."""


def _dump(url: str, *, exclude_config: bool = False) -> bytes:
    if ON_POSTGRES:
        pg_dump = shutil.which("pg_dump")
        assert pg_dump, "pg_dump is needed to check what PostgreSQL holds"
        parts = urlsplit(url)
        return subprocess.run(
            [
                pg_dump,
                "--no-owner",
                *(f"--exclude-table-data={t}" for t in (CONFIG_TABLES if exclude_config else ())),
                "-h",
                parts.hostname or "127.0.0.1",
                "-p",
                str(parts.port or 5432),
                "-U",
                parts.username or "postgres",
                parts.path.lstrip("/"),
            ],
            check=True,
            capture_output=True,
        ).stdout
    path = url.split(":///", 1)[1]
    conn = sqlite3.connect(path)
    try:
        lines = [
            line
            for line in conn.iterdump()
            if not (exclude_config and any(f'INSERT INTO "{t}"' in line for t in CONFIG_TABLES))
        ]
    finally:
        conn.close()
    if exclude_config:
        return "\n".join(lines).encode()
    raw = b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if Path(p).exists())
    return "\n".join(lines).encode() + raw


async def test_dump_holds_no_phone_digits_or_message_words(
    committed_db: Database, fresh_db_url: str, ring: KeyRing
) -> None:
    patient_id, _ = await _seed(committed_db, ring)
    await committed_db.dispose()  # flush everything to disk before dumping

    dump = _dump(fresh_db_url)  # everything: SQL text, and on SQLite the raw file and WAL
    assert b"inbox_patient" in dump  # the dump is real, not empty
    for needle in [
        b"5551234567",
        b"555-123-4567",
        b"Avery",
        b"avery@example.org",
        b"since Tuesday",
        b"Tuesday",
        PATIENT_TAG.encode(),
        CONVERSATION_TAG.encode(),
        b"oncology",
        LOCATION.encode(),
        b"Hematology",
        PROVIDER.encode(),
        b"Marlowe",
        MAIL_ID.encode(),
        b"avery.private",
    ]:
        assert needle not in dump, needle
    # "chest pain" is also a triage phrase the clinic configures; outside that configuration
    # table the words appear nowhere, so the patient's message left no trace.
    patient_data = _dump(fresh_db_url, exclude_config=True)
    assert b"inbox_message" in patient_data
    for needle in [b"chest pain", b"Chest pain", b"chest", b"5551234567"]:
        assert needle not in patient_data, needle

    db = Database.connect(fresh_db_url)
    try:
        for spelling in ["+1 (555) 123-4567", "555.123.4567", "15551234567", "(555)1234567"]:
            found = await actions.do_find_patients_by_phone(db, ring, STAFF, spelling, region="US")
            assert [p.id for p in found] == [patient_id]
            assert found[0].phone == "+15551234567"
            assert found[0].name == "Avery Sample"
        by_mail = await actions.do_find_patients_by_email(db, ring, STAFF, "AVERY@example.ORG")
        assert [p.id for p in by_mail] == [patient_id]
        assert (
            await actions.do_find_patients_by_phone(db, ring, STAFF, "555 123 4568", region="US")
            == []
        )
        # Sealed, and still read back and found: tags by their index, the place for templates.
        assert found[0].tags == [PATIENT_TAG]
        async with db.reader() as session:
            tagged = (
                await session.scalars(
                    select(Conversation.id).where(tagged_filter(ring, " Chemo-Week "))
                )
            ).all()
            assert len(tagged) == 1
            assert await tags_of_conversation_in(session, ring, tagged[0]) == [CONVERSATION_TAG]
            appointment = (await session.scalars(select(Appointment))).one()
            assert appointment.unseal(ring, "location") == LOCATION
            assert appointment.unseal(ring, "provider") == PROVIDER
            inbound = (
                await session.scalars(select(Message).where(Message.channel == Channel.EMAIL))
            ).one()
            assert inbound.unseal(ring, "provider_message_id") == MAIL_ID
    finally:
        await db.dispose()


async def test_ciphertext_copied_to_another_row_fails_with_integrity_error(
    db: Database, ring: KeyRing
) -> None:
    a = await actions.do_create_patient(
        db, ring, STAFF, NewPatient(name="Avery Sample", phone="+15550100101"), region="US"
    )
    b = await actions.do_create_patient(
        db, ring, STAFF, NewPatient(name="Blake Placeholder", phone="+15550100102"), region="US"
    )
    async with db.transaction() as session:
        a_row = await session.get(Patient, a)
        assert a_row is not None
        stolen = a_row.name_enc
        await session.execute(update(Patient).where(Patient.id == b).values(name_enc=stolen))

    with pytest.raises(IntegrityCheckFailed) as info:
        await actions.do_read_patient(db, ring, STAFF, b)
    assert "inbox_patient.name_enc" in str(info.value)
    assert "copied from another row or column" in str(info.value)
    # The row it came from still reads fine.
    assert (await actions.do_read_patient(db, ring, STAFF, a)).name == "Avery Sample"


async def test_ciphertext_copied_to_another_column_fails(db: Database, ring: KeyRing) -> None:
    a = await actions.do_create_patient(
        db, ring, STAFF, NewPatient(name="Avery Sample", phone="+15550100101"), region="US"
    )
    async with db.transaction() as session:
        row = await session.get(Patient, a)
        assert row is not None
        row.name_enc = row.phone_enc
    with pytest.raises(IntegrityCheckFailed, match="name_enc"):
        await actions.do_read_patient(db, ring, STAFF, a)


async def test_reads_and_writes_of_phi_are_audited(db: Database, ring: KeyRing) -> None:
    from sqlalchemy import select

    from hub.audit import AuditEvent

    patient_id, _ = await _seed(db, ring)
    await actions.do_read_patient(db, ring, STAFF, patient_id)
    async with db.reader() as session:
        events = (await session.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all()
    actions_seen = [(e.actor, e.action, e.subject_id) for e in events]
    assert (str(STAFF), "patient.create", str(patient_id)) in actions_seen
    assert (str(STAFF), "patient.read", str(patient_id)) in actions_seen
    for e in events:  # audit rows carry ids, never PHI
        assert "555" not in repr(e.detail) and "Avery" not in repr(e.detail)
