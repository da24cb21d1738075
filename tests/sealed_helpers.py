"""Seeds the values sealed beside names and bodies (tags, an appointment's place, an inbound
Message-ID) for the at-rest and rotation tests, through the actions that store them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage

from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.inbox.actions.email_intake import do_receive_email
from hub.inbox.actions.tags import set_conversation_tags_in
from hub.journeys import actions as journeys
from hub.templates.actions import do_seed_templates

REMINDERS = """\
key: sealed_reminders
name: Sealed-values reminders
purpose: reminders
anchor: appointment_start
steps:
  - {id: sms_24h, offset: -24h, template: appointment_reminder, channels: [sms]}
"""
PATIENT_TAG = "oncology-patient"
CONVERSATION_TAG = "chemo-week"
LOCATION = "Hematology Ward 9"
PROVIDER = "Dr. Quinn Marlowe"
MAIL_ID = "avery.private.7731@patient-mail.example"
"""A Message-ID as some mail clients write them: naming the sender."""


@dataclass(frozen=True)
class Sealed:
    email_message_id: uuid.UUID
    email_conversation_id: uuid.UUID


def _mail(sender: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"Avery Sample <{sender}>"
    mail["To"] = "frontdesk@clinic.example.org"
    mail["Subject"] = "Question"
    mail["Message-ID"] = f"<{MAIL_ID}>"
    mail.set_content("Can I bring someone along?")
    return mail.as_bytes()


async def seed_sealed_values(
    db: Database,
    ring: KeyRing,
    actor: Actor,
    patient_id: uuid.UUID,
    conversation_id: uuid.UUID,
    *,
    sender: str = "avery@example.org",
) -> Sealed:
    """Tag the conversation, book the patient an appointment with a place, and receive a mail
    with MAIL_ID. The patient's own tag is the caller's (``NewPatient(tags=[PATIENT_TAG])``)."""
    async with db.transaction() as session:
        await set_conversation_tags_in(session, ring, conversation_id, [CONVERSATION_TAG])
    await do_seed_templates(db)
    await journeys.do_install_journey(db, actor, REMINDERS, "sealed.yaml")
    appointment = journeys.NewAppointment(
        "A-77", utcnow() + timedelta(days=5), location=LOCATION, provider=PROVIDER
    )
    await journeys.do_enroll(
        db, actor, "sealed_reminders", patient_id, appointment=appointment, ring=ring
    )
    mailed = await do_receive_email(db, ring, _mail(sender), reply_domain=None, clinic={})
    assert mailed.message_id is not None and mailed.conversation_id is not None
    return Sealed(mailed.message_id, mailed.conversation_id)
