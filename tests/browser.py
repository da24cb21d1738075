"""The `browser` fixture: Playwright driving Debian's chromium (Playwright's own browser
download does not work here). Outside CI a test using it skips when chromium is missing;
under CI=true it fails, since .ci/run installs chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("HUB_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        if os.environ.get("CI") == "true":
            pytest.fail(f"chromium not found at {CHROMIUM}; .ci/run installs it with apt-get")
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium to run this)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


AXE_JS = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core from the npm registry (package.json's devDependencies; `make install` fetches it)."""
AXE_FAILING_IMPACTS = frozenset({"serious", "critical"})
"""Impacts that fail a page: these block or seriously hinder a screen-reader or keyboard user."""


async def axe_violations(page: Any, *, include: str | None = None) -> list[str]:
    """Run axe-core on the page as it is now; returns one line per serious or critical
    violation (rule, impact, the first offending elements), empty when the page passes."""
    if not AXE_JS.exists():
        pytest.fail(f"{AXE_JS} is missing: run `make install` (npm ci) first")
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated over the DevTools protocol, which the hub's Content-Security-Policy (no
        # inline scripts) does not govern; a script tag would be refused by it.
        await page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    result = await page.evaluate(
        """async (selector) => {
            const r = await axe.run(selector || document, {resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
        }""",
        include,
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {', '.join(v['nodes'])}"
        for v in result
        if v["impact"] in AXE_FAILING_IMPACTS
    ]


async def assert_accessible(page: Any, *, include: str | None = None) -> None:
    """Fail with the list of serious or critical axe-core violations on the page."""
    found = await axe_violations(page, include=include)
    assert found == [], "axe-core found:\n" + "\n".join(found)


async def sign_in_page(page: Any, hub_url: str, email: str, password: str) -> None:
    """Sign in through the login form, as a person would; returns on the inbox."""
    await page.goto(f"{hub_url}/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{hub_url}/")
