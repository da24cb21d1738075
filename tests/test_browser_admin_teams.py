"""An admin writes a team's after-hours reply per language in a real browser (issue 14,
point 3): the switch, a text per language, a wrong language code refused in plain words with
nothing saved, then a Spanish-speaking patient texting at night gets the team's Spanish text."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.enums import Role
from hub.inbox import actions
from hub.inbox.models import Team
from hub.inbox.schemas import NewPatient
from hub.templates.actions import do_seed_templates
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack, eventually
from tests.staff_helpers import PASSWORD
from tests.test_routing import WED_NIGHT_NY
from tests.twilio_helpers import PATIENT_NUMBER

pytestmark = pytest.mark.slow

ADMIN = "nia.nurse@demo-clinic.example.org"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


async def save_new_team(page: Any, language: str, text: str) -> None:
    """Fill the "New team" form: weekday hours in New York, the after-hours reply on, and a
    text in ``language``; then Save."""
    new = page.locator("section.card").last
    await new.get_by_label("Name").fill("Front desk")
    await new.get_by_label("Time zone (IANA)").fill("America/New_York")
    await new.get_by_label("Business hours", exact=False).fill("mon-fri 09:00-17:00")
    await new.get_by_label("Answer a patient who writes while this team is closed").check()
    await new.get_by_label("Add a text in another language", exact=False).fill(language)
    await new.get_by_label("Its text").fill(text)
    await new.get_by_label("Default team for unrouted conversations").check()
    await new.get_by_role("button", name="Save").click()


async def test_an_admin_writes_the_after_hours_reply_per_language(
    stack: Stack, browser: Any
) -> None:
    await do_seed_templates(stack.db)
    await stack.add_staff(ADMIN, role=Role.ADMIN)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, ADMIN, PASSWORD)
    await page.goto(f"{stack.hub_url}/admin/teams")

    await save_new_team(page, "klingon", "Qapla'")
    flash = page.locator(".flash.error")
    await flash.wait_for()
    assert "Not saved: language 'klingon' is not a language code" in await flash.inner_text()
    async with stack.db.reader() as session:
        assert (
            await session.scalars(select(Team).where(Team.name == "Front desk"))
        ).first() is None

    await save_new_team(page, "ES", "Hola {{ first_name }}: abrimos a las 9.")
    await page.locator(".flash.ok").wait_for()
    saved = page.locator("section.card").filter(has_text="Front desk").first
    spanish = saved.get_by_label("Your text in Spanish (es;", exact=False)
    assert await spanish.input_value() == "Hola {{ first_name }}: abrimos a las 9."
    hint = await saved.locator(".hint", has_text="in their language").inner_text()
    assert "shipped translation (en, es)" in hint
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await saved.screenshot(path=str(SCREENSHOTS / "admin-team-after-hours.png"))

    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await assert_accessible(page)
    assert errors == []
    await page.close()

    assert stack.clock_file is not None
    stack.clock_file.write_text(repr((WED_NIGHT_NY - datetime.now(UTC)).total_seconds()))
    await actions.do_create_patient(
        stack.db,
        stack.ring,
        Actor.system("test"),
        NewPatient(name="Lucía Ejemplo", phone=PATIENT_NUMBER, language="es-MX"),
        region="US",
    )
    await stack.text_from_patient("¿A qué hora abren?")

    async def sent() -> bool:
        return bool(stack.fake.messages)

    await eventually(sent, "the after-hours text at the fake Twilio")
    assert [m.body for m in stack.fake.messages] == ["Hola Lucía: abrimos a las 9."]
