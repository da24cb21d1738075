"""WhatsApp through the Twilio number (issue 14, point 15): a WhatsApp-shaped webhook
(From=whatsapp:+…) is stored as WhatsApp, not as an SMS whose replies Twilio would refuse; until
a WhatsApp channel exists every reply is refused with the reason, and nothing is sent. A STOP on
WhatsApp opts the patient out of WhatsApp only (WhatsApp's opt-out is per business)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from hub.audit import Actor
from hub.channels.base import WebhookRequest
from hub.channels.twilio_sms.adapter import TwilioSmsAdapter
from hub.consent import actions as consent
from hub.db import Database
from hub.enums import Channel, Direction
from hub.inbox.actions.staff import do_create_token
from hub.inbox.models import Conversation, Message, Patient
from hub.journeys.definitions import JourneyInvalid
from hub.journeys.parse import parse_journey
from hub.templates import TemplateInvalid
from hub.templates.actions import do_save_variant, do_seed_templates
from tests.stack import Stack
from tests.twilio_helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CLINIC_NUMBER,
    PATIENT_NUMBER,
    fixture,
    sign,
)

NOT_CONNECTED = "WhatsApp is not connected on this hub yet; reply by another channel"


def parsed(name: str) -> Any:
    adapter = TwilioSmsAdapter(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    params = fixture(name)["params"]
    return adapter.parse_inbound(
        WebhookRequest("https://hub.example.org/webhooks/twilio/sms", params)
    )


def test_whatsapp_payloads_are_read_as_whatsapp() -> None:
    text = parsed("inbound_whatsapp")
    assert (text.channel, text.from_address, text.to_address) == (
        Channel.WHATSAPP,
        PATIENT_NUMBER,
        CLINIC_NUMBER,
    )
    assert text.body == "Hello, is the clinic open on Saturday?"
    button = parsed("inbound_whatsapp_button")
    assert (button.channel, button.body) == (Channel.WHATSAPP, "STOP")
    location = parsed("inbound_whatsapp_location")
    assert location.body == (
        "Shared a location: 39.7817, -89.6501 (Springfield Example Pharmacy, 100 Example Ave, "
        "Springfield, IL 62701)"
    )
    assert parsed("inbound_sms").channel is Channel.SMS


def test_no_journey_sends_on_whatsapp_and_no_channel_order_holds_it() -> None:
    definition = """\
key: wa
name: WhatsApp reminders
purpose: reminders
anchor: appointment_start
steps:
  - {id: one, offset: -1d, template: appointment_reminder, channels: [whatsapp, sms]}
"""
    with pytest.raises(JourneyInvalid, match='"whatsapp" is not a channel'):
        parse_journey(definition, "wa.yaml")
    patient = Patient(channel_order=["whatsapp", "sms", "email"])
    assert patient.channels() == [Channel.SMS, Channel.EMAIL]


async def post_fixture(stack: Stack, name: str) -> None:
    params = fixture(name)["params"]
    url = f"{stack.hub_url}/webhooks/twilio/sms"
    headers = {"X-Twilio-Signature": sign(url, params)}
    async with aiohttp.ClientSession() as http, http.post(url, data=params, headers=headers) as r:
        assert r.status == 200, await r.text()


@pytest.mark.slow
async def test_a_whatsapp_message_is_stored_as_such_and_replies_are_refused(
    stack: Stack,
) -> None:
    await post_fixture(stack, "inbound_whatsapp")
    async with stack.db.reader() as session:
        conversation = (await session.scalars(select(Conversation))).one()
        message = (await session.scalars(select(Message))).one()
    assert (conversation.channel, message.channel) == (Channel.WHATSAPP, Channel.WHATSAPP)
    assert conversation.channel_address == CLINIC_NUMBER

    token = await do_create_token(
        stack.db, Actor.system("test"), "dana.agent@demo-clinic.example.org", "whatsapp test"
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{stack.hub_url}/api/conversations") as response:
            assert response.status == 200
            [row] = (await response.json())["items"]
        assert (row["id"], row["channel"]) == (str(conversation.id), "whatsapp")
        url = f"{stack.hub_url}/api/conversations/{conversation.id}"
        async with http.get(url) as response:
            view = await response.json()
        options = {o["channel"]: o for o in view["patient"]["channels"]}
        assert options["whatsapp"]["available"] is False
        assert options["whatsapp"]["reason"] == NOT_CONNECTED
        async with http.post(f"{url}/messages", json={"body": "We are open 9-12."}) as response:
            assert response.status == 409
            answer = await response.json()
        assert answer["error"] == {"status": 409, "message": NOT_CONNECTED, "code": "not_connected"}

    async with stack.db.reader() as session:
        outbound = await session.scalar(
            select(func.count()).select_from(Message).where(Message.direction == Direction.OUTBOUND)
        )
    assert outbound == 0  # no auto-reply either: the gate refuses every send on WhatsApp
    assert stack.fake.requests == [] and stack.fake.messages == []


@pytest.mark.slow
async def test_stop_on_whatsapp_opts_out_of_whatsapp_only(stack: Stack) -> None:
    await post_fixture(stack, "inbound_whatsapp_button")
    async with stack.db.reader() as session:
        patient = (await session.scalars(select(Patient))).one()
        assert await consent.is_opted_out(session, patient.id, Channel.WHATSAPP)
        assert not await consent.is_opted_out(session, patient.id, Channel.SMS)
    assert stack.fake.requests == []


async def test_no_template_is_saved_for_whatsapp(db: Database) -> None:
    await do_seed_templates(db)
    with pytest.raises(TemplateInvalid, match="unknown channel 'whatsapp'; expected sms, email"):
        await do_save_variant(
            db, Actor.system("test"), "appointment_reminder", "whatsapp", "en", None, "Hi", None
        )
