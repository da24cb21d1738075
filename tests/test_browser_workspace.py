"""The three-pane workspace in a real browser: open conversations without a reload, the address
and the back button, handling in place, bulk actions, the keyboard, presence, the reader's
time zone, and the phone layout (list and thread as two screens). axe-core runs at each step;
screenshots go to docs/screenshots (rewritten only with HUB_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.enums import Role
from hub.inbox.models import Conversation, Message
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack
from tests.staff_helpers import PASSWORD

pytestmark = pytest.mark.slow

ADA = "ada.agent@demo-clinic.example.org"
BEA = "bea.backup@demo-clinic.example.org"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
ZONE = "America/Chicago"


async def _shot(page: Any, name: str, *, full: bool = False) -> None:
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOTS / name), full_page=full)


async def _conversation_of(stack: Stack, body_start: str) -> Conversation:
    async with stack.db.reader() as session:
        for c in (await session.scalars(select(Conversation))).all():
            first = await session.scalar(
                select(Message).where(Message.conversation_id == c.id).order_by(Message.created_at)
            )
            if first is not None and first.unseal(stack.ring, "body").startswith(body_start):
                return c
    raise AssertionError(f"no conversation starting {body_start!r}")


async def test_workspace_open_handle_keyboard_and_back_button(stack: Stack, browser: Any) -> None:
    await stack.add_staff(ADA, role=Role.ADMIN)
    await stack.add_staff(BEA, role=Role.ADMIN)
    await stack.text_from_patient("Can I move my Tuesday visit?", number="+15550100101")
    await stack.text_from_patient("Is there parking nearby?", number="+15550100102")
    moving = await _conversation_of(stack, "Can I move")

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, ADA, PASSWORD)

    # The reader's own zone, set on the Account page, is the zone every time is written in.
    await page.goto(f"{stack.hub_url}/account")
    await page.get_by_label("Your time zone").fill(ZONE)
    await page.get_by_role("button", name="Save time zone").click()
    await page.get_by_text(f"Times are now shown in {ZONE}.").wait_for()
    await page.goto(f"{stack.hub_url}/")
    await page.wait_for_function("() => window.hubSocketConnected === true", timeout=10_000)

    # Keyboard from the top of the page: the skip link leads straight into the list.
    await page.keyboard.press("Tab")
    assert await page.evaluate("() => document.activeElement.textContent") == (
        "Skip to the conversations"
    )
    await page.keyboard.press("Enter")
    await page.keyboard.press("j")
    focused = await page.evaluate("() => document.activeElement.className")
    assert focused == "row-link"

    # Opening a conversation swaps the thread in: no reload, the address changes.
    await page.evaluate("() => { window.stillHere = true; }")
    await page.get_by_role("link", name="Can I move my Tuesday visit?").click()
    await page.wait_for_url(f"**/conversations/{moving.id}")
    await page.locator("#thread-heading").wait_for()
    assert await page.evaluate("() => window.stillHere === true")
    assert await page.locator("#conversation-list li.current").get_attribute(
        "data-conversation-id"
    ) == str(moving.id)

    # Times are in the reader's zone, not UTC.
    async with stack.db.reader() as session:
        first = await session.scalar(select(Message).where(Message.conversation_id == moving.id))
    assert first is not None
    local = first.created_at.replace(tzinfo=first.created_at.tzinfo or ZoneInfo("UTC"))
    expected = local.astimezone(ZoneInfo(ZONE)).strftime("%b %-d, %H:%M")
    assert await page.locator("#thread li.msg time").first.inner_text() == expected
    assert "UTC" not in await page.locator("#thread").inner_text()
    await assert_accessible(page)
    await _shot(page, "workspace.png")

    # Handling in place: one control each, no reload, the list row follows live.
    await page.get_by_label("Priority", exact=True).select_option("urgent")
    await page.locator("#work-notice", has_text="Priority set.").wait_for()
    row = page.locator(f"#row-{moving.id}")
    await row.locator(".tag.prio", has_text="urgent").wait_for()
    await page.keyboard.press("a")
    await page.locator("#work-notice", has_text="Assignment saved.").wait_for()
    assert await page.get_by_label("Assigned to").locator("option:checked").inner_text() == (
        "Ada.Agent"
    )
    await page.get_by_role("button", name="1 hour").click()
    await page.locator("#work-notice", has_text="Conversation is now snoozed.").wait_for()
    assert "until" in await page.locator("#thread-state").inner_text()
    await page.get_by_role("button", name="Back to open").click()
    await page.locator("#work-notice", has_text="Conversation is now open.").wait_for()
    assert await page.evaluate("() => window.stillHere === true")

    # An unknown number is named in place; the heading and the row follow without a reload.
    await page.get_by_label("Name this number").fill("Rosa Díaz")
    await page.get_by_role("button", name="Save name").click()
    await page.locator("#work-notice", has_text="Name saved.").wait_for()
    await page.locator("#thread-heading", has_text="Rosa Díaz").wait_for()
    await row.locator(".who", has_text="Rosa Díaz").wait_for()

    # / searches patients from the list: a prefix of a name finds them.
    await page.locator("#thread-heading").focus()
    await page.keyboard.press("/")
    await page.keyboard.type("ros")
    await page.locator("#search-results .patient-hit", has_text="Rosa Díaz").wait_for()
    await assert_accessible(page)
    await _shot(page, "workspace-search.png")
    await page.locator("#search-box").fill("")

    # Someone else opens and types in the same conversation: both are shown.
    other = await browser.new_page(viewport={"width": 1280, "height": 900})
    await sign_in_page(other, stack.hub_url, BEA, PASSWORD)
    await other.goto(f"{stack.hub_url}/conversations/{moving.id}")
    await other.wait_for_function("() => window.hubSocketConnected === true", timeout=10_000)
    await page.locator("#presence", has_text="Bea.Backup is viewing").wait_for()
    await other.locator("#presence", has_text="Ada.Agent is viewing").wait_for()
    await other.get_by_label("Reply to the patient").type("On it")
    await page.locator("#presence", has_text="Bea.Backup is typing").wait_for()
    await other.close()

    # The shortcut list opens with ? and closes with Esc.
    await page.locator("#thread-heading").focus()
    await page.keyboard.press("?")
    await page.get_by_role("dialog", name="Keyboard shortcuts").wait_for()
    await assert_accessible(page)
    await page.keyboard.press("Escape")
    await page.get_by_role("dialog").wait_for(state="hidden")

    # The back button returns to the list as it was; forward opens the conversation again.
    await page.go_back()
    await page.wait_for_url(lambda url: "/conversations/" not in url)
    await page.locator(".empty-work").wait_for()
    await page.go_forward()
    await page.locator("#thread-heading", has_text="Rosa Díaz").wait_for()

    # e resolves; the resolved conversation leaves the active list.
    await page.locator("#thread-heading").focus()
    await page.keyboard.press("e")
    await page.locator("#work-notice", has_text="Conversation is now resolved.").wait_for()
    await row.wait_for(state="detached")
    assert errors == []
    await page.close()


async def test_bulk_actions_and_the_phone_layout(stack: Stack, browser: Any) -> None:
    await stack.add_staff(ADA, role=Role.ADMIN)
    for n, body in enumerate(["Refill please", "Late for my visit", "Thanks!"], start=1):
        await stack.text_from_patient(body, number=f"+1555010011{n}")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, ADA, PASSWORD)
    rows = page.locator("#conversation-list li.row")
    await rows.nth(2).wait_for()
    assert await page.locator("#bulk-form").is_hidden()

    await page.get_by_label("Select Unknown · +1 555-010-0111").check()
    await page.get_by_label("Select Unknown · +1 555-010-0112").check()
    assert await page.locator("#bulk-count").inner_text() == "2"
    await page.get_by_label("Add a tag to selected").fill("front-desk")
    await page.get_by_role("button", name="Add", exact=True).click()
    await page.get_by_text("Tagged 2 conversations.").wait_for()
    tagged = page.locator(
        "#conversation-list li.row", has=page.locator(".tag", has_text="front-desk")
    )
    assert await tagged.count() == 2
    await assert_accessible(page)

    await page.get_by_label("Select Unknown · +1 555-010-0113").check()
    await page.get_by_role("button", name="Resolve selected").click()
    await page.get_by_text("Resolved 1 conversation.").wait_for()
    assert await rows.count() == 2

    # A phone: the list, then the thread as a second screen, then back; never wider than it.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{stack.hub_url}/")
    await rows.first.wait_for()
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
    await assert_accessible(page)
    await _shot(page, "workspace-phone-list.png")
    await rows.first.locator(".row-link").click()
    await page.locator("#thread-heading").wait_for()
    assert await page.locator("#list-pane").is_hidden()
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
    await assert_accessible(page)
    await _shot(page, "workspace-phone-thread.png", full=True)
    await page.get_by_role("link", name="← Conversations").click()
    await rows.first.wait_for()
    assert await page.locator("#list-pane").is_visible()
    assert errors == []
    await page.close()
