"""A patient and a staff member chatting, in two real browser contexts (Playwright driving
Debian's chromium) against a real `hub serve`: the patient opens the chat link, the staff
member's inbox shows the message live, the reply reaches the patient live (sent the way the
worker's send job does, in process), and the patient reloads to find the history. Then the
widget, embedded in a page of another origin, chats too. Screenshots go to
test-artifacts/chat-patient.png and chat-staff.png, and to docs/screenshots/."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from hub.audit import Actor
from hub.config import Settings
from hub.db import Database, utcnow
from hub.enums import Channel, Direction, MessageStatus, Role
from hub.inbox import actions
from hub.inbox.models import Message
from hub.inbox.schemas import NewPatient
from hub.links import chat_token
from tests.browser import ARTIFACTS, assert_accessible, sign_in_page
from tests.conftest import make_staff
from tests.staff_helpers import PASSWORD
from tests.test_chat import send_in_process
from web.app import create_app
from web.keys import RING

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_redis")]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
STAFF_EMAIL = "nia.nurse@demo-clinic.example.org"
LIVE_S = 5.0
"""Generous for a loaded CI machine; on a laptop it is well under a second."""
QUESTION = "Hi! Is the clinic <b>open</b> on Saturday? I need a form signed."
ANSWER = "Yes, 9:00 to 12:00. Bring the form & your card."
WRITTEN_OFFLINE = "Also, can my daughter come along?"
SENT_OFFLINE = ("One more thing:", "the lab is closed on Saturday.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hub:
    url: str
    app: web.Application
    db: Database
    settings: Settings


@pytest.fixture
async def hub(
    fresh_db_url: str,
    settings: Settings,
    aiohttp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Hub]:
    import web.auth

    # Until web/auth.py lists /chat/ among the pages open without signing in.
    if "/chat/" not in web.auth.PUBLIC_PREFIXES:
        monkeypatch.setattr(web.auth, "PUBLIC_PREFIXES", (*web.auth.PUBLIC_PREFIXES, "/chat/"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hub_settings = replace(settings, database_url=fresh_db_url, public_url=url, port=port)
    db = Database.connect(fresh_db_url)
    app = create_app(hub_settings)
    await aiohttp_server(app, port=port)
    try:
        yield Hub(url, app, db, hub_settings)
    finally:
        await db.dispose()


async def new_patient(hub: Hub) -> str:
    patient_id = await actions.do_create_patient(
        hub.db,
        hub.app[RING],
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone="+15550100123", verified=True),
        region="US",
    )
    return chat_token(hub.app[RING], patient_id, utcnow())


async def test_patient_and_staff_chat_live_and_the_history_survives_a_reload(
    hub: Hub, browser: Any
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await make_staff(hub.db, STAFF_EMAIL, role=Role.ADMIN.value)
    token = await new_patient(hub)
    errors: list[str] = []

    staff_context = await browser.new_context(viewport={"width": 1280, "height": 860})
    staff = await staff_context.new_page()
    staff.on("pageerror", lambda exc: errors.append(f"staff: {exc}"))
    await sign_in_page(staff, hub.url, STAFF_EMAIL, PASSWORD)
    await staff.wait_for_function("() => window.hubSocketConnected === true", timeout=10_000)

    patient_context = await browser.new_context(viewport={"width": 420, "height": 760})
    patient = await patient_context.new_page()
    patient.on("pageerror", lambda exc: errors.append(f"patient: {exc}"))
    await patient.goto(f"{hub.url}/chat/{token}")
    await patient.wait_for_selector(".hub-chat[data-connected='true']", timeout=10_000)

    # The patient writes; the staff inbox shows it without a reload.
    await patient.get_by_label("Your message").fill(QUESTION)
    await patient.get_by_role("button", name="Send").click()
    mine = patient.locator(".hub-chat-msg.from-patient")
    await patient.wait_for_selector(".hub-chat-msg.from-patient[data-id]", timeout=LIVE_S * 1000)
    row = staff.locator("#conversation-list li[data-conversation-id]").first
    await row.wait_for(state="visible", timeout=LIVE_S * 1000)
    assert "Saturday" in await row.inner_text()

    await row.locator("a").click()
    await staff.wait_for_selector("#reply-body")
    inbound = staff.locator("#thread li.inbound .body").last
    assert await inbound.inner_text() == QUESTION  # shown as text, not markup
    await staff.get_by_label("Reply to the patient").fill(ANSWER)
    await staff.get_by_role("button", name="Send").click()
    outbound = staff.locator("#thread li.outbound").last
    await outbound.wait_for(timeout=LIVE_S * 1000)
    message_id = await outbound.get_attribute("data-message-id")
    assert message_id is not None
    await send_in_process(hub.app, uuid.UUID(message_id), hub.settings)

    # The reply appears in the patient's chat live, and the staff tick reaches "read".
    theirs = patient.locator(".hub-chat-msg.from-clinic")
    await theirs.first.wait_for(timeout=LIVE_S * 1000)
    assert await theirs.locator(".hub-chat-body").inner_text() == ANSWER
    await staff.wait_for_function(
        "() => [...document.querySelectorAll('#thread li.outbound .tick')]"
        ".some(t => t.dataset.status === 'read')",
        timeout=LIVE_S * 1000,
    )
    assert await mine.locator(".hub-chat-body").inner_text() == QUESTION
    assert await patient.locator(".hub-chat-log b").count() == 0  # no markup from a message
    await assert_accessible(patient)
    await assert_accessible(staff)
    await patient.screenshot(path=str(ARTIFACTS / "chat-patient.png"), full_page=True)
    await staff.screenshot(path=str(ARTIFACTS / "chat-staff.png"), full_page=True)

    # The connection drops: what the patient writes meanwhile goes out when it is back, and
    # what staff sent meanwhile arrives, each once and in order.
    await patient_context.set_offline(True)
    await patient.wait_for_selector(".hub-chat[data-connected='false']", timeout=LIVE_S * 1000)
    await patient.get_by_label("Your message").fill(WRITTEN_OFFLINE)
    await patient.keyboard.press("Enter")
    for text in SENT_OFFLINE:
        await staff.get_by_label("Reply to the patient").fill(text)
        await staff.get_by_role("button", name="Send").click()
        await staff.locator("#thread li.outbound", has_text=text).wait_for(timeout=LIVE_S * 1000)
        sent_id = await staff.locator("#thread li.outbound", has_text=text).get_attribute(
            "data-message-id"
        )
        assert sent_id is not None
        await send_in_process(hub.app, uuid.UUID(sent_id), hub.settings)
    await patient_context.set_offline(False)
    await patient.wait_for_selector(".hub-chat[data-connected='true']", timeout=15_000)
    await patient.locator(".hub-chat-msg.from-clinic", has_text=SENT_OFFLINE[-1]).wait_for(
        timeout=LIVE_S * 1000
    )
    await patient.wait_for_selector(
        ".hub-chat-msg.from-patient[data-id]:not(.pending) >> nth=1", timeout=LIVE_S * 1000
    )
    clinic_side = await patient.locator(
        ".hub-chat-msg.from-clinic .hub-chat-body"
    ).all_inner_texts()
    assert clinic_side == [ANSWER, *SENT_OFFLINE]
    await staff.locator("#thread li.inbound", has_text=WRITTEN_OFFLINE).wait_for(
        timeout=LIVE_S * 1000
    )

    # Reloaded, the chat shows its history: each message once, in order.
    shown = await patient.locator(".hub-chat-msg .hub-chat-body").all_inner_texts()
    await patient.reload()
    await patient.wait_for_selector(".hub-chat[data-connected='true']", timeout=10_000)
    await patient.locator(".hub-chat-msg.from-clinic", has_text=SENT_OFFLINE[-1]).wait_for(
        timeout=LIVE_S * 1000
    )
    bodies = await patient.locator(".hub-chat-msg .hub-chat-body").all_inner_texts()
    assert sorted(bodies) == sorted([QUESTION, ANSWER, WRITTEN_OFFLINE, *SENT_OFFLINE])
    assert bodies == shown  # the same order as lived
    async with hub.db.reader() as session:
        reply = await session.get(Message, uuid.UUID(message_id))
        assert reply is not None
        assert (reply.channel, reply.status) == (Channel.CHAT, MessageStatus.READ)
        written = (
            await session.scalars(
                select(Message).where(
                    Message.channel == Channel.CHAT, Message.direction == Direction.INBOUND
                )
            )
        ).all()
    assert len(written) == 2  # the message written offline was stored once
    assert errors == []

    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":  # the docs' pictures, on purpose only
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("chat-patient.png", "chat-staff.png"):
            shutil.copyfile(ARTIFACTS / name, SCREENSHOTS / name)
    await patient_context.close()
    await staff_context.close()


async def test_the_widget_embedded_in_another_site_chats(
    hub: Hub, browser: Any, aiohttp_server: Any
) -> None:
    """A clinic's own site (another origin) with one container and one script tag."""
    token = await new_patient(hub)

    async def clinic_home(request: web.Request) -> web.Response:
        return web.Response(
            content_type="text/html",
            text=(
                "<!doctype html><html><head><title>Demo Clinic</title></head><body>"
                "<h1>Demo Clinic</h1><div id='hub-chat'></div>"
                f"<script src='{hub.url}/static/chat-widget.js' data-token='{token}'"
                " data-title='Demo Clinic' async></script></body></html>"
            ),
        )

    site = web.Application()
    site.router.add_get("/", clinic_home)
    server = await aiohttp_server(site)
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(str(server.make_url("/")))
    await page.wait_for_selector(".hub-chat[data-connected='true']", timeout=10_000)
    await page.get_by_label("Your message").fill("Hello from your website")
    await page.keyboard.press("Enter")
    await page.wait_for_selector(".hub-chat-msg.from-patient[data-id]", timeout=LIVE_S * 1000)
    async with hub.db.reader() as session:
        stored = (
            await session.scalars(
                select(Message).where(
                    Message.channel == Channel.CHAT, Message.direction == Direction.INBOUND
                )
            )
        ).one()
    assert stored.unseal(hub.app[RING], "body") == "Hello from your website"
    assert errors == []
    await page.close()
