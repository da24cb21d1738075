"""Tags in a real browser, now that they are sealed at rest: staff tag a conversation, see the
tags on it, and filter the inbox by a tag picked from the clinic's decrypted tag names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.enums import Role
from hub.inbox.models import Tag
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack, eventually
from tests.staff_helpers import PASSWORD

pytestmark = pytest.mark.slow

ADMIN = "tess.tagger@demo-clinic.example.org"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


async def test_staff_tag_a_conversation_and_filter_the_inbox_by_tag(
    stack: Stack, browser: Any
) -> None:
    await stack.add_staff(ADMIN, role=Role.ADMIN)
    await stack.text_from_patient("Can I move my Tuesday visit?", number="+15550100101")
    await stack.text_from_patient("Is there parking nearby?", number="+15550100102")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, ADMIN, PASSWORD)
    rows = page.locator("#conversation-list li.row")
    await rows.nth(1).wait_for()

    await page.get_by_role("link", name="Can I move my Tuesday visit?").click()
    await page.get_by_label("Tags (comma separated)").fill("Chemo-Week, oncology ,ONCOLOGY")
    await page.get_by_role("button", name="Save tags").click()
    await page.locator(".flash", has_text="Tags saved.").wait_for()
    shown = await page.locator(".thread-head .state .tag").all_inner_texts()
    assert [t for t in shown if "priority" not in t] == ["chemo-week", "oncology"]
    assert await page.get_by_label("Tags (comma separated)").input_value() == (
        "chemo-week, oncology"
    )

    await page.goto(f"{stack.hub_url}/")
    await page.get_by_text("Filters", exact=True).click()
    picker = page.get_by_label("Filter by Tag")
    assert await picker.locator("option").all_inner_texts() == ["Any", "chemo-week", "oncology"]
    await picker.select_option("oncology")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url("**tag=oncology**")
    assert await rows.count() == 1
    assert "Can I move my Tuesday visit?" in await rows.first.inner_text()
    assert await picker.input_value() == "oncology"
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOTS / "inbox-tag-filter-wide.png"))

    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOTS / "inbox-tag-filter-phone.png"), full_page=True)
    assert errors == []
    await page.close()

    async def names() -> list[bytes] | None:
        async with stack.db.reader() as session:
            found = [t.name_enc or b"" for t in (await session.scalars(select(Tag))).all()]
        return found if len(found) == 2 else None

    for sealed in await eventually(names, "two tag rows"):
        assert b"oncology" not in sealed and b"chemo" not in sealed
