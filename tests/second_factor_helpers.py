"""Turning a second factor on and taking the code step of signing in, as a person would."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pyotp
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.audit import AuditEvent
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.inbox.access import StaffContext
from hub.inbox.actions.second_factor import do_enable_second_factor, do_start_second_factor

FORM_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def code_for(secret: str, steps_from_now: int = 0) -> str:
    """The code an authenticator app shows (by the hub's clock, which tests may move)."""
    return pyotp.TOTP(secret).at(utcnow() + timedelta(seconds=30 * steps_from_now))


async def turn_on(db: Database, ring: KeyRing, ctx: StaffContext) -> tuple[str, list[str]]:
    """Set up TOTP through the actions; returns the secret and the recovery codes."""
    enrolment = await do_start_second_factor(db, ring, ctx, "Demo Clinic")
    codes = await do_enable_second_factor(db, ring, ctx, code_for(enrolment.secret))
    return enrolment.secret, codes


async def submit_code(client: TestClient, code: str) -> Any:
    """Post the code form (reached after the right password); the response is not followed."""
    form = await client.get("/login/code", allow_redirects=False)
    assert form.status == 200, (form.status, form.headers.get("Location"))
    match = FORM_CSRF.search(await form.text())
    assert match
    return await client.post(
        "/login/code",
        data={"csrf_token": match.group(1), "code": code},
        allow_redirects=False,
    )


async def audited(db: Database, subject_id: object) -> list[tuple[str, dict[str, Any]]]:
    """(action, detail) of the audit rows about one subject (a person), oldest first."""
    async with db.reader() as session:
        rows = await session.scalars(
            select(AuditEvent)
            .where(AuditEvent.subject_id == str(subject_id))
            .order_by(AuditEvent.seq)
        )
        return [(row.action, row.detail) for row in rows]
