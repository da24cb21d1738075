"""Secrets that must not travel or stay where they should not: bearer links in the access log
(through a real server and aiohttp's own access logger), a one-time password in the flash
cookie, and a flash cookie sent in clear under https."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.inbox import actions
from hub.inbox.models import StaffUser
from hub.inbox.schemas import NewPatient
from hub.links import Unsubscribe, chat_token, unsubscribe_token
from hub.logs import PhiFilter
from tests.conftest import make_staff
from tests.staff_helpers import PASSWORD, csrf_of, sign_in
from web.app import create_app
from web.render import FLASH_COOKIE

pytestmark = pytest.mark.usefixtures("fresh_redis")

ADMIN = "ada.admin@demo-clinic.example.org"
ACCESS_LINE = re.compile(r'"GET (?P<path>\S+) HTTP/1\.1" (?P<status>\d{3}) (?P<size>\d+) ')


class _Lines(logging.Handler):
    """Access lines as the filter leaves them, beside the same lines before it ran, and an
    event per line so a test waits for the one it caused."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.raw: list[str] = []
        self.arrived = asyncio.Event()
        self.phi_filter = PhiFilter()

    def emit(self, record: logging.LogRecord) -> None:
        self.raw.append(record.getMessage())
        self.phi_filter.filter(record)  # as the handler configure_logging installs does
        self.lines.append(record.getMessage())
        self.arrived.set()


@pytest.fixture
def access_lines() -> Iterator[_Lines]:
    logger = logging.getLogger("aiohttp.access")
    handler = _Lines()
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # aiohttp skips formatting the line below INFO
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _http(settings: Settings) -> Settings:
    # Plain http so the test client sends the (otherwise Secure) session cookie.
    return replace(settings, public_url="http://127.0.0.1")


async def test_access_log_hides_bearer_links_and_keeps_status_and_size(
    db: Database, settings: Settings, ring: KeyRing, aiohttp_client: Any, access_lines: _Lines
) -> None:
    client: TestClient = await aiohttp_client(create_app(settings, db=db))
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone="+15550100142"),
        region="US",
    )
    links = {
        "/chat/": chat_token(ring, patient_id, datetime.now(UTC)),
        "/unsubscribe/": unsubscribe_token(ring, Unsubscribe(patient_id, "surveys", uuid.uuid4())),
    }
    for prefix, token in links.items():
        access_lines.arrived.clear()
        response = await client.get(prefix + token)
        body = await response.read()
        assert response.status == 200, body
        await asyncio.wait_for(access_lines.arrived.wait(), timeout=5)
        line, raw = access_lines.lines[-1], access_lines.raw[-1]
        match = ACCESS_LINE.search(line)
        assert match, line
        assert match["path"] == prefix + "[token]" and match["status"] == "200"
        # Only the token changed: status, size and the rest of the line are as aiohttp wrote them.
        assert line == raw.replace(token, "[token]") and token not in line


async def test_a_new_staff_password_is_shown_on_the_page_never_in_a_cookie(
    db: Database, settings: Settings, aiohttp_client: Any
) -> None:
    client: TestClient = await aiohttp_client(create_app(_http(settings), db=db))
    await make_staff(db, ADMIN, role="admin")
    assert (await sign_in(client, ADMIN)).status == 303
    csrf = await csrf_of(client, "/admin/staff")
    response = await client.post(
        "/admin/staff",
        data={"name": "Noa New", "email": "noa.new@demo-clinic.example.org", "role": "agent"},
        headers={"X-CSRF-Token": csrf},
        allow_redirects=False,
    )
    page = await response.text()
    assert response.status == 200, page
    assert FLASH_COOKIE not in response.cookies
    shown = re.search(r"<code>([^<]+)</code>", page)
    assert shown, page
    password = shown.group(1)
    # The page shows the real password: the new person signs in with it.
    client.session.cookie_jar.clear()
    assert (await sign_in(client, "noa.new@demo-clinic.example.org", password)).status == 303
    async with db.reader() as session:
        added = await session.scalar(
            select(StaffUser).where(StaffUser.email == "noa.new@demo-clinic.example.org")
        )
    assert added is not None and added.must_change_password
    # Shown once: the staff list does not show it again.
    client.session.cookie_jar.clear()
    assert (await sign_in(client, ADMIN)).status == 303
    assert password not in await (await client.get("/admin/staff")).text()


@pytest.mark.parametrize(
    ("public_url", "secure"), [("https://hub.example.org", True), ("http://127.0.0.1", False)]
)
async def test_the_flash_cookie_is_secure_under_https(
    db: Database, settings: Settings, aiohttp_client: Any, public_url: str, secure: bool
) -> None:
    client: TestClient = await aiohttp_client(
        create_app(replace(settings, public_url=public_url), db=db)
    )
    await make_staff(db, ADMIN, role="admin")
    # The test client keeps Secure cookies to itself on plain http: hand them over by name.
    login_csrf = (await client.get("/login")).cookies["hub_login_csrf"].value
    signed_in = await client.post(
        "/login",
        data={"email": ADMIN, "password": PASSWORD, "csrf_token": login_csrf, "next": "/"},
        headers={"Cookie": f"hub_login_csrf={login_csrf}"},
        allow_redirects=False,
    )
    assert signed_in.status == 303, await signed_in.text()
    cookie = {"Cookie": f"hub_session={signed_in.cookies['hub_session'].value}"}
    page = await client.get("/admin/staff", headers=cookie)
    csrf = re.search(r'<meta name="csrf-token" content="([^"]*)">', await page.text())
    assert csrf, await page.text()
    refused = await client.post(
        "/admin/staff",
        data={"name": "", "email": "not an address", "role": "agent"},
        headers={**cookie, "X-CSRF-Token": csrf.group(1)},
        allow_redirects=False,
    )
    assert refused.status == 303
    flash = refused.cookies[FLASH_COOKIE]
    assert bool(flash["secure"]) is secure
