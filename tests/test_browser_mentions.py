"""Mentions and canned replies in a real browser (issue 16): "@" in a note offers colleagues by
name and the note mentions the one chosen; "/" in the reply box inserts a canned reply filled
for this patient; the Mentions page and its nav badge, live, at 1280 wide and on a phone, with
axe-core on each."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.enums import Role
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.actions.conversations import do_add_note
from hub.inbox.mention_models import Mention
from hub.inbox.models import CannedResponse, Patient, StaffUser
from hub.inbox.schemas import NewStaffUser
from hub.outbox import release_events
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack, eventually
from tests.staff_helpers import PASSWORD
from web.keys import SINK

pytestmark = pytest.mark.slow

AUTHOR = "rae.author@demo-clinic.example.org"
NOOR = "noor.patel@demo-clinic.example.org"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


async def option_click(option: Any) -> None:
    """A tap on an option chooses it (and the box keeps focus)."""
    await option.click()


def screenshots() -> bool:
    return os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1"


async def setting_up(stack: Stack) -> Any:
    for email, name in ((AUTHOR, "Rae Author"), (NOOR, "Noor Patel")):
        await actions.do_add_staff_user(
            stack.db, Actor.system("test"), NewStaffUser(email, name, PASSWORD, Role.ADMIN)
        )
    await stack.text_from_patient("Where do I park for my scan on Friday?", number="+15550100131")
    conversation = await eventually(lambda: _conversation(stack), "the patient's conversation")
    async with stack.db.transaction() as session:
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None
        patient.seal(stack.ring, "name", "Rowan Example")
        session.add(
            CannedResponse(
                title="Parking directions",
                body="Hi {{ first_name }}, parking at {{ clinic_name }} is free in lot B.",
            )
        )
        session.add(CannedResponse(title="Opening hours", body="We are open 8 to 5."))
    return conversation


async def _conversation(stack: Stack) -> Any:
    try:
        return await stack.conversation()
    except Exception:
        return None


async def test_at_mentions_a_colleague_and_slash_inserts_a_canned_reply(
    stack: Stack, browser: Any
) -> None:
    conversation = await setting_up(stack)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, AUTHOR, PASSWORD)
    await page.goto(f"{stack.hub_url}/conversations/{conversation.id}")

    note = page.locator("#note-body")
    await note.click()
    await note.press_sequentially("Can you call back? @noo")
    listbox = page.get_by_role("listbox", name="Colleagues to mention")
    await listbox.wait_for()
    options = listbox.get_by_role("option")
    assert await options.all_inner_texts() == ["Noor Patel\n@noor.patel"]
    assert await note.get_attribute("aria-controls") == await listbox.get_attribute("id")
    active = await note.get_attribute("aria-activedescendant")
    assert active and await page.locator(f"#{active}").get_attribute("aria-selected") == "true"
    await (
        page.locator("#picker-status")
        .filter(has_text="1 colleague found")
        .wait_for(state="attached")
    )
    await assert_accessible(page)
    await note.press("Enter")
    assert await note.input_value() == "Can you call back? @Noor Patel "
    assert await listbox.count() == 0
    await page.get_by_role("button", name="Add note").click()

    async def mentioned() -> list[Mention]:
        async with stack.db.reader() as session:
            return list((await session.scalars(select(Mention))).all())

    [mention] = await eventually(mentioned, "the note's mention")
    assert mention.conversation_id == conversation.id

    reply = page.locator("#reply-body")
    assert await reply.get_attribute("placeholder") == "Type / and a name for a canned reply"
    await reply.click()
    await reply.press_sequentially("/park")
    canned = page.get_by_role("listbox", name="Canned replies")
    await canned.wait_for()
    assert await canned.get_by_role("option").all_inner_texts() == [
        "Parking directions\ncanned reply"
    ]
    await reply.press("Backspace")
    await reply.press("Backspace")
    await reply.press("Backspace")
    await reply.press("Backspace")  # "/" alone lists them all; Down moves, Escape closes
    await page.wait_for_function(
        "() => document.querySelectorAll('.picker [role=option]').length === 2"
    )
    await reply.press("ArrowDown")
    assert await canned.get_by_role("option", selected=True).inner_text() == (
        "Parking directions\ncanned reply"
    )
    await reply.press("Escape")
    assert await canned.count() == 0
    await reply.press("p")
    await canned.wait_for()
    if screenshots():
        await page.screenshot(path=str(SCREENSHOTS / "canned-picker.png"))
    await reply.press("Enter")
    await page.wait_for_function(
        "() => document.querySelector('#reply-body').value.startsWith('Hi Rowan')"
    )
    assert await reply.input_value() == ("Hi Rowan, parking at The clinic is free in lot B.")

    await page.set_viewport_size({"width": 390, "height": 844})
    await reply.fill("")
    await reply.press_sequentially("/op")
    await canned.wait_for()
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
    await assert_accessible(page)
    await reply.press("Tab")
    await page.wait_for_function(
        "() => document.querySelector('#reply-body').value === 'We are open 8 to 5.'"
    )
    await note.fill("")
    await note.press_sequentially("@pat")  # a word of the name, not only its start
    await listbox.wait_for()
    assert await options.all_inner_texts() == ["Noor Patel\n@noor.patel"]
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
    await assert_accessible(page)
    if screenshots():
        await page.screenshot(path=str(SCREENSHOTS / "mention-picker-phone.png"))
    await option_click(options.first)
    assert await note.input_value() == "@Noor Patel "
    assert errors == []
    await page.close()


async def test_the_mentions_page_and_its_badge_are_live_and_read_on_opening(
    stack: Stack, browser: Any
) -> None:
    conversation = await setting_up(stack)
    async with stack.db.reader() as session:
        rae = (await session.scalars(select(StaffUser).where(StaffUser.email == AUTHOR))).one()
        author = StaffContext.of(rae)
    first = await do_add_note(
        stack.db, stack.ring, author, conversation.id, "@Noor Patel Rowan asked about parking"
    )
    await release_events(stack.db, stack.app[SINK], first.effect_ids)

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, NOOR, PASSWORD)
    badge = page.locator("#mention-count")
    await page.wait_for_function(
        "() => document.querySelector('#mention-count').textContent === '1'"
    )
    await page.get_by_role("link", name="Mentions, 1 unread").click()
    await page.wait_for_url(f"{stack.hub_url}/mentions")
    items = page.locator(".mention-list li")
    assert await items.count() == 1
    assert "New" in await items.first.inner_text()
    assert "on Rowan Example's conversation" in await items.first.inner_text()

    # A second mention arrives while the page is open: the badge counts it at once.
    await page.wait_for_function("() => window.hubSocketConnected === true")
    second = await do_add_note(
        stack.db, stack.ring, author, conversation.id, "@noor.patel and the lot B map"
    )
    await release_events(stack.db, stack.app[SINK], second.effect_ids)
    await page.wait_for_function(
        "() => document.querySelector('#mention-count').textContent === '2'"
    )
    await page.reload()
    assert await items.count() == 2
    await assert_accessible(page)
    if screenshots():
        await page.screenshot(path=str(SCREENSHOTS / "mentions.png"))

    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
    await assert_accessible(page)
    if screenshots():
        await page.screenshot(path=str(SCREENSHOTS / "mentions-phone.png"), full_page=True)

    await page.set_viewport_size({"width": 1280, "height": 900})
    await items.last.get_by_role("link").click()
    await page.wait_for_url(f"**/conversations/{conversation.id}#note-{first.note_id}")
    # The note that named her is the one the page points at.
    await page.locator(f"#note-{first.note_id}:target").wait_for()
    await page.goto(f"{stack.hub_url}/mentions")
    # Opening the conversation read both notes in it.
    assert await page.locator(".mention-list .tag.new").count() == 0
    await page.wait_for_function(
        "() => document.querySelector('#mention-count').textContent === ''"
    )
    assert await badge.inner_text() == ""
    assert errors == []
    await page.close()
