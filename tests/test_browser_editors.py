"""The editors in a real browser (issue 17): a template edit with a typo is refused in place
with the variable named and the text kept, the live preview follows the typing, and a routing
rule made in the form fires on a message tried in "try a message", which sends nothing.
axe-core at 1280 and 390x844; HUB_UPDATE_SCREENSHOTS=1 writes the docs' pictures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.enums import Role
from hub.inbox.models import Message
from hub.outbox import OutboxEvent
from hub.templates.actions import do_list_templates, do_seed_templates
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack
from tests.staff_helpers import PASSWORD

pytestmark = pytest.mark.slow

ADMIN = "rowan.admin@demo-clinic.example.org"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
TYPO = "Hi {{ patient.frist_name }}, see you at {{ appointment.start | time }}."
SHOOT = os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1"


async def _both_widths(page: Any, include: str | None = None) -> None:
    """axe-core and no sideways scroll at desktop and phone width; back to desktop."""
    for width, height in ((1280, 900), (390, 844)):
        await page.set_viewport_size({"width": width, "height": height})
        await assert_accessible(page, include=include)
        wide = await page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= width, f"{wide}px wide at {width}px"
    await page.set_viewport_size({"width": 1280, "height": 900})


async def test_a_template_previews_as_one_types_and_a_typo_is_refused_in_place(
    stack: Stack, browser: Any
) -> None:
    await do_seed_templates(stack.db)
    await stack.add_staff(ADMIN, role=Role.ADMIN)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, ADMIN, PASSWORD)

    # The list follows the search box (htmx), then one template opens.
    await page.goto(f"{stack.hub_url}/admin/templates")
    await page.get_by_label("Name").fill("today")
    await page.wait_for_function(
        "() => document.querySelectorAll('.template-table tbody tr').length === 1"
    )
    await page.get_by_role("link", name="appointment_reminder_today").click()
    await page.wait_for_url("**/admin/templates/appointment_reminder_today")

    form = page.locator("#variant-appointment_reminder_today-sms-en")
    preview = page.locator("#try-appointment_reminder_today-sms-en")
    text = form.get_by_label("Text")
    await text.fill("")
    await text.press_sequentially("Hi {{ patient.first_name | default('there') }}, see you")
    await preview.get_by_text("Hi Sam, see you").wait_for()
    assert "1 segment" in await preview.inner_text()
    await text.press_sequentially(" ✓")
    await preview.get_by_text("Hi Sam, see you ✓").wait_for()
    assert "UCS-2" in await preview.inner_text()

    await text.fill(TYPO)
    await preview.get_by_text("Would not be saved").wait_for()
    assert "patient.frist_name" in await preview.inner_text()
    await form.get_by_role("button", name="Save").click()
    form = page.locator("#variant-appointment_reminder_today-sms-en")
    alert = form.get_by_role("alert")
    await alert.wait_for()
    said = await alert.inner_text()
    assert "Not saved" in said and "patient.frist_name is not a variable" in said
    assert "did you mean patient.first_name?" in said
    assert await form.get_by_label("Text").input_value() == TYPO
    stored = {t.key: t for t in await do_list_templates(stack.db)}["appointment_reminder_today"]
    assert "frist_name" not in next(v.body for v in stored.variants if v.channel == "sms")
    if SHOOT:
        await page.locator("#lang-en").screenshot(path=str(SCREENSHOTS / "template-editor.png"))
    await _both_widths(page)
    assert errors == []


async def test_a_rule_made_in_the_form_fires_on_a_tried_message(stack: Stack, browser: Any) -> None:
    await do_seed_templates(stack.db)
    await stack.add_staff(ADMIN, role=Role.ADMIN, teams=("Billing",))
    await stack.text_from_patient("Hello, is the clinic open on Saturday?")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, ADMIN, PASSWORD)
    await page.goto(f"{stack.hub_url}/admin/routing")

    new = page.locator("#new-rule")
    await new.get_by_label("Name", exact=True).fill("Billing questions")
    await new.get_by_label("contains any of these words").fill("bill, invoice")
    await new.get_by_label("send to team").select_option("Billing")
    await new.get_by_label("set priority").select_option("high")
    await new.get_by_label("add tags").fill("billing")
    await new.get_by_label("answer automatically").fill(
        "Thanks {{ first_name }}, billing at {{ clinic_name }} will text you back today."
    )
    await new.get_by_role("button", name="Add rule").click()
    await page.get_by_text("Rule Billing questions saved.").wait_for()
    rule = page.locator(
        "article.rule", has=page.get_by_role("heading", name="1. Billing questions")
    )
    if SHOOT:
        await rule.screenshot(path=str(SCREENSHOTS / "routing-rules.png"))

    async with stack.db.reader() as session:
        messages = await session.scalar(select(func.count()).select_from(Message))
        effects = await session.scalar(select(func.count()).select_from(OutboxEvent))
    requests = len(stack.fake.requests)

    box = page.locator("#try-message")
    await box.get_by_label("Message").fill("I have a question about my invoice")
    await box.get_by_label("From").select_option(index=1)
    await box.get_by_role("button", name="Try it").click()
    result = page.locator("#try-result")
    await result.locator(".try-rules").get_by_text("Billing questions").wait_for()
    said = await result.inner_text()
    assert "Billing" in await result.locator(".try-team").inner_text()
    assert "high" in said and "billing" in said
    assert "billing at " in await result.locator(".try-reply").inner_text()
    assert "allowed" in await result.locator(".try-consent").inner_text()
    # Nothing stored, nothing sent.
    async with stack.db.reader() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == messages
        assert await session.scalar(select(func.count()).select_from(OutboxEvent)) == effects
    assert len(stack.fake.requests) == requests
    if SHOOT:
        await box.screenshot(path=str(SCREENSHOTS / "try-a-message.png"))
    await _both_widths(page)

    await page.goto(f"{stack.hub_url}/admin/consent")
    await _both_widths(page)
    assert errors == []
