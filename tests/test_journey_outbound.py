"""What a journey send hands the provider: the exact Outbound of a reminder by text and by
email (addresses, the status callback, the reply address and unsubscribe link), the attempt row
that makes it exactly once, and when the stalled-send sweep may ask the provider about it.
`make mutate` found no test looked at a journey's Outbound (docs/testing.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.channels.base import Outbound
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, ConversationStatus, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.delivery import STUCK_SENDING_AFTER, do_find_stuck_sends
from hub.inbox.models import Conversation, DeliveryAttempt, Message
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.dispatch import PreparedBatch, do_prepare_batch, providers_for
from hub.links import (
    Unsubscribe,
    read_reply_token,
    read_unsubscribe_token,
    reply_token,
    unsubscribe_token,
)
from hub.templates.actions import do_seed_templates

NY = ZoneInfo("America/New_York")
SYSTEM = Actor.system("test")
PUBLIC = "https://hub.example.org"
REPLY_DOMAIN = "reply.demo-clinic.example.org"
CLINIC = {"name": "Demo Clinic", "phone": "+15550109999"}
CLINIC_NUMBER = "+15550109999"
"""The number the patient texted before: the reminder must come from it."""
FRONT_DESK = "front-desk@demo-clinic.example.org"
"""The address the patient wrote to before: the reminder must come from it."""
PATIENT_PHONE, PATIENT_EMAIL = "+15550100101", "avery@example.org"
PROVIDERS = providers_for({Channel.SMS, Channel.EMAIL}, {Channel.SMS: "twilio_sms"})
"""SMS by its Twilio adapter, email by the adapter named after the channel."""
VISIT = datetime(2026, 11, 27, 10, 0, tzinfo=NY)  # a Friday 10:00 in New York
DUE = VISIT - timedelta(hours=24)


def journey(channel: Channel) -> str:
    return f"""\
key: outbound_{channel.value}
name: Reminder by {channel.value}
purpose: reminders
anchor: appointment_start
steps:
  - id: day_before
    offset: -24h
    template: appointment_reminder
    channel: {channel.value}
    asks: confirmation
"""


@pytest.fixture(autouse=True)
def fixed_today(set_clock: Any) -> None:
    """Enrolled on the Friday before; the process clock stays there (the batch runs later)."""
    set_clock(datetime(2026, 11, 20, 12, tzinfo=UTC))


async def reminder_due(db: Database, ring: KeyRing, channel: Channel) -> dict[str, Any]:
    """A patient who wrote to the clinic on ``channel`` before, enrolled for a reminder on it;
    returns the prepared batch of the step once due, and the ids it is checked against."""
    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, journey(channel), "outbound.yaml")
    patient_id = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(
            name="Avery Sample",
            phone=PATIENT_PHONE,
            email=PATIENT_EMAIL,
            time_zone="America/New_York",
            channel_order=["sms", "email"],
        ),
        region="US",
    )
    address = CLINIC_NUMBER if channel is Channel.SMS else FRONT_DESK
    async with db.transaction() as session:
        conversation = Conversation(
            patient_id=patient_id,
            channel=channel,
            channel_address=address,
            status=ConversationStatus.RESOLVED,
        )
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    await journeys.do_enroll(
        db,
        SYSTEM,
        f"outbound_{channel.value}",
        patient_id,
        appointment=journeys.NewAppointment("appt-1001", VISIT, location="Room 2"),
        now=datetime(2026, 11, 20, tzinfo=UTC),
        ring=ring,
    )
    claimed = await journeys.do_claim_due(db, now=DUE)
    batch = await do_prepare_batch(
        db,
        ring,
        claimed,
        providers=PROVIDERS,
        clinic=CLINIC,
        public_url=PUBLIC,
        reply_domain=REPLY_DOMAIN,
        now=DUE,
    )
    async with db.reader() as session:
        [message] = (await session.scalars(select(Message))).all()
    return {
        "batch": batch,
        "message": message,
        "patient_id": patient_id,
        "conversation_id": conversation_id,
    }


async def attempts(db: Database) -> list[tuple[Any, ...]]:
    async with db.reader() as session:
        rows = (await session.scalars(select(DeliveryAttempt))).all()
    return [(a.message_id, a.attempt, a.provider, a.status, a.created_at) for a in rows]


async def test_a_text_reminder_comes_from_the_clinic_number_with_its_status_callback(
    db: Database, ring: KeyRing
) -> None:
    due = await reminder_due(db, ring, Channel.SMS)
    batch: PreparedBatch = due["batch"]
    message: Message = due["message"]
    assert [r.outcome for r in batch.results] == ["sending"]
    [task] = batch.tasks
    body = message.unseal(ring, "body") or ""
    assert "Friday" in body and "Room 2" in body
    # Everything the SMS adapter turns into Twilio's request, and nothing meant for email.
    assert task.outbound == Outbound(
        message_id=message.id,
        attempt=1,
        channel=Channel.SMS,
        to_address=PATIENT_PHONE,
        body=body,
        from_address=CLINIC_NUMBER,
        status_callback_url=f"{PUBLIC}/webhooks/twilio/status?m={message.id}&a=1",
    )
    assert task.provider == "twilio_sms"
    assert task.decision.summary() == "sms: allowed (ok): allowed"
    assert task.decision.covers(due["patient_id"], Channel.SMS)
    # The first attempt is claimed in the same commit as the message: a duplicated batch or a
    # retried job finds it taken and cannot text the patient twice.
    assert await attempts(db) == [(message.id, 1, "twilio_sms", MessageStatus.SENDING, DUE)]
    assert (message.status, message.send_attempts) == (MessageStatus.SENDING, 1)


async def test_an_email_reminder_threads_back_and_can_be_unsubscribed(
    db: Database, ring: KeyRing
) -> None:
    due = await reminder_due(db, ring, Channel.EMAIL)
    batch: PreparedBatch = due["batch"]
    message: Message = due["message"]
    [task] = batch.tasks
    out = task.outbound
    subject, html = message.unseal(ring, "subject"), message.unseal(ring, "html")
    assert subject == "Reminder: your appointment on Friday, November 27"
    assert html is not None and "Room 2" in html
    token = reply_token(ring, due["conversation_id"], DUE)
    what = Unsubscribe(due["patient_id"], "reminders", message.id)
    unsubscribe = f"{PUBLIC}/unsubscribe/{unsubscribe_token(ring, what)}"
    assert out == Outbound(
        message_id=message.id,
        attempt=1,
        channel=Channel.EMAIL,
        to_address=PATIENT_EMAIL,
        body=message.unseal(ring, "body") or "",
        from_address=FRONT_DESK,
        status_callback_url=None,  # Twilio's callback means nothing to a mail server
        subject=subject,
        html=html,
        reply_to=f"reply+{token}@{REPLY_DOMAIN}",
        in_reply_to=None,
        references=(),
        automated=True,  # marked Auto-Submitted: an out-of-office reply does not answer it
        unsubscribe_url=unsubscribe,
    )
    # The patient's answer threads into the conversation they wrote in, for the token's life.
    assert read_reply_token(ring, token, DUE + timedelta(days=29)) == due["conversation_id"]
    # The one-click link unsubscribes this patient from reminders, citing this mail.
    assert read_unsubscribe_token(ring, unsubscribe.rsplit("/", 1)[-1]) == what
    assert (task.provider, task.decision.summary()) == ("email", "email: allowed (ok): allowed")
    assert await attempts(db) == [(message.id, 1, "email", MessageStatus.SENDING, DUE)]


async def test_a_journey_send_the_provider_never_answered_is_asked_about_after_two_minutes(
    db: Database, ring: KeyRing
) -> None:
    due = await reminder_due(db, ring, Channel.SMS)
    message_id: uuid.UUID = due["message"].id
    # The batch's sender is still within its provider call: nobody may ask, or resend, yet.
    early = await do_find_stuck_sends(
        db, ring, now=DUE + STUCK_SENDING_AFTER - timedelta(seconds=1)
    )
    assert early == []
    [stuck] = await do_find_stuck_sends(
        db, ring, now=DUE + STUCK_SENDING_AFTER + timedelta(seconds=1)
    )
    assert (stuck.task.outbound.message_id, stuck.claimed_at) == (message_id, DUE)
    assert stuck.task.outbound.to_address == PATIENT_PHONE
