"""CSAT end to end: an admin switches it on for a team in a real browser (with its delay), a
patient's conversation of that team is resolved by a person, and the real `hub worker` (its
tick on real Redis, the SDK against the fake Twilio) texts the one question once the delay is
over; the patient's "4 friendly" is stored as the score and its comment, and the conversation
stays resolved."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.consent import actions as consent
from hub.consent.models import ConsentSource, ConsentState, Purpose
from hub.db import utcnow
from hub.enums import Channel, ConversationStatus, Role
from hub.inbox import actions
from hub.inbox.actions import conversations
from hub.inbox.models import Team
from hub.inbox.schemas import NewPatient
from hub.journeys.csat_models import CsatSetting
from hub.journeys.models import SurveyAnswer
from hub.templates.actions import do_seed_templates
from tests.browser import assert_accessible, sign_in_page
from tests.stack import WAIT_S, Stack, eventually
from tests.staff_helpers import PASSWORD
from tests.twilio_helpers import PATIENT_NUMBER

pytestmark = pytest.mark.slow

ADMIN = "nia.nurse@demo-clinic.example.org"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
NOON = datetime(2026, 12, 9, 12, tzinfo=UTC)
"""Inside the patient's send window (UTC), so nothing waits for quiet hours."""


async def switch_on_in_the_browser(stack: Stack, browser: Any) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, ADMIN, PASSWORD)
    await page.goto(f"{stack.hub_url}/admin/teams")
    new = page.locator("section.card").last
    await new.get_by_label("Name").fill("Front desk")
    await new.get_by_label("After a person resolves a conversation, ask", exact=False).check()
    await new.get_by_label("Ask this many minutes after the resolution").fill("0")
    await new.get_by_label("Default team for unrouted conversations").check()
    await new.get_by_role("button", name="Save").click()
    # The browser itself refuses a delay under a minute, saying why beside the field.
    delay = new.get_by_label("Ask this many minutes after the resolution")
    assert await delay.evaluate("e => e.validity.rangeUnderflow")
    assert await delay.evaluate("e => e.validationMessage") != ""
    async with stack.db.reader() as session:
        assert (await session.scalars(select(CsatSetting))).first() is None
        assert (await session.scalars(select(Team))).first() is None

    new = page.locator("section.card").last
    await new.get_by_label("Name").fill("Front desk")
    await new.get_by_label("After a person resolves a conversation, ask", exact=False).check()
    await new.get_by_label("Ask this many minutes after the resolution").fill("30")
    await new.get_by_label("Default team for unrouted conversations").check()
    await new.get_by_role("button", name="Save").click()
    await page.locator(".flash.ok").wait_for()
    saved = page.locator("section.card").filter(has_text="Front desk").first
    assert await saved.get_by_label(
        "After a person resolves a conversation, ask", exact=False
    ).is_checked()
    delay = saved.get_by_label("Ask this many minutes after the resolution")
    assert await delay.input_value() == "30"
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await saved.locator("fieldset.csat").screenshot(
            path=str(SCREENSHOTS / "admin-team-csat.png")
        )
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await saved.locator("fieldset.csat").screenshot(
            path=str(SCREENSHOTS / "admin-team-csat-phone.png")
        )
    assert errors == []
    await page.close()


async def test_an_admin_switches_csat_on_and_a_resolution_is_asked_once(
    stack: Stack, browser: Any
) -> None:
    assert stack.clock_file is not None
    stack.clock_file.write_text(repr((NOON - datetime.now(UTC)).total_seconds()))
    await do_seed_templates(stack.db)
    await stack.add_staff(ADMIN, role=Role.ADMIN)
    await switch_on_in_the_browser(stack, browser)
    async with stack.db.reader() as session:
        team = (await session.scalars(select(Team).where(Team.name == "Front desk"))).one()
        setting = await session.get(CsatSetting, team.id)
    assert setting is not None and (setting.enabled, setting.delay_minutes) == (True, 30)

    patient_id = await actions.do_create_patient(
        stack.db,
        stack.ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=PATIENT_NUMBER, time_zone="UTC", verified=True),
        region="US",
    )
    async with stack.db.transaction() as session:  # surveys need the patient's opt-in
        change = consent.ConsentChange(ConsentSource.STAFF, "staff:test", "asked at the desk")
        session.add(
            change.record(patient_id, Channel.SMS, Purpose.SURVEYS, ConsentState.GRANTED, utcnow())
        )
    await stack.text_from_patient("Can I get my results?")
    conversation = await stack.conversation()
    assert conversation.team_id == team.id
    await stack.reply("They are ready: see you Friday.")
    await stack.fake.wait_for(lambda f: len(f.messages) == 1, timeout=WAIT_S)
    await conversations.do_set_status(
        stack.db, stack.staff, conversation.id, ConversationStatus.RESOLVED
    )

    # A tick before the delay is over sends nothing; the one after it, the question.
    await stack.ticked_at(stack.advance_clock(timedelta(minutes=29)))
    assert len(stack.fake.messages) == 1
    await stack.ticked_at(stack.advance_clock(timedelta(minutes=1, seconds=5)))
    await stack.fake.wait_for(lambda f: len(f.messages) == 2, timeout=WAIT_S)
    question = stack.fake.messages[1]
    assert question.to == PATIENT_NUMBER and "number from 1 to 5" in question.body

    await stack.text_from_patient("4 friendly")

    async def answered() -> list[tuple[int | None, str | None]]:
        async with stack.db.reader() as session:
            answers = (await session.scalars(select(SurveyAnswer))).all()
        return [(a.score, a.unseal(stack.ring, "text")) for a in answers]

    assert await eventually(answered, "the CSAT answer") == [(4, "friendly")]
    after = await stack.conversation()  # still the one conversation: no new ticket
    assert after.status is ConversationStatus.RESOLVED
    await stack.ticked_at(stack.advance_clock(timedelta(hours=2)))
    assert len(stack.fake.messages) == 2  # asked once, and nothing answers the answer
