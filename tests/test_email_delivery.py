"""Email delivery status through a real `hub worker` process and a real SMTP relay (aiosmtpd):
mail the relay accepted is `sent`, never left `sending`; a later bounce moves it to `failed`
(forward only: a second report of the same failure changes nothing)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from fakes.smtp import FakeSmtp
from hub.audit import Actor
from hub.enums import Channel, ConversationStatus, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.email_intake import do_receive_email
from hub.inbox.models import Conversation, Message
from hub.inbox.schemas import NewPatient
from hub.outbox import release_events
from tests.stack import Stack, eventually
from tests.test_email_channel import dsn_for
from web.keys import SINK

pytestmark = pytest.mark.slow

DOMAIN = "reply.demo-clinic.example.org"
CLINIC = "clinic@demo-clinic.example.org"
PATIENT = "rowan.example@example.org"


@pytest.fixture
async def mail_stack(stack: Stack) -> AsyncIterator[tuple[Stack, FakeSmtp]]:
    """The e2e stack whose worker sends mail through a local relay."""
    relay = FakeSmtp()
    await relay.start()
    stack.stop_worker()
    assert stack.worker_env is not None
    stack.worker_env.update(
        HUB_SMTP_URL=relay.url,
        HUB_EMAIL_FROM=f"Demo Clinic <{CLINIC}>",
        HUB_REPLY_DOMAIN=DOMAIN,
    )
    stack.start_worker()
    try:
        yield stack, relay
    finally:
        stack.stop_worker()
        await relay.stop()


async def email_conversation(stack: Stack) -> uuid.UUID:
    patient_id = await actions.do_create_patient(
        stack.db,
        stack.ring,
        Actor.system("test"),
        NewPatient(name="Rowan Example", email=PATIENT, time_zone="UTC", verified=True),
        region="US",
    )
    async with stack.db.transaction() as session:
        conversation = Conversation(
            patient_id=patient_id, channel=Channel.EMAIL, status=ConversationStatus.OPEN
        )
        session.add(conversation)
        await session.flush()
        return conversation.id


async def test_mail_the_relay_accepted_is_sent_and_a_later_bounce_fails_it(
    mail_stack: tuple[Stack, FakeSmtp],
) -> None:
    stack, relay = mail_stack
    conversation_id = await email_conversation(stack)
    queued = await actions.do_reply(
        stack.db, stack.ring, stack.staff, conversation_id, "Your results are ready."
    )
    await release_events(stack.db, stack.app[SINK], queued.effect_ids)

    await relay.wait_for(lambda f: len(f.messages) == 1, timeout=30)
    mail = relay.messages[0].message
    assert mail["To"] == PATIENT
    await eventually(
        lambda: stack.status_is(queued.message_id, MessageStatus.SENT), "the mail to be sent"
    )
    message = await stack.message(queued.message_id)
    assert message.sent_at is not None and message.provider == "email_smtp"
    assert f"<{message.provider_message_id}>" == mail["Message-ID"]

    # The patient's server bounces it an hour later: the sent mail is failed, with the reason.
    bounce = dsn_for(mail["Message-ID"], PATIENT)
    result = await do_receive_email(
        stack.db, stack.ring, bounce, reply_domain=DOMAIN, clinic={"name": "Demo Clinic"}
    )
    assert result.outcome == "bounce" and result.effect_ids  # staff screens are told
    message = await stack.message(queued.message_id)
    assert message.status is MessageStatus.FAILED
    assert message.error_reason is not None and "5.1.1" in message.error_reason

    # Another server reporting the same failure (its own DSN) changes nothing further.
    again = await do_receive_email(
        stack.db,
        stack.ring,
        dsn_for(mail["Message-ID"], PATIENT).replace(b"5.1.1", b"5.2.1"),
        reply_domain=DOMAIN,
        clinic={},
    )
    assert again.outcome == "bounce" and again.effect_ids == ()
    async with stack.db.reader() as session:
        rows = (
            await session.scalars(select(Message).where(Message.conversation_id == conversation_id))
        ).all()
    assert [(m.status, "5.1.1" in (m.error_reason or "")) for m in rows] == [
        (MessageStatus.FAILED, True)
    ]
