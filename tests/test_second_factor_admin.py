"""What admins do about second factors: require them of admins (who then reach nothing but the
set-up page until done), reset a person's (lost phone) from /admin/staff or `hub user
reset-2fa`; and a person held on a page (one-time password, set-up) cannot post elsewhere."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyotp
import pytest
import socketio
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.audit import Actor, AuditEvent
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.inbox import queries
from hub.inbox.actions import second_factor as sf
from tests.conftest import hub_env, make_staff, sync_url
from tests.second_factor_helpers import audited, turn_on
from tests.staff_helpers import csrf_of, session_cookie, sign_in
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

ADMIN = "ada.admin@demo-clinic.example.org"
OTHER_ADMIN = "owen.admin@demo-clinic.example.org"
AGENT = "sam.agent@demo-clinic.example.org"
SECRET_ON_PAGE = re.compile(r'<code class="secret" id="totp-secret">([A-Z2-7 ]+)</code>')


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    plain = replace(settings, public_url="http://127.0.0.1")
    return await aiohttp_client(create_app(plain, db=db))  # type: ignore[no-any-return]


async def test_when_required_an_admin_without_one_sets_it_up_before_anything_else(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    admin = await make_staff(db, ADMIN, role="admin")
    await make_staff(db, AGENT, role="agent")
    assert (await sign_in(client, ADMIN)).status == 303
    csrf = await csrf_of(client, "/admin/security")
    saved = await client.post(
        "/admin/security", data={"csrf_token": csrf, "required": "on"}, allow_redirects=False
    )
    assert saved.status == 303
    assert await sf.do_second_factor_policy(db)

    # The admin who turned it on has none: from now on only the set-up page and signing out.
    for path in ("/", "/admin/security", "/admin/staff", "/account", "/journeys"):
        held = await client.get(path, allow_redirects=False)
        assert held.status == 303 and held.headers["Location"] == "/account/second-factor"
    posted = await client.post("/conversations/claim-next", data={"csrf_token": csrf})
    assert posted.status == 403 and "Set up your second factor first" in await posted.text()
    api = await client.get("/api/me")
    assert api.status == 403
    assert (await api.json())["error"]["message"] == "Set up your second factor first."

    page = await client.get("/account/second-factor")
    html = await page.text()
    assert page.status == 200 and "<svg" in html and "requires a second factor" in html
    found = SECRET_ON_PAGE.search(html)
    assert found
    secret = found.group(1).replace(" ", "")
    enabled = await client.post(
        "/account/second-factor",
        data={"csrf_token": csrf, "code": pyotp.TOTP(secret).at(utcnow())},
    )
    codes_page = await enabled.text()
    assert enabled.status == 200
    assert len(re.findall(r"<li><code>[A-Z2-9]{5}-[A-Z2-9]{5}</code></li>", codes_page)) == 10
    assert (await client.get("/", allow_redirects=False)).status == 200

    # Required, so it stays on; an agent is not held by an admins-only rule.
    with pytest.raises(sf.SecondFactorRequired):
        await sf.do_disable_second_factor(db, admin, "correct horse battery")
    await client.post("/logout", data={"csrf_token": csrf})
    assert (await sign_in(client, AGENT)).status == 303
    assert (await client.get("/", allow_redirects=False)).status == 200

    trail = await audited(db, sf.REQUIRED_FOR_ADMINS_KEY)
    assert trail == [("settings.second_factor", {"required_for_admins": True})]
    assert [a for a, _ in await audited(db, admin.staff_id)][-1] == "staff.second_factor_enable"


async def test_an_admin_resets_a_lost_second_factor_from_the_staff_page(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    await make_staff(db, ADMIN, role="admin")
    agent = await make_staff(db, AGENT, role="agent")
    await turn_on(db, ring, agent)
    assert (await sign_in(client, AGENT)).headers["Location"] == "/login/code"

    refused = await client.post(
        "/admin/security/reset-second-factor",
        data={"email": AGENT, "csrf_token": "x"},
        allow_redirects=False,
    )
    assert refused.headers["Location"] == "/login"  # half-signed-in is not signed in
    assert (await sf.do_second_factor_status(db, agent)).enabled

    assert (await sign_in(client, ADMIN)).status == 303
    staff_page = await (await client.get("/admin/staff")).text()
    assert "Reset second factor (lost phone)" in staff_page
    csrf = await csrf_of(client, "/admin/staff")
    reset = await client.post(
        "/admin/security/reset-second-factor",
        data={"email": AGENT, "csrf_token": csrf},
        allow_redirects=False,
    )
    assert reset.status == 303 and reset.headers["Location"] == "/admin/staff"
    status = await sf.do_second_factor_status(db, agent)
    assert not status.enabled and status.recovery_codes_left == 0
    async with db.reader() as session:
        staff = await queries.staff_by_email(session, AGENT)
        assert staff is not None and staff.totp_secret_enc is None
    assert (await audited(db, agent.staff_id))[-1] == ("staff.second_factor_reset", {})
    again = await client.post(
        "/admin/security/reset-second-factor",
        data={"email": AGENT, "csrf_token": csrf},
        allow_redirects=False,
    )
    assert again.status == 303  # with "has no second factor to reset" in the flash

    await client.post("/logout", data={"csrf_token": csrf})
    assert (await sign_in(client, AGENT)).headers["Location"] == "/"  # the password alone
    assert (await audited(db, agent.staff_id))[-2][0] == "staff.second_factor_reset"
    not_admin = await client.post(
        "/admin/security/reset-second-factor",
        data={"email": ADMIN, "csrf_token": await csrf_of(client)},
    )
    assert not_admin.status == 404


async def test_a_person_with_a_one_time_password_cannot_post_elsewhere(
    client: TestClient, db: Database
) -> None:
    await make_staff(db, AGENT, role="agent")
    async with db.transaction() as session:
        staff = await queries.staff_by_email(session, AGENT)
        assert staff is not None
        staff.must_change_password = True
    assert (await sign_in(client, AGENT)).headers["Location"] == "/password"
    csrf = await csrf_of(client, "/password")
    posted = await client.post("/conversations/claim-next", data={"csrf_token": csrf})
    assert posted.status == 403 and "Change your password first" in await posted.text()


async def test_a_held_person_gets_no_live_inbox_socket(
    committed_db: Database, fresh_db_url: str, settings: Settings, aiohttp_client: Any
) -> None:
    await make_staff(committed_db, ADMIN, role="admin")
    await sf.do_set_second_factor_policy(committed_db, Actor.system("test"), True)
    plain = replace(settings, public_url="http://127.0.0.1", database_url=fresh_db_url)
    client: TestClient = await aiohttp_client(create_app(plain))
    assert (await sign_in(client, ADMIN)).status == 303
    page = await (await client.get("/account/second-factor")).text()
    assert "socket.io.min.js" not in page  # the held page does not even try
    sio = socketio.AsyncClient(reconnection=False)
    refusals: list[Any] = []
    sio.on("connect_error", refusals.append, namespace="/staff")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(
            str(client.make_url("/")),
            namespaces=["/staff"],
            headers={"Cookie": f"hub_session={session_cookie(client)}"},
            transports=["websocket"],
        )
    assert refusals == [{"message": "finish signing in first"}]
    await sf.do_set_second_factor_policy(committed_db, Actor.system("test"), False)
    await sio.connect(
        str(client.make_url("/")),
        namespaces=["/staff"],
        headers={"Cookie": f"hub_session={session_cookie(client)}"},
        transports=["websocket"],
    )
    await sio.disconnect()


@pytest.mark.slow
async def test_hub_user_reset_2fa(
    committed_db: Database, fresh_db_url: str, settings: Settings, ring: KeyRing, tmp_path: Path
) -> None:
    agent = await make_staff(committed_db, AGENT, role="agent")
    await turn_on(committed_db, ring, agent)
    assert settings.redis_url is not None
    env = hub_env(
        HUB_DATABASE_URL=sync_url(fresh_db_url),
        HUB_REDIS_URL=settings.redis_url,
        HUB_KEYS=ring.to_spec(),
        HUB_VAR_DIR=str(tmp_path / "var"),
        HUB_LOG_FORMAT="text",
    )

    def hub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hub", "user", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert f"{AGENT}\tagent\tactive" in hub("list").stdout
    assert "\t2fa=on" in hub("list").stdout
    done = hub("reset-2fa", AGENT)
    assert done.returncode == 0, done.stderr
    assert "\t2fa=off" in hub("list").stdout
    assert f"second factor of {AGENT} removed" in done.stdout
    assert not (await sf.do_second_factor_status(committed_db, agent)).enabled
    trail = await audited(committed_db, agent.staff_id)
    assert trail[-1] == ("staff.second_factor_reset", {})
    nothing = hub("reset-2fa", AGENT)
    assert nothing.returncode == 1 and "has no second factor to reset" in nothing.stderr
    unknown = hub("reset-2fa", "nobody@demo-clinic.example.org")
    assert unknown.returncode == 1 and "no staff user" in unknown.stderr
    async with committed_db.reader() as session:
        actor = await session.scalar(
            select(AuditEvent.actor)
            .where(AuditEvent.action == "staff.second_factor_reset")
            .order_by(AuditEvent.seq.desc())
        )
    assert actor == str(Actor.system("cli:user-reset-2fa"))
