"""A synthetic patient with one of everything the hub keeps about a person, for the export,
erasure and retention tests. Every stored text carries a marker the tests search for."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, text

from hub.audit import Actor
from hub.channels.twilio_voice.events import PROVIDER as VOICE_PROVIDER
from hub.config import Settings
from hub.consent.actions import ConsentChange, revoke_channel
from hub.consent.models import ConsentSource
from hub.crypto import KeyRing, associated_data
from hub.db import Database, encrypted_columns, new_id, utcnow
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.models import Attachment, Conversation, InboundEvent, Message, Note
from hub.inbox.schemas import NewPatient
from hub.journeys.models import Appointment, Enrollment, Journey, SurveyAnswer
from tests.conftest import hub_env, sync_url

STAFF = Actor.staff("00000000-0000-7000-8000-000000000042")
NAME = "Rowan Markerfield"
PHONE = "+1 (555) 013-7788"
PHONE_E164 = "+15550137788"
EMAIL = "Rowan.Markerfield@example.org"
MARKERS = ("Markerfield", "5550137788", "markerfield@example.org", "MARKER-")
"""Strings that appear only in the synthetic patient's records."""
BIG = 70 * 1024
"""Larger than the export inlines."""


@dataclass
class Seeded:
    patient_id: uuid.UUID
    conversation_id: uuid.UUID
    messages: dict[str, uuid.UUID] = field(default_factory=dict)
    recording_sid: str = ""
    bodies: dict[str, str] = field(default_factory=dict)


def recording_sid() -> str:
    return "RE" + uuid.uuid4().hex


async def seed_patient(
    db: Database,
    ring: KeyRing,
    *,
    at: datetime | None = None,
    name: str = NAME,
    phone: str = PHONE,
    email: str = EMAIL,
    marker: str = "MARKER-",
) -> Seeded:
    """The patient texted (with a photo and a big file), was answered, left a voicemail, said
    STOP, has a note, an appointment and survey answers. Messages are dated ``at`` (now)."""
    at = at or utcnow()
    pid = await actions.do_create_patient(
        db, ring, STAFF, NewPatient(name=name, phone=phone, email=email), region="US"
    )
    bodies = {
        "inbound": f"{marker}inbound itchy rash since Friday",
        "outbound": f"{marker}outbound please send a photo",
        "photo": f"{marker}photo attached",
        "voicemail": f"{marker}voicemail please call me back",
    }
    sid = recording_sid()
    async with db.transaction() as session:
        conversation = Conversation(
            patient_id=pid, channel=Channel.SMS, status=ConversationStatus.OPEN, created_at=at
        )
        session.add(conversation)
        await session.flush()
        ids: dict[str, uuid.UUID] = {}
        for n, (key, direction, channel) in enumerate(
            [
                ("inbound", Direction.INBOUND, Channel.SMS),
                ("outbound", Direction.OUTBOUND, Channel.SMS),
                ("photo", Direction.INBOUND, Channel.SMS),
                ("voicemail", Direction.INBOUND, Channel.VOICE),
            ]
        ):
            when = at + timedelta(seconds=n)
            message = Message(
                conversation_id=conversation.id,
                direction=direction,
                channel=channel,
                status=MessageStatus.DELIVERED
                if direction is Direction.OUTBOUND
                else MessageStatus.RECEIVED,
                provider=VOICE_PROVIDER if channel is Channel.VOICE else "twilio_sms",
                provider_message_id=sid if channel is Channel.VOICE else "SM" + uuid.uuid4().hex,
                created_at=when,
                sent_at=when if direction is Direction.OUTBOUND else None,
                delivered_at=when + timedelta(seconds=5)
                if direction is Direction.OUTBOUND
                else None,
            )
            message.seal(ring, "body", bodies[key])
            session.add(message)
            await session.flush()
            ids[key] = message.id
        files = [
            ("photo", "image/jpeg", "rash.jpg", f"{marker}photo-bytes".encode()),
            ("photo", "application/pdf", "referral.pdf", f"{marker}big".encode().ljust(BIG, b".")),
            ("voicemail", "audio/mpeg", "voicemail.mp3", f"{marker}audio".encode()),
        ]
        for key, content_type, filename, data in files:
            attachment = Attachment(
                message_id=ids[key],
                content_type=content_type,
                size_bytes=len(data),
                created_at=at,
            )
            attachment.seal(ring, "filename", filename)
            attachment.seal_bytes(ring, "data", data)
            session.add(attachment)
        for key, event_id, message_id in [
            ("inbound", "SM" + uuid.uuid4().hex, ids["inbound"]),
            ("voicemail", sid, ids["voicemail"]),
            ("voicemail", f"{sid}/transcript", None),
        ]:
            raw = json.dumps({"From": phone, "Body": bodies[key]}).encode()
            event = InboundEvent(
                id=new_id(),
                provider=VOICE_PROVIDER if key == "voicemail" else "twilio_sms",
                provider_event_id=event_id,
                message_id=message_id,
                received_at=at,
            )
            event.seal_bytes(ring, "payload", raw)
            session.add(event)
        note = Note(conversation_id=conversation.id, created_at=at)
        note.seal(ring, "body", f"{marker}note allergic to penicillin")
        session.add(note)
        change = ConsentChange(
            ConsentSource.KEYWORD, f"patient:{pid}", "STOP", evidence_message_id=ids["inbound"]
        )
        await revoke_channel(session, pid, Channel.SMS, change)
        journey = (
            await session.scalars(select(Journey).where(Journey.key == "post-visit-test"))
        ).first()
        if journey is None:
            journey = Journey(
                key="post-visit-test", name="Post visit", purpose="surveys", definition=""
            )
            session.add(journey)
            await session.flush()
        appointment = Appointment(
            patient_id=pid, source="api", external_id=f"A-{uuid.uuid4().hex[:8]}", start_at=at
        )
        session.add(appointment)
        await session.flush()
        enrollment = Enrollment(
            journey_id=journey.id,
            patient_id=pid,
            appointment_id=appointment.id,
            dedupe_key=f"{pid}:{appointment.id}",
            anchor_at=at,
        )
        session.add(enrollment)
        await session.flush()
        session.add(
            SurveyAnswer(enrollment_id=enrollment.id, step_id="score", score=9, created_at=at)
        )
        words = SurveyAnswer(enrollment_id=enrollment.id, step_id="comment", created_at=at)
        words.seal(ring, "text", f"{marker}survey loved the nurse")
        session.add(words)
    return Seeded(pid, conversation.id, ids, sid, bodies)


async def readable_markers(
    db: Database, ring: KeyRing, markers: tuple[str, ...] = MARKERS
) -> list[str]:
    """Every encrypted value in the database decrypted with the ring, and every plain text
    column read: where a marker can still be read, as "table.column"."""
    found: list[str] = []
    async with db.reader() as session:
        for table, column in encrypted_columns():
            rows = (await session.execute(text(f"SELECT id, {column} FROM {table}"))).all()
            for row_id, blob in rows:
                if blob is None:
                    continue
                if isinstance(row_id, str):
                    row_id = uuid.UUID(row_id)
                plain = ring.decrypt(bytes(blob), associated_data(table, column, row_id))
                if any(m.encode() in plain for m in markers):
                    found.append(f"{table}.{column}")
        audit = (await session.execute(text("SELECT detail FROM audit_event"))).all()
        found += ["audit_event.detail" for (d,) in audit if any(m in str(d) for m in markers)]
    return found


def hub_environment(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for `hub` run as an operator would, against the test's stores."""
    assert settings.keys is not None and settings.redis_url is not None
    return hub_env(
        HUB_DATABASE_URL=sync_url(settings.database_url),
        HUB_REDIS_URL=settings.redis_url,
        HUB_KEYS=settings.keys.to_spec(),
        HUB_VAR_DIR=str(tmp_path / "var"),
        HUB_LOG_FORMAT="text",
        **extra,
    )


async def hub_command(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`hub ARGS` in a subprocess, without blocking the loop (a fake Twilio may serve it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
