"""A person turns on the second factor in a real browser, as they would with their phone: the
account page, the QR code and the key shown as text (the test's "phone" is pyotp reading the
key off the page), the recovery codes shown once; then signs out and back in with a code.
At 1280 px and at a phone's 390 px, with axe-core."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyotp
import pytest

from hub.db import utcnow
from hub.enums import Role
from tests.browser import assert_accessible, sign_in_page
from tests.stack import Stack
from tests.staff_helpers import PASSWORD

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
WIDTHS = {"wide": 1280, "phone": 390}


async def _fits(page: Any, width: int) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth") <= width
    await assert_accessible(page)


async def _shot(page: Any, name: str) -> None:
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOTS / f"second-factor-{name}.png"), full_page=True)


@pytest.mark.parametrize("size", list(WIDTHS))
async def test_turn_on_the_second_factor_then_sign_in_with_a_code(
    stack: Stack, browser: Any, size: str
) -> None:
    width = WIDTHS[size]
    email = f"kim.{size}@demo-clinic.example.org"
    await stack.add_staff(email, role=Role.AGENT)
    page = await browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, email, PASSWORD)

    await page.locator(".me a[href='/account']").click()  # their name in the header
    await page.wait_for_url(f"{stack.hub_url}/account")
    assert "Off: your password alone signs you in" in await page.locator("main").inner_text()
    await page.get_by_role("link", name="Set up a second factor").click()
    qr = page.get_by_role("img", name="QR code to scan with your authenticator app")
    await qr.wait_for()
    assert (await qr.bounding_box())["width"] >= 150  # big enough to scan off a screen
    secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")
    font = await page.locator("#totp-secret").evaluate("e => getComputedStyle(e).fontFamily")
    assert "mono" in font.lower()
    await _fits(page, width)
    await _shot(page, f"setup-{size}")

    phone = pyotp.TOTP(secret)
    await page.get_by_label("Code from the app").fill(phone.at(utcnow(), counter_offset=5))
    await page.get_by_role("button", name="Turn on").click()
    await page.locator(".flash.error").wait_for()
    assert "That code is not right" in await page.locator(".flash.error").inner_text()
    await page.get_by_label("Code from the app").fill(phone.at(utcnow()))
    await page.get_by_role("button", name="Turn on").click()
    codes = page.get_by_role("list", name="Recovery codes").locator("code")
    await codes.first.wait_for()
    assert await codes.count() == 10
    assert "shown only now" in await page.locator("main").inner_text()
    await _fits(page, width)
    await _shot(page, f"recovery-codes-{size}")

    await page.goto(f"{stack.hub_url}/account")
    text = await page.locator("main").inner_text()
    assert "On since" in text and "10 of 10 recovery codes left" in text
    await _fits(page, width)
    await _shot(page, f"account-{size}")

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{stack.hub_url}/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{stack.hub_url}/login/code")
    await _fits(page, width)
    await _shot(page, f"sign-in-code-{size}")
    # The code that turned it on was used: the phone's next one signs in.
    next_code = phone.at(utcnow(), counter_offset=1)
    await page.get_by_label("Code").fill(next_code)
    await page.get_by_role("button", name="Verify").click()
    await page.wait_for_url(f"{stack.hub_url}/")
    assert errors == []
    await page.close()


@pytest.mark.parametrize("size", list(WIDTHS))
async def test_an_admin_requires_it_of_admins_and_is_sent_to_set_it_up(
    stack: Stack, browser: Any, size: str
) -> None:
    width = WIDTHS[size]
    email = f"ada.{size}@demo-clinic.example.org"
    await stack.add_staff(email, role=Role.ADMIN)
    page = await browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, email, PASSWORD)
    await page.goto(f"{stack.hub_url}/admin/staff")
    await page.get_by_role("link", name="Sign-in security").click()
    await page.wait_for_url(f"{stack.hub_url}/admin/security")
    assert "optional for everyone" in await page.locator("#policy-state").inner_text()
    await _fits(page, width)
    await _shot(page, f"admin-policy-{size}")

    await page.get_by_label("Require a second factor for admins", exact=False).check()
    await page.get_by_role("button", name="Save").click()
    # This admin has none: from now on every page sends them to set it up.
    await page.wait_for_url(f"{stack.hub_url}/account/second-factor")
    notice = "The clinic requires a second factor for admins: set it up to go on."
    assert notice in await page.locator("main").inner_text()
    await page.goto(f"{stack.hub_url}/admin/staff")
    await page.wait_for_url(f"{stack.hub_url}/account/second-factor")
    await _fits(page, width)

    secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")
    await page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).at(utcnow()))
    await page.get_by_role("button", name="Turn on").click()
    await page.get_by_role("list", name="Recovery codes").wait_for()
    await page.get_by_role("link", name="Go to the inbox").click()
    await page.wait_for_url(f"{stack.hub_url}/")
    await page.goto(f"{stack.hub_url}/admin/security")
    assert "required for admins" in await page.locator("#policy-state").inner_text()
    await page.goto(f"{stack.hub_url}/account")
    assert "so yours stays on" in await page.locator("main").inner_text()
    await _fits(page, width)
    assert errors == []
    await page.close()
