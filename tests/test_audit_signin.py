"""Failed sign-ins are audited: an email that names no account, a lockout, a deactivated account."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.audit import Actor, AuditEvent, verify
from hub.config import Settings
from hub.db import Database
from hub.inbox.actions.staff import do_deactivate_staff
from tests.conftest import make_staff
from tests.staff_helpers import PASSWORD, sign_in
from web.app import create_app
from web.sessions import MAX_FAILS_PER_ACCOUNT

pytestmark = pytest.mark.usefixtures("fresh_redis")

EMAIL = "rowan.agent@demo-clinic.example.org"
STRANGER = "guess.who@elsewhere.example.org"
WRONG = "not the password at all"


class NoSessions:
    """No one is signed in: nothing to end."""

    async def destroy_all_for(self, staff_id: uuid.UUID, keep: str | None = None) -> None:
        return None


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    # Plain http, as the test client speaks: under https the sign-in cookies are Secure.
    plain = replace(settings, public_url="http://127.0.0.1")
    return await aiohttp_client(create_app(plain, db=db))  # type: ignore[no-any-return]


async def _sign_in_events(db: Database) -> list[tuple[str, str, str]]:
    async with db.reader() as session:
        rows = await session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action.like("staff.login%"))
            .order_by(AuditEvent.seq)
        )
        return [(ev.actor, ev.action, ev.subject_id) for ev in rows]


async def _chain_ok(db: Database) -> bool:
    async with db.reader() as session:
        return (await verify(session)).ok


async def test_a_sign_in_naming_no_account_is_audited_without_what_was_typed(
    client: TestClient, db: Database
) -> None:
    response = await sign_in(client, STRANGER, WRONG)
    assert response.status == 401
    assert await _sign_in_events(db) == [("system:sign-in", "staff.login_failed", "unknown")]
    async with db.reader() as session:
        events = (await session.scalars(select(AuditEvent))).all()
    typed = {STRANGER, STRANGER.split("@")[0], WRONG}
    assert not [ev.seq for ev in events if any(t in repr(ev.__dict__) for t in typed)]
    assert await _chain_ok(db)


async def test_the_failure_that_locks_an_account_is_audited_once(
    client: TestClient, db: Database
) -> None:
    agent = await make_staff(db, EMAIL, role="agent")
    for _ in range(MAX_FAILS_PER_ACCOUNT):
        assert (await sign_in(client, EMAIL, WRONG)).status == 401
    # Locked now: even the right password is refused, and the refusals are not audited again.
    for _ in range(3):
        assert (await sign_in(client, EMAIL, PASSWORD)).status == 429

    events = await _sign_in_events(db)
    staff_id = str(agent.staff_id)
    failed = ("staff:" + staff_id, "staff.login_failed", staff_id)
    assert events == [failed] * MAX_FAILS_PER_ACCOUNT + [
        ("system:sign-in", "staff.login_locked", staff_id)
    ]
    assert await _chain_ok(db)


async def test_a_lockout_on_an_unknown_email_is_audited(client: TestClient, db: Database) -> None:
    for _ in range(MAX_FAILS_PER_ACCOUNT):
        assert (await sign_in(client, STRANGER, WRONG)).status == 401
    assert (await sign_in(client, STRANGER, WRONG)).status == 429

    unknown = ("system:sign-in", "staff.login_failed", "unknown")
    assert await _sign_in_events(db) == [unknown] * MAX_FAILS_PER_ACCOUNT + [
        ("system:sign-in", "staff.login_locked", "unknown")
    ]


async def test_the_right_password_for_a_deactivated_account_is_audited(
    client: TestClient, db: Database
) -> None:
    agent = await make_staff(db, EMAIL, role="agent")
    await do_deactivate_staff(db, Actor.system("test"), EMAIL, NoSessions())

    response = await sign_in(client, EMAIL, PASSWORD)
    assert response.status == 403
    staff_id = str(agent.staff_id)
    assert await _sign_in_events(db) == [("staff:" + staff_id, "staff.login_refused", staff_id)]
    assert await _chain_ok(db)
