"""Taking access away and giving it back: deactivate, reactivate, reset a password, edit a
person, list and revoke API tokens; through the actions, the sign-in page and the `hub` command.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.audit import Actor, AuditEvent
from hub.config import Settings
from hub.db import Database
from hub.enums import Channel, Role
from hub.errors import HubError
from hub.inbox import actions
from hub.inbox.actions.staff import (
    DEFAULT_TOKEN_DAYS,
    LastAdmin,
    do_create_token,
    do_deactivate_staff,
    do_edit_staff,
    do_list_staff,
    do_list_tokens,
    do_reactivate_staff,
    do_reset_password,
    do_resolve_token,
    do_revoke_token,
)
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, StaffUser, Team
from hub.inbox.passwords import OTP_ALPHABET, one_time_password
from hub.inbox.schemas import NewPatient
from tests.conftest import hub_env, make_staff, sync_url
from tests.staff_helpers import PASSWORD, csrf_of, session_cookie, sign_in
from web.app import create_app
from web.keys import SESSIONS

pytestmark = pytest.mark.usefixtures("fresh_redis")

ADMIN = "ada.admin@demo-clinic.example.org"
AGENT = "alex.agent@demo-clinic.example.org"
SYSTEM = Actor.system("test")
WAIT_S = 15.0


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    # Plain http so the test client sends the (otherwise Secure) session cookie.
    return replace(settings, public_url="http://127.0.0.1")


@pytest.fixture
async def client(db: Database, web_settings: Settings, aiohttp_client: Any) -> TestClient:
    await make_staff(db, ADMIN, role="admin")
    await make_staff(db, AGENT, role="agent", teams=("Front desk",))
    return await aiohttp_client(create_app(web_settings, db=db))  # type: ignore[no-any-return]


async def assigned_conversation(db: Database, ring: Any, team: str, email: str) -> uuid.UUID:
    patient_id = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(name="Avery Sample", phone=f"+1555010{uuid.uuid4().int % 10000:04d}"),
        region="US",
    )
    await actions.do_record_inbound(db, ring, patient_id, Channel.SMS, "hello")
    async with db.transaction() as session:
        conversation = (
            await session.scalars(select(Conversation).where(Conversation.patient_id == patient_id))
        ).one()
        conversation.team_id = (
            await session.scalars(select(Team.id).where(Team.name == team))
        ).one()
        conversation.assignee_id = (
            await session.scalars(select(StaffUser.id).where(StaffUser.email == email))
        ).one()
        return conversation.id


async def audited(db: Database, action: str) -> list[AuditEvent]:
    async with db.reader() as session:
        return list(
            (await session.scalars(select(AuditEvent).where(AuditEvent.action == action))).all()
        )


async def staff_socket(client: TestClient) -> tuple[socketio.AsyncClient, asyncio.Event]:
    sio = socketio.AsyncClient(reconnection=False)
    dropped = asyncio.Event()
    sio.on("disconnect", dropped.set, namespace="/staff")
    await sio.connect(
        str(client.make_url("/")),
        namespaces=["/staff"],
        headers={"Cookie": f"hub_session={session_cookie(client)}"},
        transports=["websocket"],
        socketio_path="socket.io",
    )
    return sio, dropped


def hub_command(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`hub ARGS` as an operator runs it, against the test's database and Redis."""
    assert settings.redis_url is not None
    env = hub_env(
        HUB_DATABASE_URL=sync_url(settings.database_url),
        HUB_REDIS_URL=settings.redis_url,
        HUB_KEYS=settings.keys.to_spec() if settings.keys else "",
        HUB_VAR_DIR=str(tmp_path / "var"),
        HUB_LOG_FORMAT="text",
    )
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
async def test_hub_user_deactivate_ends_a_signed_in_persons_session_token_and_socket(
    committed_db: Database,
    fresh_db_url: str,
    web_settings: Settings,
    ring: Any,
    aiohttp_client: Any,
    tmp_path: Path,
) -> None:
    db = committed_db
    await make_staff(db, ADMIN, role="admin")
    await make_staff(db, AGENT, role="agent", teams=("Front desk",))
    conversation_id = await assigned_conversation(db, ring, "Front desk", AGENT)
    token = await do_create_token(db, SYSTEM, AGENT, "scheduling script")
    settings = replace(web_settings, database_url=fresh_db_url)
    client: TestClient = await aiohttp_client(create_app(settings))

    assert (await sign_in(client, AGENT)).status == 303
    assert (await client.get("/", allow_redirects=False)).status == 200
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/conversations", headers=bearer)).status == 200
    sio, dropped = await staff_socket(client)
    try:
        assert await sio.call("heartbeat", {}, namespace="/staff", timeout=5) == {"ok": True}

        done = await asyncio.to_thread(hub_command, settings, tmp_path, "user", "deactivate", AGENT)
        assert done.returncode == 0, done.stderr
        assert "1 API tokens revoked, 1 conversations returned" in done.stdout

        # The live socket is dropped by the server without the client doing anything.
        await asyncio.wait_for(dropped.wait(), WAIT_S)
    finally:
        await sio.disconnect()

    page = await client.get("/", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/login"
    api = await client.get("/api/conversations", headers=bearer)
    assert api.status == 401
    refused: list[Any] = []
    again = socketio.AsyncClient(reconnection=False)
    again.on("connect_error", refused.append, namespace="/staff")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await again.connect(
            str(client.make_url("/")),
            namespaces=["/staff"],
            headers={"Cookie": f"hub_session={session_cookie(client)}"},
            transports=["websocket"],
        )
    assert refused == [{"message": "sign in first"}]  # the session itself is gone

    async with db.reader() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None and conversation.assignee_id is None
        assert conversation.team_id is not None  # back in the team's queue, not unrouted
    [event] = await audited(db, "staff.deactivate")
    assert event.actor == "system:cli:user-deactivate"
    assert event.detail == {"tokens_revoked": 1, "conversations_returned": 1}

    signed = await sign_in(client, AGENT)
    assert signed.status == 403
    assert "This account is deactivated; ask an admin." in await signed.text()


async def test_deactivated_sign_in_says_so_only_to_the_right_password(
    client: TestClient, db: Database
) -> None:
    store = client.app[SESSIONS]
    await do_deactivate_staff(db, SYSTEM, AGENT, store)
    wrong = await sign_in(client, AGENT, "not the password at all")
    assert wrong.status == 401 and "deactivated" not in await wrong.text()
    right = await sign_in(client, AGENT)
    assert right.status == 403 and "This account is deactivated" in await right.text()
    assert "hub_session" not in right.cookies
    with pytest.raises(HubError, match="already deactivated"):
        await do_deactivate_staff(db, SYSTEM, AGENT, store)


async def test_reactivate_lets_them_back_in_but_old_tokens_stay_revoked(
    client: TestClient, db: Database
) -> None:
    token = await do_create_token(db, SYSTEM, AGENT, "script")
    await do_deactivate_staff(db, SYSTEM, AGENT, client.app[SESSIONS])
    await do_reactivate_staff(db, SYSTEM, AGENT)
    assert (await sign_in(client, AGENT)).status == 303
    assert (await client.get("/", allow_redirects=False)).status == 200
    assert await do_resolve_token(db, token) is None
    assert [e.action for e in await audited(db, "staff.reactivate")] == ["staff.reactivate"]
    with pytest.raises(HubError, match="already active"):
        await do_reactivate_staff(db, SYSTEM, AGENT)


async def test_the_last_active_admin_cannot_be_deactivated_or_demoted(
    client: TestClient, db: Database
) -> None:
    with pytest.raises(LastAdmin, match="last active admin"):
        await do_deactivate_staff(db, SYSTEM, ADMIN, client.app[SESSIONS])
    with pytest.raises(LastAdmin):
        await do_edit_staff(db, SYSTEM, ADMIN, role=Role.AGENT)
    await do_edit_staff(db, SYSTEM, AGENT, role=Role.ADMIN)
    await do_deactivate_staff(db, SYSTEM, ADMIN, client.app[SESSIONS])


async def test_reset_password_ends_the_old_one_and_sessions_and_forces_a_change(
    client: TestClient, db: Database
) -> None:
    assert (await sign_in(client, AGENT)).status == 303
    old_cookie = session_cookie(client)
    otp, _effects = await do_reset_password(db, SYSTEM, AGENT, client.app[SESSIONS])
    assert await client.app[SESSIONS].load(old_cookie) is None

    assert (await sign_in(client, AGENT, PASSWORD)).status == 401
    first = await sign_in(client, AGENT, otp)
    assert first.status == 303 and first.headers["Location"] == "/password"
    inbox = await client.get("/", allow_redirects=False)
    assert inbox.status == 303 and inbox.headers["Location"] == "/password"
    csrf = await csrf_of(client, "/password")
    new = "a brand new passphrase"
    changed = await client.post(
        "/password",
        data={"current": otp, "new": new, "csrf_token": csrf},
        allow_redirects=False,
    )
    assert changed.status in (302, 303)
    assert (await client.get("/", allow_redirects=False)).status == 200
    await client.post("/logout", data={"csrf_token": await csrf_of(client)})
    assert (await sign_in(client, AGENT, otp)).status == 401  # it worked once only
    assert (await sign_in(client, AGENT, new)).status == 303
    [event] = await audited(db, "staff.password_reset")
    assert event.detail == {}


async def test_a_one_time_password_blocks_the_owners_api_tokens_until_changed(
    client: TestClient, db: Database
) -> None:
    token = await do_create_token(db, SYSTEM, AGENT, "script")
    assert await do_resolve_token(db, token) is not None
    otp, _ = await do_reset_password(db, SYSTEM, AGENT, client.app[SESSIONS])
    assert await do_resolve_token(db, token) is None
    api = await client.get("/api/conversations", headers={"Authorization": f"Bearer {token}"})
    assert api.status == 401
    ctx = await make_ctx(db, AGENT)
    await actions.staff.do_change_password(db, ctx, otp, "a brand new passphrase")
    assert await do_resolve_token(db, token) is not None


async def make_ctx(db: Database, email: str) -> Any:
    from hub.inbox.access import StaffContext

    async with db.reader() as session:
        staff = (await session.scalars(select(StaffUser).where(StaffUser.email == email))).one()
        return StaffContext.of(staff)


async def test_edit_changes_role_teams_and_capacity_and_audits_each(
    client: TestClient, db: Database
) -> None:
    await actions.do_ensure_team(db, SYSTEM, "Billing")
    await do_edit_staff(db, SYSTEM, AGENT, role=Role.COORDINATOR, teams=["Billing"], capacity=5)
    [person] = [p for p in await do_list_staff(db) if p.email == AGENT]
    assert (person.role, person.teams, person.max_open_conversations) == (
        Role.COORDINATOR,
        ("Billing",),
        5,
    )
    [event] = await audited(db, "staff.edit")
    assert event.detail == {
        "role": {"from": "agent", "to": "coordinator"},
        "teams": {"from": ["Front desk"], "to": ["Billing"]},
        "capacity": {"from": 20, "to": 5},
    }
    with pytest.raises(NotFound, match="no team named Nowhere"):
        await do_edit_staff(db, SYSTEM, AGENT, teams=["Nowhere"])
    with pytest.raises(HubError, match="nothing to change"):
        await do_edit_staff(db, SYSTEM, AGENT)
    with pytest.raises(HubError, match="between 0 and 1000"):
        await do_edit_staff(db, SYSTEM, AGENT, capacity=-1)
    with pytest.raises(NotFound, match="no staff user with email nobody@"):
        await do_edit_staff(db, SYSTEM, "nobody@demo-clinic.example.org", capacity=1)


async def test_tokens_expire_after_90_days_unless_told_otherwise(
    client: TestClient, db: Database, set_clock: Any
) -> None:
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    set_clock(start)
    default = await do_create_token(db, SYSTEM, AGENT, "default")
    week = await do_create_token(db, SYSTEM, AGENT, "a week", days=7)
    assert DEFAULT_TOKEN_DAYS == 90
    set_clock(start + timedelta(days=8))
    assert await do_resolve_token(db, default) is not None
    assert await do_resolve_token(db, week) is None
    set_clock(start + timedelta(days=89))
    assert await do_resolve_token(db, default) is not None
    set_clock(start + timedelta(days=91))
    assert await do_resolve_token(db, default) is None
    states = {t.name: t.state(start + timedelta(days=91)) for t in await do_list_tokens(db)}
    assert states == {"default": "expired", "a week": "expired"}


async def test_a_revoked_token_stops_at_its_next_request(client: TestClient, db: Database) -> None:
    token = await do_create_token(db, SYSTEM, AGENT, "script")
    other = await do_create_token(db, SYSTEM, ADMIN, "admin script")
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/conversations", headers=bearer)).status == 200
    [listed] = await do_list_tokens(db, AGENT)
    await do_revoke_token(db, SYSTEM, listed.id)
    assert (await client.get("/api/conversations", headers=bearer)).status == 401
    assert await do_resolve_token(db, other) is not None
    await do_revoke_token(db, SYSTEM, listed.id)  # again: no error, no second audit row
    assert len(await audited(db, "token.revoke")) == 1
    with pytest.raises(NotFound, match="hub token list"):
        await do_revoke_token(db, SYSTEM, uuid.uuid4())


def test_one_time_passwords_have_no_characters_that_read_alike() -> None:
    ambiguous = set("lI1O0o")
    assert not ambiguous & set(OTP_ALPHABET)
    for _ in range(200):
        otp = one_time_password()
        assert len(otp) >= 12 and set(otp) <= set(OTP_ALPHABET)


@pytest.mark.slow
async def test_hub_user_and_token_commands(
    committed_db: Database, fresh_db_url: str, settings: Settings, tmp_path: Path
) -> None:
    db = committed_db
    await make_staff(db, ADMIN, role="admin")
    await make_staff(db, AGENT, role="agent", teams=("Front desk",))
    await actions.do_ensure_team(db, SYSTEM, "Billing")
    settings = replace(settings, database_url=fresh_db_url)

    def hub(*args: str) -> subprocess.CompletedProcess[str]:
        return hub_command(settings, tmp_path, *args)

    created = hub("token", "create", AGENT, "--name", "script")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    [row] = await do_list_tokens(db, AGENT)
    assert row.expires_at is not None
    assert timedelta(days=89) < row.expires_at - row.created_at <= timedelta(days=90)

    listed = hub("token", "list", AGENT)
    assert listed.returncode == 0 and str(row.id) in listed.stdout and "active" in listed.stdout

    edited = hub("user", "edit", AGENT, "--team", "Billing", "--capacity", "3")
    assert edited.returncode == 0, edited.stderr
    people = hub("user", "list")
    assert f"{AGENT}\tagent\tactive\tteams=Billing\tcapacity=3" in people.stdout
    unknown = hub("user", "edit", AGENT, "--team", "Nowhere")
    assert unknown.returncode == 1 and "no team named Nowhere" in unknown.stderr

    reset = hub("user", "reset-password", AGENT)
    assert reset.returncode == 0, reset.stderr
    otp = reset.stdout.split("one-time password: ")[1].split()[0]
    assert set(otp) <= set(OTP_ALPHABET)
    assert await do_resolve_token(db, token) is None  # blocked while the OTP stands
    assert "one-time password" in hub("user", "list").stdout

    revoked = hub("token", "revoke", str(row.id))
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in hub("token", "list").stdout
    bad = hub("token", "revoke", "not-an-id")
    assert bad.returncode == 1 and "is not a token id" in bad.stderr

    assert hub("user", "deactivate", AGENT).returncode == 0
    assert "DEACTIVATED" in hub("user", "list").stdout
    assert hub("user", "reactivate", AGENT).returncode == 0
    last = hub("user", "deactivate", ADMIN)
    assert last.returncode == 1 and "last active admin" in last.stderr


async def test_admin_staff_buttons_deactivate_reset_edit_and_reactivate(
    client: TestClient, db: Database
) -> None:
    agent = await make_ctx(db, AGENT)
    assert (await sign_in(client, AGENT)).status == 303
    csrf = await csrf_of(client)
    refused = await client.post(
        "/admin/staff/deactivate", data={"email": ADMIN, "csrf_token": csrf}
    )
    assert refused.status == 404  # agents do not have the admin pages
    await client.post("/logout", data={"csrf_token": csrf})

    assert (await sign_in(client, ADMIN)).status == 303
    csrf = await csrf_of(client, "/admin/staff")
    missing = await client.post("/admin/staff/deactivate", data={"email": AGENT})
    assert missing.status == 403  # no CSRF token, nothing done
    assert (await make_ctx(db, AGENT)).staff_id == agent.staff_id

    reset = await client.post(
        "/admin/staff/reset-password", data={"email": AGENT, "csrf_token": csrf}
    )
    page = await reset.text()
    assert reset.status == 200 and f"New password for {AGENT}" in page
    otp = page.split("<code>")[1].split("</code>")[0]
    assert set(otp) <= set(OTP_ALPHABET) and "hub_flash" not in reset.cookies

    await actions.do_ensure_team(db, SYSTEM, "Billing")
    edited = await client.post(
        "/admin/staff/edit",
        data={
            "email": AGENT,
            "role": "agent",
            "capacity": "4",
            "team": "Billing",
            "csrf_token": csrf,
        },
    )
    assert edited.status == 200 and f"Saved {AGENT}." in await edited.text()
    [person] = [p for p in await do_list_staff(db) if p.email == AGENT]
    assert (person.teams, person.max_open_conversations) == (("Billing",), 4)

    gone = await client.post("/admin/staff/deactivate", data={"email": AGENT, "csrf_token": csrf})
    text = await gone.text()
    assert f"Deactivated {AGENT}: signed out everywhere" in text
    assert "Reactivate: they can sign in again" in text
    back = await client.post("/admin/staff/reactivate", data={"email": AGENT, "csrf_token": csrf})
    assert f"Reactivated {AGENT}" in await back.text()
    [event] = await audited(db, "staff.deactivate")
    assert event.actor == f"staff:{(await make_ctx(db, ADMIN)).staff_id}"


@pytest.mark.slow
async def test_an_admin_resets_and_deactivates_in_a_browser(stack: Any, browser: Any) -> None:
    from tests.browser import assert_accessible, sign_in_page

    await stack.add_staff(ADMIN, role=Role.ADMIN)
    await stack.add_staff(AGENT, role=Role.AGENT, teams=("Front desk",))
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    agent_context = await browser.new_context()
    agent_page = await agent_context.new_page()
    await sign_in_page(agent_page, stack.hub_url, AGENT, PASSWORD)
    # A function, not an expression: polling a bare expression needs eval, which the CSP forbids.
    await agent_page.wait_for_function("() => window.hubSocketConnected === true")
    await sign_in_page(page, stack.hub_url, ADMIN, PASSWORD)
    await page.goto(f"{stack.hub_url}/admin/staff")

    row = page.locator("details").filter(has_text=AGENT)
    await row.locator("summary").click()
    await row.get_by_role("button", name="Reset password", exact=False).click()
    shown = page.locator(".flash.ok code")
    await shown.wait_for()
    otp = await shown.inner_text()
    assert len(otp) == 16 and set(otp) <= set(OTP_ALPHABET)
    font = await shown.evaluate("e => getComputedStyle(e).fontFamily")
    assert "monospace" in font
    # The agent's open inbox is told at once, and sent where they sign in with the new one.
    await agent_page.wait_for_url(f"{stack.hub_url}/login", timeout=30_000)
    await agent_context.close()
    await assert_accessible(page)

    row = page.locator("details").filter(has_text=AGENT)
    await row.locator("summary").click()
    await row.get_by_role("button", name="Deactivate", exact=False).click()
    flash = page.locator(".flash.ok")
    await flash.wait_for()
    assert f"Deactivated {AGENT}: signed out everywhere" in await flash.inner_text()
    await assert_accessible(page)
    assert errors == []


@pytest.mark.slow
async def test_hub_user_deactivate_goes_ahead_when_redis_is_down(
    committed_db: Database, fresh_db_url: str, settings: Settings, tmp_path: Path
) -> None:
    """Taking access away cannot wait for Redis: the account is off, and the socket effect
    stays in the outbox for `hub serve`'s relay."""
    from hub.outbox import OutboxEvent

    db = committed_db
    await make_staff(db, ADMIN, role="admin")
    await make_staff(db, AGENT, role="agent")
    down = replace(settings, database_url=fresh_db_url, redis_url="redis://127.0.0.1:1/0")
    done = hub_command(down, tmp_path, "user", "deactivate", AGENT)
    assert done.returncode == 0, done.stderr
    assert "warning" in done.stderr and "next request" in done.stderr
    assert [p.active for p in await do_list_staff(db) if p.email == AGENT] == [False]
    async with db.reader() as session:
        pending = (
            await session.scalars(
                select(OutboxEvent.topic).where(OutboxEvent.released_at.is_(None))
            )
        ).all()
    assert "notify:staff:revoked" in pending
