"""Patient search through blind indexes: name words and prefixes (accents and case aside), phone
in any spelling, email, record numbers; the index follows every write path of a name; what a
result shows (masked contact, visible conversations); searching one patient's messages; the
audit rows (no query in them)."""

from __future__ import annotations

import io
import uuid
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import func, select

from hub.audit import Actor, AuditEvent
from hub.channels.base import InboundMessage
from hub.crypto import KeyRing, associated_data
from hub.db import Database, create_engine
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.actions.email_intake import do_receive_email
from hub.inbox.models import Conversation, Message, Patient
from hub.inbox.patient_models import PatientSearchTerm
from hub.inbox.schemas import NewPatient
from hub.inbox.search_queries import patients_with_terms, rarest_first
from hub.inbox.search_terms import name_terms, read_query
from hub.journeys import actions as journeys
from hub.migrations import upgrade_url
from hub.patients.profile import do_update_patient
from hub.patients.schemas import PatientChanges
from hub.patients.search import do_search_patient_messages, do_search_patients
from hub.rights.actions.erase import do_erase_patient
from tests.conftest import ON_POSTGRES, make_staff

SYSTEM = Actor.system("test")


async def add(db: Database, ring: KeyRing, name: str | None, phone: str | None = None) -> uuid.UUID:
    new = NewPatient(name=name, phone=phone, email=None, verified=True)
    return await actions.do_create_patient(db, ring, SYSTEM, new, region="US")


async def names(db: Database, ring: KeyRing, staff: object, q: str) -> set[str]:
    result = await do_search_patients(db, ring, staff, q, region="US")  # type: ignore[arg-type]
    return {h.name or "" for h in result.hits}


async def text_in(db: Database, ring: KeyRing, phone: str, body: str) -> uuid.UUID:
    message = InboundMessage(
        "twilio_sms", "SM" + uuid.uuid4().hex, Channel.SMS, phone, "+15550109999", body
    )
    result = await actions.do_receive_inbound(db, ring, message, {}, help_text="help")
    assert result.conversation_id is not None
    return result.conversation_id


async def test_names_by_word_and_prefix_accents_and_case_aside(db: Database, ring: KeyRing) -> None:
    admin = await make_staff(db)
    await add(db, ring, "José Álvarez-Núñez")
    await add(db, ring, "Joseph Smith")
    await add(db, ring, "Jo Li")
    await add(db, ring, "Alexandrina Sample")
    await add(db, ring, "Alexander Sample")

    assert await names(db, ring, admin, "jose") == {"José Álvarez-Núñez", "Joseph Smith"}
    assert await names(db, ring, admin, "JOSÉ") == {"José Álvarez-Núñez", "Joseph Smith"}
    assert await names(db, ring, admin, "Jos nunez") == {"José Álvarez-Núñez"}
    assert await names(db, ring, admin, "alvarez") == {"José Álvarez-Núñez"}
    # Two letters: the word itself, not a prefix ("Jo" is a name; "Jo" does not find José).
    assert await names(db, ring, admin, "jo") == {"Jo Li"}
    assert await names(db, ring, admin, "li jo") == {"Jo Li"}
    # Longer than the stored prefixes: checked against the decrypted names.
    assert await names(db, ring, admin, "alexandrina") == {"Alexandrina Sample"}
    assert await names(db, ring, admin, "alexande") == {"Alexander Sample"}
    assert await names(db, ring, admin, "alexan sample") == {
        "Alexander Sample",
        "Alexandrina Sample",
    }
    assert await names(db, ring, admin, "smith jose") == {"Joseph Smith"}
    assert await names(db, ring, admin, "smithers") == set()


async def test_phone_in_any_spelling_email_and_record_number(db: Database, ring: KeyRing) -> None:
    admin = await make_staff(db)
    pid = await add(db, ring, "Avery Sample", "+15550100111")
    await do_update_patient(
        db,
        ring,
        admin,
        pid,
        PatientChanges(email="Avery@Example.org", external_ids=[("MRN", "a-0012 3")]),
        region="US",
    )
    for spelling in ("(555) 010-0111", "555.010.0111", "+1 555 010 0111", "5550100111"):
        assert await names(db, ring, admin, spelling) == {"Avery Sample"}, spelling
    assert await names(db, ring, admin, " avery@EXAMPLE.org ") == {"Avery Sample"}
    assert await names(db, ring, admin, "A-00123") == {"Avery Sample"}
    assert await names(db, ring, admin, "a-0012") == set()
    # Digits are tried as a number and as a record number (an MRN may be all digits).
    assert read_query("(555) 010-0111", "US").kinds == ["phone", "external_id"]
    assert read_query("Avery", "US").kinds == ["name"]


async def test_the_index_holds_keyed_hashes_only(db: Database, ring: KeyRing) -> None:
    pid = await add(db, ring, "Casey Fictional")
    async with db.reader() as session:
        terms = set(
            (
                await session.scalars(
                    select(PatientSearchTerm.term).where(PatientSearchTerm.patient_id == pid)
                )
            ).all()
        )
    # cas, case, casey + fic, fict, ficti, fictio: seven 32-byte HMACs, no letters of the name.
    assert terms == name_terms(ring, "Casey Fictional") and len(terms) == 7
    assert all(len(t) == 32 and b"cas" not in t.lower() for t in terms)
    # Another key ring (another clinic) makes other terms of the same name.
    assert not terms & name_terms(KeyRing.generate("x"), "Casey Fictional")


async def test_every_write_path_keeps_the_index(db: Database, ring: KeyRing) -> None:
    admin = await make_staff(db)
    pid = await add(db, ring, "Devon Testperson", "+15550100112")
    await do_update_patient(db, ring, admin, pid, PatientChanges(name="Devon Renamed"), region="US")
    assert await names(db, ring, admin, "testperson") == set()
    assert await names(db, ring, admin, "renamed devon") == {"Devon Renamed"}

    # A name cleared is findable by nothing but its contact points.
    await do_update_patient(db, ring, admin, pid, PatientChanges(name=""), region="US")
    assert await names(db, ring, admin, "devon") == set()

    # Erasure takes the terms with the patient.
    await do_update_patient(db, ring, admin, pid, PatientChanges(name="Devon Again"), region="US")
    async with db.reader() as session:
        await session.execute(sa.update(Conversation).values(status="resolved"))
    await do_erase_patient(db, SYSTEM, pid)
    async with db.reader() as session:
        left = await session.scalar(
            select(func.count())
            .select_from(PatientSearchTerm)
            .where(PatientSearchTerm.patient_id == pid)
        )
    assert left == 0


async def test_a_result_masks_contact_for_staff_who_share_no_conversation(
    db: Database, ring: KeyRing
) -> None:
    admin = await make_staff(db)
    agent = await make_staff(
        db, "alex.agent@demo-clinic.example.org", role="agent", teams=("front",)
    )
    pid = await add(db, ring, "Emery Example", "+15550100113")
    await text_in(db, ring, "+15550100113", "hello")  # unrouted: in no team

    (hit,) = (await do_search_patients(db, ring, agent, "emery", region="US")).hits
    assert hit.id == pid and hit.contact_masked and hit.phone == "+1 ••• ••• ••13"
    assert hit.conversations == []  # the conversation is in no team of the agent's
    (hit,) = (await do_search_patients(db, ring, admin, "emery", region="US")).hits
    assert not hit.contact_masked and hit.phone == "+15550100113"
    assert len(hit.conversations) == 1

    async with db.reader() as session:
        event = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "patient.search")
                .order_by(AuditEvent.seq.desc())
            )
        ).first()
    assert event is not None and event.actor == str(admin.actor)
    assert event.detail["by"] == ["name"] and event.detail["matches"] == [str(pid)]
    assert "emery" not in str(event.detail).lower() and "555" not in str(event.detail)


async def test_message_text_within_one_patient_is_bounded(db: Database, ring: KeyRing) -> None:
    admin = await make_staff(db)
    pid = await add(db, ring, "Finley Madeup", "+15550100114")
    await text_in(db, ring, "+15550100114", "My prescription for Ibuprofène ran out")
    for n in range(4):
        await text_in(db, ring, "+15550100114", f"note {n}")

    found = await do_search_patient_messages(db, ring, admin, pid, "IBUPROFENE")
    assert [h.snippet for h in found.hits] == ["My prescription for Ibuprofène ran out"]
    assert found.scanned == 5 and found.complete

    # Only the newest `bound` messages are read: the old one is out of reach, and it says so.
    found = await do_search_patient_messages(db, ring, admin, pid, "ibuprof", bound=3)
    assert found.hits == [] and found.scanned == 3 and not found.complete

    async with db.reader() as session:
        event = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "patient.messages.search")
                .order_by(AuditEvent.seq.desc())
            )
        ).first()
    assert event is not None and event.subject_id == str(pid) and event.detail["scanned"] == 3
    assert "ibuprof" not in str(event.detail).lower()


async def test_cohort_file_fhir_and_email_intake_index_the_names_they_store(
    db: Database, ring: KeyRing
) -> None:
    from hub.journeys.cohort import launch, match_or_create_patient

    admin = await make_staff(db)
    row = {"name": "Gray Synthetic", "phone": "+1 555 010 0115"}
    await match_or_create_patient(db, ring, SYSTEM, row, "US")  # the FHIR and API path
    assert await names(db, ring, admin, "gray syn") == {"Gray Synthetic"}

    shipped = resources.files("hub.journeys").joinpath("examples", "appointment_reminders.yaml")
    await journeys.do_install_journey(db, SYSTEM, shipped.read_text(encoding="utf-8"), "shipped")
    csv = (
        "name,phone,appointment_id,appointment_start\n"
        "Indigo Bulkrow,+15550100117,A1,2030-01-02T10:00:00+00:00\n"
    )
    report = await launch(
        db, ring, SYSTEM, "appointment_reminders", io.StringIO(csv, newline=""), region="US"
    )
    assert report.enrolled == 1
    assert await names(db, ring, admin, "indigo bulk") == {"Indigo Bulkrow"}

    raw = (
        b"From: Jun Mailwriter <jun@example.org>\r\nTo: desk@clinic.example.org\r\n"
        b"Subject: hi\r\nMessage-ID: <m1@example.org>\r\n\r\nHello\r\n"
    )
    await do_receive_email(db, ring, raw, reply_domain=None, clinic={})
    assert await names(db, ring, admin, "mailwri") == {"Jun Mailwriter"}


async def test_migration_indexes_existing_names(tmp_path: Path, ring: KeyRing) -> None:
    if ON_POSTGRES:
        return  # the backfill is engine-neutral SQL; the SQLite run covers it
    url = f"sqlite+aiosqlite:///{tmp_path / 'backfill.db'}"
    await upgrade_url(url, "0019")
    pid = uuid.uuid4()
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            blob = ring.encrypt_text(
                "Harper Legacy", associated_data("inbox_patient", "name_enc", pid)
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO inbox_patient (id, name_enc, language, time_zone, channel_order,"
                    " verified, unreachable, created_at, updated_at) VALUES (:id, :n, 'en', "
                    "'UTC', '[\"sms\"]', 1, '{}', '2026-01-01', '2026-01-01')"
                ),
                {"id": pid.hex, "n": blob},
            )
    finally:
        await engine.dispose()
    await upgrade_url(url, "0020", ring=ring)
    database = Database.connect(url)
    try:
        admin = await make_staff(database)
        assert await names(database, ring, admin, "harp leg") == {"Harper Legacy"}
    finally:
        await database.dispose()


async def test_unknown_number_is_found_by_its_number(db: Database, ring: KeyRing) -> None:
    admin = await make_staff(db)
    conversation_id = await text_in(db, ring, "+15550100116", "who is this")
    async with db.reader() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None and not patient.verified
        count = await session.scalar(select(func.count()).select_from(Message))
    assert count == 1
    (hit,) = (await do_search_patients(db, ring, admin, "555 010 0116", region="US")).hits
    assert hit.id == patient.id and hit.name is None and not hit.verified


async def test_a_merged_record_leaves_search_and_an_undo_brings_it_back(
    db: Database, ring: KeyRing
) -> None:
    from hub.patients.merge import do_merge_patients, do_undo_merge

    admin = await make_staff(db)
    target = await add(db, ring, "Kai Known", "+15550100118")
    raw = (
        b"From: Kai Mailalias <kai@example.org>\r\nTo: desk@clinic.example.org\r\n"
        b"Subject: hi\r\nMessage-ID: <m2@example.org>\r\n\r\nHello\r\n"
    )
    await do_receive_email(db, ring, raw, reply_domain=None, clinic={})
    (hit,) = (await do_search_patients(db, ring, admin, "mailalias", region="US")).hits
    source = hit.id
    done = await do_merge_patients(db, ring, admin, target, source)
    assert await names(db, ring, admin, "mailalias") == set()
    assert await names(db, ring, admin, "kai") == {"Kai Known"}
    # The known patient had no email: they took the merged record's (their mail finds them).
    assert await names(db, ring, admin, "kai@example.org") == {"Kai Known"}
    await do_undo_merge(db, ring, admin, done.merge_id)
    assert await names(db, ring, admin, "kai") == {"Kai Known", "Kai Mailalias"}
    assert await names(db, ring, admin, "kai@example.org") == {"Kai Mailalias"}


async def test_a_fhir_identifier_is_kept_and_matches_the_patient_again(
    db: Database, ring: KeyRing
) -> None:
    from hub.journeys.cohort import match_or_create_patient

    admin = await make_staff(db)
    first = {"name": "Lane Recordholder", "phone": "+15550100119", "identifier": "urn:mrn|MRN-7"}
    pid, created = await match_or_create_patient(db, ring, SYSTEM, first, "US")
    assert created
    assert await names(db, ring, admin, "mrn-7") == {"Lane Recordholder"}
    # A later feed: a new phone, the same record number (in another case) is the same patient.
    again = {"name": "Lane Recordholder", "phone": "+15550100120", "identifier": "urn:mrn|mrn-7"}
    assert await match_or_create_patient(db, ring, SYSTEM, again, "US") == (pid, False)
    # The same number from another system names someone else.
    other = {"name": "Other Person", "phone": "+15550100121", "identifier": "urn:other|MRN-7"}
    other_id, created = await match_or_create_patient(db, ring, SYSTEM, other, "US")
    assert created and other_id != pid


async def test_a_common_and_a_rare_word_are_read_from_the_rare_one(
    db: Database, ring: KeyRing
) -> None:
    # The rarer word drives the read whichever way round it is typed; the answer is the same,
    # newest first, and the limit still holds.
    admin = await make_staff(db)
    for n in range(12):
        await add(db, ring, f"Maria Common{n:02d}")
    older = await add(db, ring, "Maria Raresurname")
    newer = await add(db, ring, "Mariam Raresurname")
    await add(db, ring, "Tomas Raresurname")

    rare, common = (ring.blind_index("name", w) for w in ("raresu", "mar"))
    async with db.reader() as session:
        assert await rarest_first(session, [common, rare]) == [rare, common]
        assert await rarest_first(session, [rare, common]) == [rare, common]
        found = await patients_with_terms(session, [common, rare], 10)
        assert [p.id for p in found] == [newer, older]
        assert [p.id for p in await patients_with_terms(session, [rare, common], 1)] == [newer]
    assert await names(db, ring, admin, "mar raresurname") == {
        "Maria Raresurname",
        "Mariam Raresurname",
    }
