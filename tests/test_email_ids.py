"""Inbound Message-IDs are kept as a blind index (the original sealed), and threading, retries
and replies work as before: by the index for a patient's ids, in clear for the hub's own."""

from __future__ import annotations

import uuid
from email.message import EmailMessage

from sqlalchemy import select

from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, Direction, MessageStatus
from hub.inbox.actions.email_intake import EmailIntakeResult, do_receive_email
from hub.inbox.actions.email_out import email_extras
from hub.inbox.email_ids import INDEX_PREFIX, email_id_index
from hub.inbox.models import Conversation, InboundEvent, Message

PATIENT_ID = "3f9c.avery.sample@home-pc.patient.example"
"""The first mail's Message-ID, naming its sender as some clients do."""


def _mail(message_id: str, sender: str, *, references: str | None = None) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"Patient <{sender}>"
    mail["To"] = "frontdesk@clinic.example.org"
    mail["Subject"] = "About my visit"
    mail["Message-ID"] = f"<{message_id}>"
    if references:
        mail["In-Reply-To"] = references
        mail["References"] = references
    mail.set_content("A question about my visit.")
    return mail.as_bytes()


async def _receive(db: Database, ring: KeyRing, raw: bytes) -> EmailIntakeResult:
    return await do_receive_email(db, ring, raw, reply_domain=None, clinic={})


async def test_the_id_is_stored_as_its_index_and_a_retry_changes_nothing(
    db: Database, ring: KeyRing
) -> None:
    raw = _mail(PATIENT_ID, "avery@example.org")
    first = await _receive(db, ring, raw)
    again = await _receive(db, ring, raw)
    assert first.outcome == "message" and again.outcome == "duplicate"
    assert again.message_id == first.message_id
    async with db.reader() as session:
        message = (await session.scalars(select(Message))).one()
        event = (await session.scalars(select(InboundEvent))).one()
    assert (
        message.provider_message_id == event.provider_event_id == email_id_index(ring, PATIENT_ID)
    )
    assert message.provider_message_id.startswith(INDEX_PREFIX)
    assert PATIENT_ID not in message.provider_message_id
    assert message.unseal(ring, "provider_message_id") == PATIENT_ID


async def test_a_reply_naming_the_patients_own_mail_threads_by_the_index(
    db: Database, ring: KeyRing
) -> None:
    first = await _receive(db, ring, _mail(PATIENT_ID, "avery@example.org"))
    # From another address (a family member answering on the thread): no sender match, so
    # only the References lookup can place it.
    follow = await _receive(
        db,
        ring,
        _mail(f"{uuid.uuid4()}@other.example", "helper@example.net", references=f"<{PATIENT_ID}>"),
    )
    assert follow.threaded_by == "references"
    assert follow.conversation_id == first.conversation_id


async def test_a_reply_to_our_own_message_id_threads_and_ours_stay_in_clear(
    db: Database, ring: KeyRing
) -> None:
    first = await _receive(db, ring, _mail(PATIENT_ID, "avery@example.org"))
    ours = f"{uuid.uuid4()}@mail.clinic.example.org"  # as the SMTP adapter records it
    async with db.transaction() as session:
        session.add(
            Message(
                conversation_id=first.conversation_id,
                direction=Direction.OUTBOUND,
                channel=Channel.EMAIL,
                provider="email_smtp",
                provider_message_id=ours,
                status=MessageStatus.SENT,
            )
        )
    answer = await _receive(
        db, ring, _mail(f"{uuid.uuid4()}@x.example", "helper@example.net", references=f"<{ours}>")
    )
    assert answer.threaded_by == "references"
    assert answer.conversation_id == first.conversation_id


async def test_a_staff_reply_sends_the_patients_original_id_back(
    db: Database, ring: KeyRing
) -> None:
    first = await _receive(db, ring, _mail(PATIENT_ID, "avery@example.org"))
    async with db.transaction() as session:
        conversation = await session.get(Conversation, first.conversation_id)
        assert conversation is not None
        reply = Message(
            conversation_id=conversation.id,
            direction=Direction.OUTBOUND,
            channel=Channel.EMAIL,
            status=MessageStatus.QUEUED,
            author_id=None,
            created_at=utcnow(),
        )
        reply.seal(ring, "body", "Yes, bring them along.")
        session.add(reply)
        await session.flush()
        extras = await email_extras(
            session,
            ring,
            reply,
            conversation,
            reply_domain=None,
            public_url="https://hub.clinic.example.org",
            now=utcnow(),
        )
    assert extras["in_reply_to"] == f"<{PATIENT_ID}>"
    assert extras["references"] == (f"<{PATIENT_ID}>",)
