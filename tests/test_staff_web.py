"""The staff app through real HTTP and a real socket.io client: sign-in, sessions, CSRF,
access across teams, escaping, audit, OpenAPI."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
import socketio
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.audit import Actor, AuditEvent
from hub.config import Settings
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions, queries
from hub.inbox.access import StaffContext
from hub.inbox.models import Conversation, Message, Team
from hub.inbox.schemas import NewPatient
from tests.conftest import make_staff
from tests.staff_helpers import PASSWORD, csrf_of, session_cookie, sign_in
from web.app import create_app
from web.keys import SESSIONS

pytestmark = pytest.mark.usefixtures("fresh_redis")


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    # Plain http so the test client sends the (otherwise Secure) session cookie.
    return replace(settings, public_url="http://127.0.0.1")


@pytest.fixture
async def client(db: Database, web_settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(web_settings, db=db))  # type: ignore[no-any-return]


async def conversation_in(db: Database, ring: Any, team: str, body: str = "hello") -> uuid.UUID:
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=f"+1555010{uuid.uuid4().int % 10000:04d}"),
        region="US",
    )
    await actions.do_record_inbound(db, ring, patient_id, Channel.SMS, body)
    async with db.transaction() as session:
        conversation = (
            await session.scalars(select(Conversation).where(Conversation.patient_id == patient_id))
        ).one()
        team_row = (await session.scalars(select(Team).where(Team.name == team))).one()
        conversation.team_id = team_row.id
        return conversation.id


@pytest.fixture
async def two_teams(db: Database, ring: Any) -> dict[str, Any]:
    a = await make_staff(db, "alex.agent@demo-clinic.example.org", role="agent", teams=("Team A",))
    b = await make_staff(db, "bo.agent@demo-clinic.example.org", role="agent", teams=("Team B",))
    return {
        "a": a,
        "b": b,
        "conv_a": await conversation_in(db, ring, "Team A"),
        "conv_b": await conversation_in(db, ring, "Team B"),
    }


async def test_sign_in_and_out(client: TestClient, two_teams: dict[str, Any]) -> None:
    assert (await client.get("/", allow_redirects=False)).headers["Location"] == "/login"
    response = await sign_in(client, "alex.agent@demo-clinic.example.org")
    assert response.status == 303 and response.headers["Location"] == "/"
    cookie = response.cookies["hub_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    inbox = await client.get("/")
    assert inbox.status == 200 and "Inbox" in await inbox.text()
    csrf = await csrf_of(client)
    out = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert out.status == 303
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_wrong_password_then_lockout(client: TestClient, two_teams: dict[str, Any]) -> None:
    email = "alex.agent@demo-clinic.example.org"
    for _ in range(5):
        assert (await sign_in(client, email, "wrong password!!")).status == 401
    locked = await sign_in(client, email, PASSWORD)
    assert locked.status == 429
    assert "Too many failed attempts" in await locked.text()
    # Other accounts are not locked by someone guessing at Alex's.
    assert (await sign_in(client, "bo.agent@demo-clinic.example.org")).status == 303


@pytest.mark.parametrize("behind_proxy", [True, False])
async def test_address_throttling_behind_a_trusted_proxy_counts_each_client(
    db: Database, web_settings: Settings, aiohttp_client: Any, behind_proxy: bool
) -> None:
    """Behind a proxy every sign-in comes from the proxy's address: without HUB_TRUSTED_PROXIES
    one person's failures would lock out every colleague. X-Forwarded-For counts only when
    the proxy it came through is trusted."""
    from ipaddress import ip_network

    from web.sessions import MAX_FAILS_PER_ADDRESS

    trusted = (ip_network("127.0.0.0/8"),) if behind_proxy else ()
    app = create_app(replace(web_settings, trusted_proxies=trusted), db=db)
    client: TestClient = await aiohttp_client(app)
    await make_staff(db, "alex.agent@demo-clinic.example.org", role="agent")
    guessing = {"X-Forwarded-For": "spoofed-by-client, 203.0.113.9"}
    for n in range(MAX_FAILS_PER_ADDRESS):
        who = f"nobody{n}@demo-clinic.example.org"
        assert (await sign_in(client, who, "wrong password!!", guessing)).status == 401
    locked = await sign_in(client, "alex.agent@demo-clinic.example.org", PASSWORD, guessing)
    assert locked.status == 429
    colleague = {"X-Forwarded-For": "198.51.100.7"}
    answer = await sign_in(client, "alex.agent@demo-clinic.example.org", PASSWORD, colleague)
    assert answer.status == (303 if behind_proxy else 429)


async def test_one_time_password_must_be_changed_first(client: TestClient, db: Database) -> None:
    await make_staff(db, "new.person@demo-clinic.example.org", role="agent")
    async with db.transaction() as session:
        staff = await queries.staff_by_email(session, "new.person@demo-clinic.example.org")
        assert staff is not None
        staff.must_change_password = True
    response = await sign_in(client, "new.person@demo-clinic.example.org")
    assert response.headers["Location"] == "/password"
    assert (await client.get("/", allow_redirects=False)).headers["Location"] == "/password"
    api = await client.get("/api/me")
    assert api.status == 403
    csrf = await csrf_of(client, "/password")
    changed = await client.post(
        "/password",
        data={"csrf_token": csrf, "current": PASSWORD, "new": "a much better passphrase"},
        allow_redirects=False,
    )
    assert changed.status == 303
    after = await client.get("/", allow_redirects=False)
    assert after.status == 200, (after.status, after.headers.get("Location"))


async def test_idle_session_is_signed_out(client: TestClient, two_teams: dict[str, Any]) -> None:
    await sign_in(client, "alex.agent@demo-clinic.example.org")
    assert (await client.get("/", allow_redirects=False)).status == 200
    store = client.app[SESSIONS]
    idle_s = store.idle_s
    store.clock = lambda: time.time() + idle_s + 1  # nothing done for longer than the timeout
    response = await client.get("/", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login"
    store.clock = time.time
    assert (await client.get("/", allow_redirects=False)).status == 303  # it stays ended


async def test_activity_keeps_a_session_but_not_past_its_absolute_lifetime(
    client: TestClient, two_teams: dict[str, Any]
) -> None:
    await sign_in(client, "alex.agent@demo-clinic.example.org")
    store = client.app[SESSIONS]
    start = time.time()
    step = store.idle_s * 0.9
    t = start
    while t - start < store.absolute_s - step:
        t += step
        store.clock = lambda t=t: t
        assert (await client.get("/api/me")).status == 200
    store.clock = lambda: start + store.absolute_s + 1
    assert (await client.get("/api/me")).status == 401


async def test_post_without_csrf_is_refused(
    client: TestClient, two_teams: dict[str, Any], db: Database
) -> None:
    await sign_in(client, "alex.agent@demo-clinic.example.org")
    cid = two_teams["conv_a"]
    form = await client.post(
        f"/conversations/{cid}/notes", data={"body": "x"}, allow_redirects=False
    )
    assert form.status == 403
    api = await client.post(f"/api/conversations/{cid}/notes", json={"body": "x"})
    assert api.status == 403
    csrf = await csrf_of(client)
    ok = await client.post(
        f"/api/conversations/{cid}/notes", json={"body": "checked"}, headers={"X-CSRF-Token": csrf}
    )
    assert ok.status == 201


async def test_other_teams_conversation_is_404_by_page_api_and_socket(
    client: TestClient, two_teams: dict[str, Any]
) -> None:
    await sign_in(client, "alex.agent@demo-clinic.example.org")
    mine, theirs = two_teams["conv_a"], two_teams["conv_b"]
    assert (await client.get(f"/conversations/{mine}")).status == 200
    page = await client.get(f"/conversations/{theirs}")
    assert page.status == 404 and "Avery" not in await page.text()
    assert (await client.get(f"/api/conversations/{mine}")).status == 200
    api = await client.get(f"/api/conversations/{theirs}")
    assert api.status == 404
    csrf = await csrf_of(client)
    reply = await client.post(
        f"/api/conversations/{theirs}/messages", json={"body": "hi"}, headers={"X-CSRF-Token": csrf}
    )
    assert reply.status == 404
    listed = await (await client.get("/api/conversations")).json()
    assert [item["id"] for item in listed["items"]] == [str(mine)]

    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(
        str(client.make_url("/")),
        namespaces=["/staff"],
        headers={"Cookie": f"hub_session={session_cookie(client)}"},
        transports=["websocket"],
        socketio_path="socket.io",
    )
    try:
        denied = await sio.call(
            "join_conversation", {"conversation_id": str(theirs)}, namespace="/staff", timeout=5
        )
        allowed = await sio.call(
            "join_conversation", {"conversation_id": str(mine)}, namespace="/staff", timeout=5
        )
    finally:
        await sio.disconnect()
    assert denied == {"error": {"status": 404, "message": "No such conversation."}}
    assert allowed == {"ok": True}


async def test_socket_without_session_is_refused(client: TestClient) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    reasons: list[Any] = []
    sio.on("connect_error", reasons.append, namespace="/staff")
    with pytest.raises(socketio.exceptions.ConnectionError, match="failed to connect: /staff"):
        await sio.connect(
            str(client.make_url("/")), namespaces=["/staff"], transports=["websocket"]
        )
    assert reasons == [{"message": "sign in first"}]


async def test_a_signed_in_staff_socket_from_another_sites_page_is_refused(
    client: TestClient, two_teams: dict[str, Any]
) -> None:
    """Cross-site WebSocket hijacking: a page elsewhere cannot use the staff cookie."""
    await sign_in(client, "alex.agent@demo-clinic.example.org")
    cookie = {"Cookie": f"hub_session={session_cookie(client)}"}
    reasons: list[Any] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("connect_error", reasons.append, namespace="/staff")
    # The check is the namespace's, the same for every transport (a refused polling client
    # only takes 30 s to hang up, so the test uses the WebSocket one).
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(
            str(client.make_url("/")),
            namespaces=["/staff"],
            headers={**cookie, "Origin": "https://clinic-lookalike.example.net"},
            transports=["websocket"],
        )
    assert reasons == [{"message": "not from this hub's pages"}]
    # The hub's own pages (as reached, or at HUB_PUBLIC_URL) connect.
    own = str(client.make_url("/")).rstrip("/")
    for origin in (own, "http://127.0.0.1"):  # the fixture's HUB_PUBLIC_URL
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(
            own,
            namespaces=["/staff"],
            headers={**cookie, "Origin": origin},
            transports=["websocket"],
        )
        await sio.disconnect()


async def test_message_bodies_render_as_text(
    client: TestClient, db: Database, ring: Any, two_teams: dict[str, Any]
) -> None:
    cid = await conversation_in(db, ring, "Team A", body='<script>alert("x")</script>')
    await sign_in(client, "alex.agent@demo-clinic.example.org")
    html = await (await client.get(f"/conversations/{cid}")).text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    inbox = await (await client.get("/")).text()
    assert "<script>alert" not in inbox


async def test_viewing_a_conversation_is_audited(
    client: TestClient, db: Database, two_teams: dict[str, Any]
) -> None:
    await sign_in(client, "alex.agent@demo-clinic.example.org")
    cid = two_teams["conv_a"]
    await client.get(f"/conversations/{cid}")
    await client.get(f"/api/conversations/{cid}")
    async with db.reader() as session:
        events = (
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "conversation.read", AuditEvent.subject_id == str(cid)
                )
            )
        ).all()
    staff: StaffContext = two_teams["a"]
    assert [e.actor for e in events] == [f"staff:{staff.staff_id}"] * 2


async def test_security_headers(client: TestClient) -> None:
    response = await client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_bearer_token_acts_as_its_staff_user_without_csrf(
    client: TestClient, db: Database, two_teams: dict[str, Any]
) -> None:
    from hub.inbox.actions.staff import do_create_token

    token = await do_create_token(
        db, Actor.system("test"), "alex.agent@demo-clinic.example.org", "reporting script"
    )
    headers = {"Authorization": f"Bearer {token}"}
    me = await (await client.get("/api/me", headers=headers)).json()
    assert me["via"] == "api" and me["role"] == "agent"
    note = await client.post(
        f"/api/conversations/{two_teams['conv_a']}/notes",
        json={"body": "from a script"},
        headers=headers,
    )
    assert note.status == 201
    assert (
        await client.get(f"/api/conversations/{two_teams['conv_b']}", headers=headers)
    ).status == 404
    bad = await client.get("/api/me", headers={"Authorization": "Bearer hub_nope"})
    assert bad.status == 401

    # Last use is kept for admins (which scripts still run), written at most once a minute.
    from hub.inbox.models import ApiToken

    async with db.reader() as session:
        [used] = (await session.scalars(select(ApiToken.last_used_at))).all()
    assert used is not None
    await client.get("/api/me", headers=headers)
    async with db.reader() as session:
        assert (await session.scalars(select(ApiToken.last_used_at))).all() == [used]


async def test_openapi_lists_every_api_route(client: TestClient) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in client.app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/")
        and r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes - {("get", "/api/openapi.json")} <= documented


async def test_new_sms_reaches_a_staff_socket_live(
    db: Database, web_settings: Settings, aiohttp_client: Any
) -> None:
    """The webhook's commit becomes a message:new event on a signed-in staff socket, carrying
    ids only (screens fetch content through access-checked, audited endpoints)."""
    from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, fixture, sign

    settings = replace(web_settings, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN)
    client: TestClient = await aiohttp_client(create_app(settings, db=db))
    await make_staff(db, "ada.admin@demo-clinic.example.org", role="admin")
    await sign_in(client, "ada.admin@demo-clinic.example.org")

    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("message:new", received.put_nowait, namespace="/staff")
    await sio.connect(
        str(client.make_url("/")),
        namespaces=["/staff"],
        headers={"Cookie": f"hub_session={session_cookie(client)}"},
        transports=["websocket"],
    )
    try:
        params = fixture("inbound_sms")["params"]
        posted = await client.post(
            "/webhooks/twilio/sms",
            data=params,
            headers={"X-Twilio-Signature": sign("http://127.0.0.1/webhooks/twilio/sms", params)},
        )
        assert posted.status == 200
        event = await asyncio.wait_for(received.get(), 5)
    finally:
        await sio.disconnect()
    assert set(event) == {"message_id", "conversation_id", "team_id"}
    assert params["Body"] not in str(event) and params["From"] not in str(event)


async def test_viewing_and_typing_are_shown_to_colleagues(
    db: Database, web_settings: Settings, aiohttp_client: Any, ring: Any
) -> None:
    await make_staff(db, "alex.agent@demo-clinic.example.org", role="agent", teams=("Team A",))
    await make_staff(db, "cam.agent@demo-clinic.example.org", role="agent", teams=("Team A",))
    cid = await conversation_in(db, ring, "Team A")
    sockets = []
    seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for email in ("alex.agent@demo-clinic.example.org", "cam.agent@demo-clinic.example.org"):
        client: TestClient = await aiohttp_client(create_app(web_settings, db=db))
        await sign_in(client, email)
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(
            str(client.make_url("/")),
            namespaces=["/staff"],
            headers={"Cookie": f"hub_session={session_cookie(client)}"},
            transports=["websocket"],
        )
        sockets.append(sio)
    alex, cam = sockets
    cam.on("presence", seen.put_nowait, namespace="/staff")
    try:
        assert await cam.call(
            "join_conversation", {"conversation_id": str(cid)}, namespace="/staff", timeout=5
        ) == {"ok": True}
        assert await alex.call(
            "join_conversation", {"conversation_id": str(cid)}, namespace="/staff", timeout=5
        ) == {"ok": True}
        viewing = await asyncio.wait_for(seen.get(), 5)
        await alex.emit("typing", {"conversation_id": str(cid)}, namespace="/staff")
        typing = await asyncio.wait_for(seen.get(), 5)
    finally:
        for sio in sockets:
            await sio.disconnect()
    assert (viewing["state"], viewing["name"]) == ("viewing", "Alex.Agent")
    assert typing["state"] == "typing" and typing["conversation_id"] == str(cid)


async def test_events_cross_hub_processes_through_redis(
    db: Database, web_settings: Settings, aiohttp_client: Any
) -> None:
    """A staff socket on one `hub serve` hears about a message another one received."""
    from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, fixture, sign

    settings = replace(web_settings, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN)
    receiving: TestClient = await aiohttp_client(create_app(settings, db=db))
    watching: TestClient = await aiohttp_client(create_app(settings, db=db))
    await make_staff(db, "ada.admin@demo-clinic.example.org", role="admin")
    await sign_in(watching, "ada.admin@demo-clinic.example.org")
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("message:new", received.put_nowait, namespace="/staff")
    await sio.connect(
        str(watching.make_url("/")),
        namespaces=["/staff"],
        headers={"Cookie": f"hub_session={session_cookie(watching)}"},
        transports=["websocket"],
    )
    try:
        params = fixture("inbound_sms")["params"]
        posted = await receiving.post(
            "/webhooks/twilio/sms",
            data=params,
            headers={"X-Twilio-Signature": sign("http://127.0.0.1/webhooks/twilio/sms", params)},
        )
        assert posted.status == 200
        event = await asyncio.wait_for(received.get(), 5)
    finally:
        await sio.disconnect()
    assert event["message_id"]


async def test_staff_records_a_phone_opt_out_and_replies_are_refused(
    client: TestClient, db: Database, two_teams: dict[str, Any]
) -> None:
    await sign_in(client, "alex.agent@demo-clinic.example.org")
    cid = two_teams["conv_a"]
    csrf = await csrf_of(client, f"/conversations/{cid}")
    bad = await client.post(
        f"/conversations/{cid}/consent",
        data={
            "csrf_token": csrf,
            "channel": "sms",
            "purpose": "all",
            "state": "revoked",
            "reason": "because I said so",
        },
    )
    assert "reason must be one of" in await bad.text()
    done = await client.post(
        f"/conversations/{cid}/consent",
        data={
            "csrf_token": csrf,
            "channel": "sms",
            "purpose": "all",
            "state": "revoked",
            "reason": "phone",
        },
        allow_redirects=False,
    )
    assert done.status == 303
    refused = await client.post(
        f"/api/conversations/{cid}/messages", json={"body": "hi"}, headers={"X-CSRF-Token": csrf}
    )
    assert refused.status == 409
    error = (await refused.json())["error"]
    assert error["code"] == "opted_out"
    assert "through staff (patient asked on the phone)" in error["message"]


async def test_admin_edits_the_consent_policy(client: TestClient, db: Database) -> None:
    await make_staff(db, "ada.admin@demo-clinic.example.org", role="admin")
    await sign_in(client, "ada.admin@demo-clinic.example.org")
    csrf = await csrf_of(client, "/admin/consent")
    bad = await client.post(
        "/admin/consent", data={"csrf_token": csrf, "policy": '{"send_window": ["22:00", "07:00"]}'}
    )
    assert "send_window" in await bad.text()
    ok = await client.post(
        "/admin/consent",
        data={
            "csrf_token": csrf,
            "policy": '{"send_window": ["09:00", "19:30"], "caps": {"per_day": 2, "per_week": 4}}',
        },
    )
    assert "Consent policy saved" in await ok.text()
    assert "19:30" in await (await client.get("/admin/consent")).text()


async def test_fhir_consent_export_through_the_api(
    client: TestClient, db: Database, two_teams: dict[str, Any]
) -> None:
    from fhir.resources.R4B.bundle import Bundle

    await sign_in(client, "alex.agent@demo-clinic.example.org")
    mine, theirs = two_teams["conv_a"], two_teams["conv_b"]
    async with db.reader() as session:
        patient_a = (await session.get(Conversation, mine)).patient_id  # type: ignore[union-attr]
        patient_b = (await session.get(Conversation, theirs)).patient_id  # type: ignore[union-attr]
    csrf = await csrf_of(client, f"/conversations/{mine}")
    await client.post(
        f"/conversations/{mine}/consent",
        data={
            "csrf_token": csrf,
            "channel": "sms",
            "purpose": "marketing",
            "state": "revoked",
            "reason": "phone",
        },
    )
    response = await client.get(f"/api/patients/{patient_a}/consents.fhir")
    assert response.status == 200
    assert response.content_type == "application/fhir+json"
    bundle = await response.json()
    Bundle.model_validate(bundle)
    assert [e["resource"]["provision"]["provision"][0]["type"] for e in bundle["entry"]] == ["deny"]
    assert (await client.get(f"/api/patients/{patient_b}/consents.fhir")).status == 404


async def test_admin_previews_a_template_with_a_patient_and_it_is_audited(
    client: TestClient, db: Database, two_teams: dict[str, Any]
) -> None:
    from hub.templates.actions import do_seed_templates

    await do_seed_templates(db)
    await make_staff(db, "ada.admin@demo-clinic.example.org", role="admin")
    await sign_in(client, "ada.admin@demo-clinic.example.org")
    page = await client.get("/admin/templates")
    assert page.status == 200 and "appointment_reminder" in await page.text()
    async with db.reader() as session:
        patient_id = (await session.get(Conversation, two_teams["conv_a"])).patient_id  # type: ignore[union-attr]
    csrf = await csrf_of(client, "/admin/templates")
    preview = await client.post(
        "/admin/templates/preview",
        data={
            "csrf_token": csrf,
            "key": "appointment_reminder",
            "channel": "sms",
            "patient_id": str(patient_id),
        },
    )
    html = await preview.text()
    assert "Avery" in html and "segment(s)" in html and "GSM-7" in html
    async with db.reader() as session:
        events = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "template.preview"))
        ).all()
    assert [e.subject_id for e in events] == [str(patient_id)]
    saved = await client.post(
        "/admin/templates",
        data={
            "csrf_token": csrf,
            "key": "appointment_reminder",
            "channel": "sms",
            "locale": "en",
            "body": "Hi {{ patient.first_name | default('') }}, about your biopsy visit",
        },
    )
    assert "not a secure channel" in await saved.text()


async def test_live_fragments_check_access_and_audit_the_single_message(
    client: TestClient, db: Database, two_teams: dict[str, Any]
) -> None:
    await sign_in(client, "alex.agent@demo-clinic.example.org")
    mine, theirs = two_teams["conv_a"], two_teams["conv_b"]
    async with db.reader() as session:
        ours = (await session.scalars(select(Message).where(Message.conversation_id == mine))).one()
        other = (
            await session.scalars(select(Message).where(Message.conversation_id == theirs))
        ).one()
    fragment = await client.get(f"/conversations/{mine}/messages/{ours.id}")
    assert fragment.status == 200 and "hello" in await fragment.text()
    assert (await client.get(f"/conversations/{theirs}/messages/{other.id}")).status == 404
    assert (await client.get(f"/conversations/{mine}/messages/{other.id}")).status == 404
    async with db.reader() as session:
        reads = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "message.read"))
        ).all()
    assert [e.subject_id for e in reads] == [str(ours.id)]
