"""A reply never changes channel by itself (issue 14, point 1).

After a patient texts STOP, a typed reply goes nowhere until staff pick another channel: the
page says in full why each channel is refused or warned, the API answers 409 with the reason,
and no provider is asked. A care reply is never placed as a call outside the send window.
Real browser (Playwright, Debian's chromium), real `hub worker`, fake Twilio, aiosmtpd relay."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import func, select

from fakes.smtp import FakeSmtp
from hub.audit import Actor
from hub.enums import Direction, Role
from hub.inbox import actions
from hub.inbox.actions.staff import do_create_token
from hub.inbox.models import Conversation, Message
from hub.inbox.schemas import NewPatient
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack
from tests.staff_helpers import PASSWORD
from tests.twilio_helpers import PATIENT_NUMBER

pytestmark = pytest.mark.slow

PATIENT_EMAIL = "rowan.sample@example.org"
PATIENT_ZONE = "America/New_York"
STAFF_EMAIL = "nia.nurse@demo-clinic.example.org"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def evening_offset(local_hh_mm: tuple[int, int]) -> float:
    """Seconds to move every process's clock so that it is next ``local_hh_mm`` for the
    patient (21:04 is after the default 08:00-21:00 window)."""
    now = datetime.now(UTC)
    local = now.astimezone(ZoneInfo(PATIENT_ZONE))
    target = local.replace(hour=local_hh_mm[0], minute=local_hh_mm[1], second=0, microsecond=0)
    if target <= local:
        target += timedelta(days=1)
    return (target - now).total_seconds()


async def patient_who_texted_stop(stack: Stack) -> uuid.UUID:
    """A known patient with a phone and an email, in New York, at 21:04 their time, who wrote
    a question and then STOP. Returns the conversation's id."""
    assert stack.clock_file is not None
    stack.clock_file.write_text(repr(evening_offset((21, 4))))
    await actions.do_create_patient(
        stack.db,
        stack.ring,
        Actor.system("test"),
        NewPatient(
            name="Rowan Sample",
            phone=PATIENT_NUMBER,
            email=PATIENT_EMAIL,
            time_zone=PATIENT_ZONE,
            channel_order=["sms", "email", "voice"],
            verified=True,
        ),
        region="US",
    )
    await stack.text_from_patient("Can I bring my son to the appointment?")
    await stack.text_from_patient("STOP")
    return (await stack.conversation()).id


async def outbound_count(stack: Stack) -> int:
    async with stack.db.reader() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.direction == Direction.OUTBOUND)
            )
            or 0
        )


async def test_stop_then_send_sends_nothing_until_staff_choose_email(
    mail_stack: Stack, relay: FakeSmtp, browser: Any
) -> None:
    stack = mail_stack
    conversation_id = await patient_who_texted_stop(stack)
    await stack.add_staff(STAFF_EMAIL, role=Role.ADMIN)
    requests_before = len(stack.fake.requests)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, STAFF_EMAIL, PASSWORD)
    await page.goto(f"{stack.hub_url}/conversations/{conversation_id}")
    await page.wait_for_function("() => window.hubSocketConnected === true", timeout=10_000)

    # The refusal of the conversation's own channel is said in full, outside any dropdown.
    notice = page.locator("#channel-refused")
    assert await notice.is_visible()
    text = await notice.inner_text()
    assert "SMS, the channel the patient wrote on, cannot be used" in text
    assert "opted out of SMS" in text and "by replying STOP" in text
    assert "Nothing is sent until you choose another channel" in text
    # Each channel says why, and none is picked for the person.
    sms = page.get_by_role("radio", name="SMS")
    call = page.get_by_role("radio", name="Phone call")
    mail = page.get_by_role("radio", name="Email")
    assert await sms.is_disabled() and await call.is_disabled()
    assert await page.locator('input[name="channel"]:checked').count() == 0
    why_call = await page.locator("#reply-channel-voice-why").inner_text()
    assert "21:04" in why_call and "calls are only placed inside the send window" in why_call
    why_mail = await page.locator("#reply-channel-email-why").inner_text()
    assert why_mail.startswith("allowed, but it is") and "outside 08:00-21:00" in why_mail
    await assert_accessible(page)

    await page.get_by_label("Reply to the patient").fill("Yes, of course: bring him along.")
    await page.get_by_role("button", name="Send").click()
    error = page.locator("#reply-error")
    await error.wait_for(state="visible", timeout=5_000)
    assert "Not sent: patient opted out of SMS" in await error.inner_text()
    assert await page.get_by_label("Reply to the patient").input_value() == (
        "Yes, of course: bring him along."
    )
    assert await outbound_count(stack) == 0
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.locator("#reply-form").screenshot(path=str(SCREENSHOTS / "reply-refused.png"))

    await mail.check()
    await page.get_by_role("button", name="Send").click()
    await page.locator("#thread li.outbound").first.wait_for(timeout=10_000)
    await relay.wait_for(lambda r: len(r.messages) == 1)
    sent = relay.messages[0]
    assert sent.rcpt_tos == [PATIENT_EMAIL]
    body = sent.message.get_body(preferencelist=("plain",))
    assert body is not None and "bring him along" in body.get_content()
    assert len(stack.fake.requests) == requests_before  # no text, no call
    assert stack.fake.calls == []

    # On a phone the reasons wrap inside the screen instead of being cut off.
    await page.set_viewport_size({"width": 390, "height": 844})
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.locator("#reply-form").screenshot(
            path=str(SCREENSHOTS / "reply-refused-phone.png")
        )
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    box = await page.locator("#reply-channel-voice-why").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    assert "calls are only placed" in await page.locator("#reply-channel-voice-why").inner_text()
    await assert_accessible(page)
    assert errors == []
    await page.close()


async def test_api_reply_to_a_refused_channel_is_409_with_the_reason(
    stack: Stack,
) -> None:
    conversation_id = await patient_who_texted_stop(stack)
    requests_before = len(stack.fake.requests)

    token = await do_create_token(
        stack.db, Actor.system("test"), "dana.agent@demo-clinic.example.org", "reply test"
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        url = f"{stack.hub_url}/api/conversations/{conversation_id}/messages"
        # No channel: the conversation's (SMS), which the patient refused. No fallback.
        async with http.post(url, json={"body": "We got your message."}) as response:
            assert response.status == 409
            answer = await response.json()
        assert answer["error"]["code"] == "opted_out"
        assert "opted out of SMS" in answer["error"]["message"]
        # A call at 21:04 for the patient is refused too, with the reason.
        async with http.post(url, json={"body": "Calling you", "channel": "voice"}) as response:
            assert response.status == 409
            answer = await response.json()
        assert answer["error"]["code"] == "call_outside_window"
        assert "calls are only placed inside the send window" in answer["error"]["message"]

    assert await outbound_count(stack) == 0
    assert len(stack.fake.requests) == requests_before
    assert stack.fake.calls == []
    async with stack.db.reader() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None and conversation.first_responded_at is None
