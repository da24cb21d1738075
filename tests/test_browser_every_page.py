"""Every staff page, in a real browser at a laptop's and a phone's width: it answers, axe-core
finds no serious or critical violation, nothing is wider than the screen, and no script fails.

The list of pages is read from the route table: a GET route is either visited here or named
below as not a page (a fragment, an API, a file), so a new page cannot be added unchecked."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from hub.audit import Actor
from hub.enums import Role
from hub.inbox.actions import conversations
from hub.journeys import actions as journeys
from hub.templates.actions import do_seed_templates
from tests.browser import axe_violations, sign_in_page
from tests.stack import Stack
from tests.staff_helpers import PASSWORD
from tests.test_browser_journeys import FOLLOW_UP, enroll
from web.routes import setup_routes

pytestmark = pytest.mark.slow

ADMIN = "pat.pages@demo-clinic.example.org"
SYSTEM = Actor.system("test")

NOT_PAGES = {
    "/healthz": "health check (JSON)",
    "/metrics": "Prometheus text",
    "/inbox/rows/{id}": "a row fragment for live updates",
    "/conversations/{id}/panel": "the panel fragment",
    "/conversations/{id}/messages/{mid}": "a message fragment",
    "/conversations/{id}/notes/{nid}": "a note fragment",
    "/conversations/{id}/scheduled": "the scheduled replies fragment",
    "/attachments/{id}": "a stored file",
    "/media/{token}": "a file fetched by Twilio",
    "/patients/search": "the search results fragment (the list page is /patients)",
    "/mentions/{note_id}": "opens the conversation a mention is in",
    "/login/code": "reached only in the middle of signing in (tests/test_browser_second_factor.py)",
    "/unsubscribe/{token}": "a patient's page (tests/test_email_channel.py)",
    "/chat/{token}": "a patient's page (tests/test_browser_chat.py)",
    # Added by `hub demo` only (web/simulator.py), so never in this route table:
    "/simulator": "the demo's patient page (tests/test_browser_simulator.py)",
    "/simulator/feed": "the simulator's polled fragment",
    "/static": "files",
    "/journeys/sample-cohort.csv": "a sample cohort file (tests/test_cohort_mapping_web.py)",
    "/journeys/{key}/cohort/{token}/failed.csv": "a launch's rows not enrolled, downloaded",
    "/journeys/{key}/definition.yaml": "a journey's YAML, downloaded",
    "/admin/routing/rules.json": "every routing rule as JSON, downloaded",
}


WIDEST = """(width) => [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > width + 1
        && ![...e.children].some(c => c.getBoundingClientRect().right > width + 1))
    .slice(0, 3)
    .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
        + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : ''))
    .join(', ')"""
"""The innermost elements that reach past the screen's right edge, to say what to fix."""


def _get_routes() -> set[str]:
    app = web.Application()
    setup_routes(app)
    found = set()
    for route in app.router.routes():
        if route.method != "GET":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if path and not path.startswith("/api/"):
            found.add(path)
    return found


async def test_every_staff_page_is_accessible_and_fits_a_phone(stack: Stack, browser: Any) -> None:
    await do_seed_templates(stack.db)
    await journeys.do_install_journey(stack.db, SYSTEM, FOLLOW_UP, "follow_up.yaml")
    me = await stack.add_staff(ADMIN, role=Role.ADMIN)
    await enroll(stack, 1)
    await stack.text_from_patient("Can I bring my daughter to the visit?")
    conversation = await stack.conversation()
    await conversations.do_add_note(
        stack.db, stack.ring, me, conversation.id, "Checked the schedule: fine."
    )
    pages = {
        "/": "/",
        "/conversations/{id}": f"/conversations/{conversation.id}",
        "/patients": "/patients",
        "/patients/{id}": f"/patients/{conversation.patient_id}",
        "/journeys": "/journeys",
        "/journeys/{key}/steps/{step}/{column}": "/journeys/visit_follow_up/steps/thanks/sent",
        "/journeys/new": "/journeys/new",
        "/journeys/{key}/edit": "/journeys/visit_follow_up/edit",
        "/journeys/{key}/preview": "/journeys/visit_follow_up/preview",
        "/journeys/{key}/migrate": "/journeys/visit_follow_up/migrate",
        "/journeys/{key}/stop": "/journeys/visit_follow_up/stop",
        "/mentions": "/mentions",
        "/account": "/account",
        "/account/second-factor": "/account/second-factor",
        "/password": "/password",
        "/login": "/login",
        "/admin/staff": "/admin/staff",
        "/admin/teams": "/admin/teams",
        "/admin/routing": "/admin/routing",
        "/admin/canned": "/admin/canned",
        "/admin/templates": "/admin/templates",
        "/admin/templates/{key}": "/admin/templates/appointment_reminder",
        "/admin/consent": "/admin/consent",
        "/admin/phone": "/admin/phone",
        "/admin/security": "/admin/security",
        "/reports": "/reports",
        "/reports/{name}": "/reports/volume",
    }
    unchecked = _get_routes() - set(pages) - set(NOT_PAGES)
    assert unchecked == set(), f"GET routes neither visited nor named as not a page: {unchecked}"

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in_page(page, stack.hub_url, ADMIN, PASSWORD)
    problems: list[str] = []
    for width, height in ((1280, 900), (390, 844)):
        await page.set_viewport_size({"width": width, "height": height})
        for route, address in pages.items():
            if route == "/login":
                continue  # visited signed out, below
            response = await page.goto(f"{stack.hub_url}{address}")
            if response is None or response.status != 200:
                problems.append(f"{address}: HTTP {response.status if response else '-'}")
                continue
            wide = await page.evaluate("() => document.documentElement.scrollWidth")
            if wide > width:
                culprits = await page.evaluate(WIDEST, width)
                problems.append(f"{address} at {width}px: {wide}px wide, by {culprits}")
            problems += [f"{address} at {width}px: {v}" for v in await axe_violations(page)]
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    signed_out = await context.new_page()
    await signed_out.goto(f"{stack.hub_url}/login")
    problems += [f"/login: {v}" for v in await axe_violations(signed_out)]
    await context.close()
    assert problems == [], "\n".join(problems)
    assert errors == []
    await page.close()
