"""The composer end to end (issue 16), through a real `hub worker` process: a PDF goes by MMS
(the fake Twilio gets a MediaUrl under HUB_PUBLIC_URL and can fetch the file from it), a file
goes by email as a MIME part the aiosmtpd relay receives, and a scheduled reply is sent by the
worker's tick at its time, or kept as a failed message when the patient opted out meanwhile."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import select

from fakes.smtp import FakeSmtp
from hub.audit import Actor
from hub.db import utcnow
from hub.enums import Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.scheduled import do_schedule_reply
from hub.inbox.actions.staff import do_create_token
from hub.inbox.models import Message
from hub.inbox.scheduled_models import ScheduledMessage, ScheduledState
from hub.inbox.schemas import NewPatient
from tests.stack import Stack, eventually
from tests.twilio_helpers import PATIENT_NUMBER

pytestmark = pytest.mark.slow

PDF = b"%PDF-1.4\n% synthetic discharge summary\n%%EOF\n"
PATIENT_EMAIL = "rowan.sample@example.org"


async def post_with_file(
    stack: Stack, body: str, channel: str, name: str, content_type: str, data: bytes
) -> uuid.UUID:
    token = await do_create_token(
        stack.db, Actor.system("test"), "dana.agent@demo-clinic.example.org", "compose e2e"
    )
    conversation = await stack.conversation()
    form = aiohttp.FormData()
    form.add_field("body", body)
    form.add_field("channel", channel)
    form.add_field("files", io.BytesIO(data), filename=name, content_type=content_type)
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http,
        http.post(f"{stack.hub_url}/api/conversations/{conversation.id}/messages", data=form) as r,
    ):
        assert r.status == 202, await r.text()
        return uuid.UUID((await r.json())["message_id"])


async def test_a_pdf_goes_by_mms_and_twilio_can_fetch_it_once_signed(stack: Stack) -> None:
    await stack.text_from_patient("Can you send me the discharge summary?")
    message_id = await post_with_file(
        stack, "Here it is.", "sms", "summary.pdf", "application/pdf", PDF
    )
    await eventually(lambda: stack.status_is(message_id, MessageStatus.DELIVERED), "delivered")
    [sent] = stack.fake.messages
    assert sent.body == "Here it is." and sent.to == PATIENT_NUMBER
    [url] = sent.media_urls
    assert url.startswith(f"{stack.hub_url}/media/")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 200 and await r.read() == PDF
            assert r.content_type == "application/pdf"
        async with http.get(url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb")) as r:
            assert r.status == 404


async def test_a_file_by_email_reaches_the_relay_as_a_mime_part(
    mail_stack: Stack, relay: FakeSmtp
) -> None:
    stack = mail_stack
    await actions.do_create_patient(
        stack.db,
        stack.ring,
        Actor.system("test"),
        NewPatient(name="Rowan Sample", phone=PATIENT_NUMBER, email=PATIENT_EMAIL, verified=True),
        region="US",
    )
    await stack.text_from_patient("Please email me the form.")
    message_id = await post_with_file(
        stack, "The form is attached.", "email", "form.pdf", "application/pdf", PDF
    )
    await relay.wait_for(lambda f: len(f.messages) == 1)
    mail = relay.messages[0].message
    assert relay.messages[0].rcpt_tos == [PATIENT_EMAIL]
    [part] = list(mail.iter_attachments())
    assert part.get_filename() == "form.pdf" and part.get_content_type() == "application/pdf"
    assert part.get_content() == PDF
    body = mail.get_body(("plain",))
    assert body is not None and "The form is attached." in body.get_content()
    await eventually(lambda: stack.status_is(message_id, MessageStatus.SENT), "sent")


async def test_the_worker_sends_a_scheduled_reply_at_its_time(stack: Stack) -> None:
    await stack.text_from_patient("When are my results due?")
    conversation = await stack.conversation()
    view = await do_schedule_reply(
        stack.db,
        stack.ring,
        stack.staff,
        conversation.id,
        "Your results are ready.",
        utcnow() + timedelta(minutes=10),
    )
    # A tick before its time sends nothing.
    await stack.ticked_at(utcnow())
    assert stack.fake.messages == []

    at = stack.advance_clock(timedelta(minutes=11))
    await stack.ticked_at(at)
    await stack.fake.wait_for(lambda f: len(f.messages) == 1, timeout=30)
    assert stack.fake.messages[0].body == "Your results are ready."
    async with stack.db.reader() as session:
        row = await session.get(ScheduledMessage, view.id)
        assert row is not None and row.state is ScheduledState.SENT
        assert row.message_id is not None
    await eventually(
        lambda: stack.status_is(row.message_id, MessageStatus.DELIVERED),  # type: ignore[arg-type]
        "delivered",
    )
    # Later ticks leave it alone: still one message at the provider.
    await stack.ticked_at(stack.advance_clock(timedelta(seconds=5)))
    assert len(stack.fake.messages) == 1


async def test_a_stop_before_its_time_leaves_a_failed_message_with_the_reason(
    stack: Stack,
) -> None:
    await stack.text_from_patient("ok")
    conversation = await stack.conversation()
    await do_schedule_reply(
        stack.db,
        stack.ring,
        stack.staff,
        conversation.id,
        "Reminder: fasting from midnight.",
        utcnow() + timedelta(minutes=5),
    )
    await stack.text_from_patient("STOP")
    await stack.ticked_at(stack.advance_clock(timedelta(minutes=6)))

    async def failed() -> Message | None:
        async with stack.db.reader() as session:
            stmt = select(Message).where(
                Message.direction == Direction.OUTBOUND, Message.status == MessageStatus.FAILED
            )
            return (await session.scalars(stmt)).first()

    message = await eventually(failed, "the failed scheduled reply")
    assert message.unseal(stack.ring, "body") == "Reminder: fasting from midnight."
    assert (message.error_reason or "").startswith("scheduled reply not sent: patient opted out")
    assert [m for m in stack.fake.messages if m.body.startswith("Reminder")] == []
