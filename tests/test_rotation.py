"""`hub keys rotate`: online, resumable, and leaves nothing under the old key."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.crypto import KeyRing, key_id_of
from hub.db import Base, Database, encrypted_columns
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.actions.tags import tags_of_conversation_in, tags_of_patient_in
from hub.inbox.models import Message
from hub.inbox.schemas import NewPatient
from hub.journeys.models import Appointment
from hub.rotation import key_usage, rotate
from tests.conftest import hub_env, sync_url
from tests.sealed_helpers import (
    CONVERSATION_TAG,
    LOCATION,
    MAIL_ID,
    PATIENT_TAG,
    PROVIDER,
    seed_sealed_values,
)

STAFF = Actor.staff("00000000-0000-7000-8000-000000000002")
PATIENTS = 40


async def _seed(db: Database, ring: KeyRing) -> list[object]:
    ids = []
    for n in range(PATIENTS):
        pid = await actions.do_create_patient(
            db,
            ring,
            STAFF,
            NewPatient(
                name=f"Synthetic Person {n}",
                phone=f"+1555010{n:04d}",
                email=f"person{n}@example.org",
            ),
            region="US",
        )
        await actions.do_record_inbound(db, ring, pid, Channel.SMS, f"synthetic message {n}")
        ids.append(pid)
    return ids


async def test_rotation_moves_everything_while_reads_keep_working(committed_db: Database) -> None:
    old = KeyRing.generate("k1")
    ids = await _seed(committed_db, old)
    assert (await key_usage(committed_db))["k1"] == PATIENTS * 4  # name, phone, email, body

    new = old.with_new_key("k2")
    stop = asyncio.Event()
    reads = 0
    read_errors: list[BaseException] = []

    async def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for pid in ids:
                try:
                    view = await actions.do_read_patient(committed_db, new, STAFF, pid)
                    assert view.name is not None and view.name.startswith("Synthetic Person")
                    reads += 1
                except BaseException as exc:  # collected and asserted below
                    read_errors.append(exc)
                await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    report = await rotate(committed_db, new, batch_size=7)
    stop.set()
    await task

    assert read_errors == []
    assert reads > 0
    assert report.rewritten + report.changed_meanwhile == PATIENTS * 4
    assert report.stale_keys == set()
    assert dict(report.remaining) == {"k2": PATIENTS * 4}

    # The old key is gone from the ring and every value still reads.
    only_new = new.without("k1")
    for pid in ids:
        view = await actions.do_read_patient(committed_db, only_new, STAFF, pid)
        assert view.phone is not None and view.phone.startswith("+1555010")
    found = await actions.do_find_patients_by_phone(
        committed_db, only_new, STAFF, "(555) 010-0003", region="US"
    )
    assert len(found) == 1


async def test_interrupted_rotation_resumes_where_it_stopped(committed_db: Database) -> None:
    old = KeyRing.generate("k1")
    await _seed(committed_db, old)
    new = old.with_new_key("k2")

    class Interrupted(Exception):
        pass

    calls = 0

    def crash_after_two_batches(label: str, done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        await rotate(committed_db, new, batch_size=5, on_progress=crash_after_two_batches)
    partial = await key_usage(committed_db)
    assert partial["k1"] > 0 and partial["k2"] > 0

    report = await rotate(committed_db, new, batch_size=5)
    assert report.resumed_columns, "the second run should continue from the checkpoint"
    assert report.rewritten == partial["k1"]
    assert dict(report.remaining) == {"k2": PATIENTS * 4}


@pytest.mark.slow
def test_cli_rotate_reports_counts_and_retires_old_key(fresh_db_url: str, tmp_path) -> None:
    from tests.conftest import run_sync

    old = KeyRing.generate("k1")

    async def seed() -> None:
        db = Database.connect(fresh_db_url)
        try:
            await _seed(db, old)
        finally:
            await db.dispose()

    run_sync(seed())
    new = old.with_new_key("k2")
    env = hub_env(
        HUB_DATABASE_URL=sync_url(fresh_db_url),
        HUB_KEYS=new.to_spec(),
        HUB_VAR_DIR=str(tmp_path / "var"),
        HUB_LOG_FORMAT="text",
    )
    done = subprocess.run(
        [sys.executable, "-m", "hub", "keys", "rotate", "--batch-size", "9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"re-encrypted {PATIENTS * 4} values under key k2" in done.stdout
    assert "no data remains under k1: it can be removed from HUB_KEYS" in done.stdout

    env["HUB_KEYS"] = new.without("k1").to_spec()
    status = subprocess.run(
        [sys.executable, "-m", "hub", "keys", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert f"k2: {PATIENTS * 4} ciphertexts (in ring)" in status.stdout
    assert "k1" not in status.stdout


async def test_rotation_reseals_tags_places_and_message_ids(committed_db: Database) -> None:
    old = KeyRing.generate("k1")
    patient_id = await actions.do_create_patient(
        committed_db,
        old,
        STAFF,
        NewPatient(name="Synthetic Tagged", phone="+15550109876", tags=[PATIENT_TAG]),
        region="US",
    )
    message_id = await actions.do_record_inbound(
        committed_db, old, patient_id, Channel.SMS, "synthetic text"
    )
    async with committed_db.reader() as session:
        texted = await session.get(Message, message_id)
        assert texted is not None
    sealed = await seed_sealed_values(committed_db, old, STAFF, patient_id, texted.conversation_id)
    columns = {
        ("inbox_tag", "name_enc"),
        ("journey_appointment", "location_enc"),
        ("journey_appointment", "provider_enc"),
        ("inbox_message", "provider_message_id_enc"),
    }
    assert columns <= set(encrypted_columns())
    before = await _count_in(committed_db, columns, "k1")
    assert before == 5  # two tag names, location, provider, the mail's Message-ID

    new = old.with_new_key("k2")
    report = await rotate(committed_db, new, batch_size=2)
    assert report.stale_keys == set()
    assert await _count_in(committed_db, columns, "k1") == 0
    assert await _count_in(committed_db, columns, "k2") == before

    only_new = new.without("k1")  # everything reads without the retired key
    async with committed_db.reader() as session:
        assert await tags_of_conversation_in(session, only_new, texted.conversation_id) == [
            CONVERSATION_TAG
        ]
        assert await tags_of_patient_in(session, only_new, patient_id) == [PATIENT_TAG]
        appointment = (await session.scalars(select(Appointment))).one()
        assert appointment.unseal(only_new, "location") == LOCATION
        assert appointment.unseal(only_new, "provider") == PROVIDER
        mail = await session.get(Message, sealed.email_message_id)
        assert mail is not None and mail.unseal(only_new, "provider_message_id") == MAIL_ID


async def _count_in(db: Database, columns: set[tuple[str, str]], key_id: str) -> int:
    """Ciphertexts under ``key_id`` in ``columns``."""
    found = 0
    async with db.reader() as session:
        for table_name, column_name in columns:
            column = Base.metadata.tables[table_name].c[column_name]
            blobs = (await session.scalars(select(column).where(column.is_not(None)))).all()
            found += sum(key_id_of(blob) == key_id for blob in blobs)
    return found
