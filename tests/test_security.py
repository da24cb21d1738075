"""Security of the hub as an attacker would try it, through real HTTP and a real socket.io
client: forged and replayed webhook signatures, CSRF, another team's conversations, session
fixation, XSS payloads in everything staff see, SQL-shaped filters, path traversal in
attachment names, oversized bodies. Every log record the module causes is kept, and the last
test greps them for the synthetic PHI used here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import logging
import re
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import markupsafe
import pytest
import socketio
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from hub.audit import Actor, AuditEvent
from hub.config import Settings
from hub.consent.models import ConsentRecord
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.actions.assignment import do_assign
from hub.inbox.actions.conversations import do_add_note
from hub.inbox.actions.email_intake import ORIGINAL_NAME
from hub.inbox.denials import DENIED_ACTION
from hub.inbox.email_ids import email_id_index
from hub.inbox.models import (
    Attachment,
    CannedResponse,
    Conversation,
    Message,
    Note,
    StaffUser,
    Team,
    conversation_tag,
)
from hub.inbox.schemas import NewPatient, NewStaffUser
from hub.logs import PhiFilter
from hub.templates.actions import do_seed_templates
from tests.conftest import make_staff, stored_rows
from tests.staff_helpers import csrf_of, session_cookie, sign_in
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER, fixture, sign
from web.app import MAX_REQUEST_BYTES, create_app
from web.webhooks import MAX_WEBHOOK_BYTES

pytestmark = pytest.mark.usefixtures("fresh_redis")

PUBLIC = "http://127.0.0.1"
"""Plain http so the test client sends the (otherwise Secure) session cookie."""
EMAIL_SECRET = "whsec-security-only"
EMAIL_MAX_BYTES = 256 * 1024
SYSTEM = Actor.system("test")
AGENT_A = "alex.agent@demo-clinic.example.org"
AGENT_B = "bo.agent@demo-clinic.example.org"
ADMIN = "ada.admin@demo-clinic.example.org"
VOICE_FIXTURES = Path(__file__).resolve().parent.parent / "hub/channels/twilio_voice/fixtures"

# The synthetic PHI this module puts through the hub; none of it may reach a log line.
NAME_A = "Marisol Quintero-Vance"
NAME_B = "Bartholomew Oyelaran"
PHONE_A = "+15550100177"
PHONE_B = "+15550100188"
SMS_PHONE = "+15550100101"  # the Twilio fixtures' sender
EMAIL_A = "marisol.quintero@example.org"
BODY_A = "My inhaler prescription ran out on Tuesday"
BODY_B = "Results for the thyroid panel please"
NOTE_TEXT = "Called pharmacy about the albuterol refill"
SUBJECT = "Question about my colonoscopy prep"
PHI_VALUES = [
    NAME_A,
    NAME_B,
    PHONE_A,
    PHONE_B,
    SMS_PHONE,
    EMAIL_A,
    BODY_A,
    BODY_B,
    NOTE_TEXT,
    SUBJECT,
    fixture("inbound_sms")["params"]["Body"],
]


def national_forms(e164: str) -> list[str]:
    """+15550100177 as people write it: 5550100177, 555-010-0177, (555) 010-0177."""
    n = e164.removeprefix("+1")
    return [
        n,
        f"{n[:3]}-{n[3:6]}-{n[6:]}",
        f"({n[:3]}) {n[3:6]}-{n[6:]}",
        f"{n[:3]}.{n[3:6]}.{n[6:]}",
    ]


# -- every log record of the module --------------------------------------------------------


class RawRecords(logging.Handler):
    """Each record as the code emitted it, before PhiFilter (the code must not log PHI at all;
    the filter is only the second line of defence)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        extras = {
            k: v for k, v in record.__dict__.items() if k not in logging.makeLogRecord({}).__dict__
        }
        exc = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        self.lines.append(f"{record.name} {text} {extras!r} {exc} {record.exc_text or ''}")


@dataclass
class LogCapture:
    path: Path
    raw: RawRecords


@pytest.fixture(scope="module", autouse=True)
def module_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogCapture]:
    """The production handler set-up (PhiFilter on the handler) writing to a file, plus the raw
    records, for every logger, at INFO and above, while this module runs."""
    path = tmp_path_factory.mktemp("logs") / "hub.log"
    written = logging.FileHandler(path, encoding="utf-8")
    written.addFilter(PhiFilter())
    written.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    raw = RawRecords()
    root = logging.getLogger()
    level = root.level
    # Raw first: PhiFilter rewrites the record in place for every handler after it.
    root.handlers.insert(0, raw)
    root.addHandler(written)
    root.setLevel(logging.INFO)
    try:
        yield LogCapture(path, raw)
    finally:
        root.removeHandler(raw)
        root.removeHandler(written)
        written.close()
        root.setLevel(level)


# -- the hub under attack ----------------------------------------------------------------------


@pytest.fixture
def sec_settings(settings: Settings) -> Settings:
    return replace(
        settings,
        public_url=PUBLIC,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=CLINIC_NUMBER,
        email_webhook_secret=EMAIL_SECRET,
        email_max_bytes=EMAIL_MAX_BYTES,
    )


@pytest.fixture
async def client(db: Database, sec_settings: Settings, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(sec_settings, db=db))  # type: ignore[no-any-return]


@dataclass
class Clinic:
    db: Database
    ring: KeyRing
    conv_a: uuid.UUID
    conv_b: uuid.UUID
    patient_a: uuid.UUID
    patient_b: uuid.UUID
    team_a: uuid.UUID
    team_b: uuid.UUID
    message_b: uuid.UUID


async def _conversation(
    db: Database, ring: KeyRing, team_id: uuid.UUID, name: str, phone: str, body: str
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    patient_id = await actions.do_create_patient(
        db, ring, SYSTEM, NewPatient(name=name, phone=phone, email=None), region="US"
    )
    await actions.do_record_inbound(db, ring, patient_id, Channel.SMS, body)
    async with db.transaction() as session:
        conversation = (
            await session.scalars(select(Conversation).where(Conversation.patient_id == patient_id))
        ).one()
        conversation.team_id = team_id
        message_id = await session.scalar(
            select(Message.id).where(Message.conversation_id == conversation.id)
        )
        assert message_id is not None
        return conversation.id, patient_id, message_id


@pytest.fixture
async def clinic(db: Database, ring: KeyRing) -> Clinic:
    await make_staff(db, AGENT_A, role="agent", teams=("Team A",))
    await make_staff(db, AGENT_B, role="agent", teams=("Team B",))
    await make_staff(db, ADMIN, role="admin")
    async with db.reader() as session:
        teams = {t.name: t.id for t in (await session.scalars(select(Team))).all()}
    conv_a, patient_a, _ = await _conversation(db, ring, teams["Team A"], NAME_A, PHONE_A, BODY_A)
    conv_b, patient_b, message_b = await _conversation(
        db, ring, teams["Team B"], NAME_B, PHONE_B, BODY_B
    )
    return Clinic(
        db, ring, conv_a, conv_b, patient_a, patient_b, teams["Team A"], teams["Team B"], message_b
    )


async def post_twilio(
    client: TestClient, path: str, params: dict[str, str], signature: str | None = None
) -> Any:
    if signature is None:
        signature = sign(PUBLIC + path, params)
    headers = {"X-Twilio-Signature": signature} if signature else {}
    return await client.post(path, data=params, headers=headers)


def signed_mail(raw: bytes) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256="
        + hmac.new(EMAIL_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    }


def voice_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VOICE_FIXTURES / f"{name}.json").read_text())
    return data


def mail(
    body: str = BODY_A,
    *,
    subject: str = SUBJECT,
    sender: str = f"{NAME_A} <{EMAIL_A}>",
    attachments: tuple[tuple[str, bytes], ...] = (),
    message_id: str | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "frontdesk@demo-clinic.example.org"
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@mail.example.org>"
    message.set_content(body)
    for name, data in attachments:
        message.add_attachment(data, maintype="text", subtype="plain", filename=name)
    return message.as_bytes()


# -- webhook signatures ------------------------------------------------------------------------

TWILIO_FORMS = {
    "/webhooks/twilio/sms": fixture("inbound_sms")["params"],
    "/webhooks/twilio/status": fixture("status_delivered")["params"],
    "/webhooks/twilio/voice": voice_fixture("incoming_call")["params"],
    "/webhooks/twilio/voice/recording": voice_fixture("record_action")["params"],
    "/webhooks/twilio/voice/transcription": voice_fixture("transcription_completed")["params"],
}


@pytest.mark.parametrize("path", sorted(TWILIO_FORMS))
@pytest.mark.parametrize(
    "forgery", ["none", "garbage", "other_token", "other_url", "altered_after_signing"]
)
async def test_forged_or_altered_twilio_signatures_are_403_and_store_nothing(
    client: TestClient, db: Database, path: str, forgery: str
) -> None:
    params = dict(TWILIO_FORMS[path])
    signature = {
        "none": "",
        "garbage": "bm90IGEgc2lnbmF0dXJl",
        "other_token": sign(PUBLIC + path, params, token="f" * 32),
        "other_url": sign("https://attacker.example.org" + path, params),
        "altered_after_signing": sign(PUBLIC + path, params),
    }[forgery]
    if forgery == "altered_after_signing":  # a captured request replayed with new content
        params["Body" if "Body" in params else "From"] = "+15550100199"
    before = await stored_rows(db)
    response = await post_twilio(client, path, params, signature)
    assert response.status == 403, await response.text()
    assert await stored_rows(db) == before


async def test_forged_or_altered_inbound_mail_is_refused_and_stores_nothing(
    client: TestClient, db: Database
) -> None:
    raw = mail()
    before = await stored_rows(db)
    altered = raw.replace(BODY_A.encode(), b"Please call me at 555-010-0199")
    for body, headers in [
        (raw, {}),
        (raw, {"X-Hub-Signature-256": "sha256=" + "0" * 64}),
        (raw, {"X-Hub-Signature-256": signed_mail(raw)["X-Hub-Signature-256"].upper()}),
        (altered, signed_mail(raw)),  # a captured delivery replayed with new content
    ]:
        response = await client.post("/webhooks/email/inbound", data=body, headers=headers)
        assert response.status == 401, await response.text()
    assert await stored_rows(db) == before


async def test_identical_replays_are_idempotent(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    sms = fixture("inbound_sms")["params"]
    recording = voice_fixture("record_action")["params"]
    raw = mail(message_id="<replayed-1@mail.example.org>")
    for _ in range(3):
        assert (await post_twilio(client, "/webhooks/twilio/sms", sms)).status == 200
    after_sms = await stored_rows(db)
    for _ in range(3):
        response = await post_twilio(client, "/webhooks/twilio/voice/recording", recording)
        assert response.status == 200
    after_voice = await stored_rows(db)
    for _ in range(3):
        response = await client.post("/webhooks/email/inbound", data=raw, headers=signed_mail(raw))
        assert response.status == 200
    after_mail = await stored_rows(db)
    async with db.reader() as session:
        messages = (await session.scalars(select(Message))).all()
    ids = sorted(m.provider_message_id or "" for m in messages)
    mail_id = email_id_index(ring, "replayed-1@mail.example.org")  # stored as its blind index
    assert ids == sorted([sms["MessageSid"], recording["RecordingSid"], mail_id]), ids
    assert after_sms["Message"] + 2 == after_mail["Message"]
    assert after_voice["Message"] == after_sms["Message"] + 1


async def test_a_signed_callback_naming_an_impossible_attempt_is_400(
    client: TestClient, db: Database
) -> None:
    """Regression: the attempt number of the hub's own callback URL went to the database
    unchecked, and on PostgreSQL a 32-bit overflow answered Twilio 500 (found by test_fuzz)."""
    before = await stored_rows(db)
    ref = urlencode({"m": str(uuid.uuid4()), "a": str(2**31)})
    for path, params in [
        ("/webhooks/twilio/status", fixture("status_delivered")["params"]),
        ("/webhooks/twilio/voice/status", voice_fixture("status_completed")["params"]),
        ("/webhooks/twilio/voice/outbound", voice_fixture("outbound_answered_machine")["params"]),
    ]:
        response = await post_twilio(client, f"{path}?{ref}", params)
        assert response.status == 400, (path, await response.text())
        assert "reference is damaged" in await response.text()
    assert await stored_rows(db) == before


# -- CSRF --------------------------------------------------------------------------------------


async def _state(db: Database, conversation_id: uuid.UUID) -> tuple[Any, ...]:
    async with db.reader() as session:
        c = await session.get(Conversation, conversation_id)
        assert c is not None
        notes = await session.scalar(select(func.count()).select_from(Note))
        messages = await session.scalar(select(func.count()).select_from(Message))
        consents = await session.scalar(select(func.count()).select_from(ConsentRecord))
        teams = await session.scalar(select(func.count()).select_from(Team))
        return (
            c.status,
            c.priority,
            c.assignee_id,
            await session.scalar(select(func.count()).select_from(conversation_tag)),
            notes,
            messages,
            consents,
            teams,
        )


async def test_state_changing_posts_without_the_sessions_csrf_token_are_403_and_change_nothing(
    client: TestClient, db: Database, clinic: Clinic, aiohttp_client: Any, sec_settings: Settings
) -> None:
    other: TestClient = await aiohttp_client(create_app(sec_settings, db=db))
    await sign_in(other, ADMIN)
    foreign_token = await csrf_of(other)  # valid, but for someone else's session
    await sign_in(client, ADMIN)
    own_token = await csrf_of(client)
    cid = clinic.conv_a
    before = await _state(db, cid)
    forms = {
        f"/conversations/{cid}/notes": {"body": NOTE_TEXT},
        f"/conversations/{cid}/reply": {"body": BODY_A},
        f"/conversations/{cid}/status": {"status": "resolved"},
        f"/conversations/{cid}/priority": {"priority": "urgent"},
        f"/conversations/{cid}/tags": {"tags": "billing"},
        f"/conversations/{cid}/assign": {"staff_id": ""},
        f"/conversations/{cid}/consent": {
            "channel": "sms",
            "purpose": "all",
            "state": "revoked",
            "reason": "phone",
        },
        "/admin/teams": {"name": "Injected team", "time_zone": "UTC"},
        "/logout": {},
    }
    api = {
        f"/api/conversations/{cid}/notes": {"body": NOTE_TEXT},
        f"/api/conversations/{cid}/messages": {"body": BODY_A},
        f"/api/conversations/{cid}/status": {"status": "resolved"},
        f"/api/conversations/{cid}/priority": {"priority": "urgent"},
    }
    for token in (None, "", "wrong-" + own_token[6:], foreign_token):
        for path, form in forms.items():
            data = form if token is None else {**form, "csrf_token": token}
            response = await client.post(path, data=data, allow_redirects=False)
            assert response.status == 403, (path, token, response.status)
        for path, body in api.items():
            headers = {} if token is None else {"X-CSRF-Token": token}
            response = await client.post(path, json=body, headers=headers)
            assert response.status == 403, (path, token, response.status)
            assert "CSRF" in (await response.json())["error"]["message"]
    assert await _state(db, cid) == before
    # Still signed in (the refused logout did nothing), and the right token works.
    ok = await client.post(
        f"/api/conversations/{cid}/notes",
        json={"body": NOTE_TEXT},
        headers={"X-CSRF-Token": own_token},
    )
    assert ok.status == 201


async def test_sign_in_form_needs_its_own_csrf_pair(client: TestClient, clinic: Clinic) -> None:
    await client.get("/login")
    response = await client.post(
        "/login",
        data={"email": AGENT_A, "password": "correct horse battery", "csrf_token": "forged"},
        allow_redirects=False,
    )
    assert response.status == 403
    assert "hub_session" not in response.cookies


# -- another team's conversations ----------------------------------------------------------------


async def test_an_agent_cannot_reach_another_teams_conversation_by_page_or_api(
    client: TestClient, db: Database, clinic: Clinic
) -> None:
    await sign_in(client, AGENT_A)
    csrf = await csrf_of(client)
    theirs, patient_b = clinic.conv_b, clinic.patient_b
    canned = CannedResponse(title="Hello", body="Hi {{ first_name }}")
    async with db.transaction() as session:
        session.add(canned)
        await session.flush()
        canned_id = canned.id
    before = await _state(db, theirs)
    reads = [
        f"/conversations/{theirs}",
        f"/conversations/{theirs}/messages/{clinic.message_b}",
        f"/inbox/rows/{theirs}",
        f"/api/conversations/{theirs}",
        f"/api/patients/{patient_b}/consents.fhir",
        f"/api/canned-responses/{canned_id}/render?conversation={theirs}",
    ]
    for path in reads:
        response = await client.get(path)
        text = await response.text()
        assert response.status in (404, 204), (path, response.status)
        assert NAME_B not in text and BODY_B not in text and "0100188" not in text, path
    writes = {
        f"/api/conversations/{theirs}/notes": {"body": NOTE_TEXT},
        f"/api/conversations/{theirs}/messages": {"body": "hi"},
        f"/api/conversations/{theirs}/status": {"status": "resolved"},
        f"/api/conversations/{theirs}/priority": {"priority": "urgent"},
        f"/api/conversations/{theirs}/assign": {"staff_id": None},
    }
    for path, body in writes.items():
        response = await client.post(path, json=body, headers={"X-CSRF-Token": csrf})
        assert response.status == 404, (path, response.status)
    for path in (f"/conversations/{theirs}/notes", f"/conversations/{theirs}/status"):
        response = await client.post(
            path, data={"csrf_token": csrf, "body": "x", "status": "resolved"}
        )
        assert response.status == 404, path
    assert await _state(db, theirs) == before
    # Each refusal of a record that exists is in the audit log, with where it was asked for;
    # an id that names nothing is not (a typo is not a look at another team's patient).
    assert (await client.get(f"/conversations/{uuid.uuid4()}")).status == 404
    denied = await _denials(db)
    agent_a = await _staff_id(db, AGENT_A)
    assert {(actor, s_type, s_id) for actor, s_type, s_id, _ in denied} == {
        (f"staff:{agent_a}", "conversation", str(theirs)),
        (f"staff:{agent_a}", "patient", str(patient_b)),
    }
    assert {surface for *_, surface in denied} == {"page", "api"}
    # The conversation page, one of its messages and the two forms (a list row's refresh
    # answers 204 from the list's own filter, like any row that left the list).
    assert len([d for d in denied if d[3] == "page"]) == 4
    # The list, even filtered on the other team's id, shows only Team A's conversation.
    for query in ("", f"?team={clinic.team_b}", "?status=any&view=all"):
        listed = await (await client.get(f"/api/conversations{query}")).json()
        expected = [] if "team=" in query else [str(clinic.conv_a)]
        assert [i["id"] for i in listed["items"]] == expected, query
        page = await (await client.get(f"/{query}")).text()
        assert NAME_B not in page, query


async def _denials(db: Database) -> list[tuple[str, str, str, str]]:
    """The audit log's denied-access events, oldest first: actor, subject, surface."""
    async with db.reader() as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.action == DENIED_ACTION).order_by(AuditEvent.seq)
        )
        return [(e.actor, e.subject_type, e.subject_id, e.detail["surface"]) for e in rows]


async def _staff_id(db: Database, email: str) -> uuid.UUID:
    async with db.reader() as session:
        staff = await session.scalar(select(StaffUser).where(StaffUser.email == email))
        assert staff is not None
        return staff.id


async def _staff_socket(client: TestClient, received: asyncio.Queue[Any]) -> socketio.AsyncClient:
    sio = socketio.AsyncClient(reconnection=False)
    for event in (
        "message:new",
        "message:status",
        "message:updated",
        "note:new",
        "conversation:updated",
        "conversation:assigned",
        "presence",
    ):
        sio.on(
            event, lambda data, event=event: received.put_nowait((event, data)), namespace="/staff"
        )
    await sio.connect(
        str(client.make_url("/")),
        namespaces=["/staff"],
        headers={"Cookie": f"hub_session={session_cookie(client)}"},
        transports=["websocket"],
    )
    return sio


async def test_another_teams_socket_events_never_reach_an_agent(
    db: Database, sec_settings: Settings, aiohttp_client: Any, clinic: Clinic
) -> None:
    alex: TestClient = await aiohttp_client(create_app(sec_settings, db=db))
    bo: TestClient = await aiohttp_client(create_app(sec_settings, db=db))
    await sign_in(alex, AGENT_A)
    await sign_in(bo, AGENT_B)
    to_alex: asyncio.Queue[Any] = asyncio.Queue()
    to_bo: asyncio.Queue[Any] = asyncio.Queue()
    alex_sio = await _staff_socket(alex, to_alex)
    bo_sio = await _staff_socket(bo, to_bo)
    try:
        assert await bo_sio.call(
            "join_conversation", {"conversation_id": str(clinic.conv_b)}, namespace="/staff"
        ) == {"ok": True}
        denied = await alex_sio.call(
            "join_conversation", {"conversation_id": str(clinic.conv_b)}, namespace="/staff"
        )
        assert denied == {"error": {"status": 404, "message": "No such conversation."}}
        assert [(s_id, surface) for _, _, s_id, surface in await _denials(db)] == [
            (str(clinic.conv_b), "socket")
        ]
        # Typing into a room Alex was refused reaches no one.
        await alex_sio.emit("typing", {"conversation_id": str(clinic.conv_b)}, namespace="/staff")
        # Team B's patient writes in: Bo hears of it, Alex does not.
        params = {
            **fixture("inbound_sms")["params"],
            "From": PHONE_B,
            "Body": BODY_B,
            "MessageSid": "SM" + uuid.uuid4().hex,
        }
        response = await post_twilio(bo, "/webhooks/twilio/sms", params)
        assert response.status == 200
        while True:
            event, data = await asyncio.wait_for(to_bo.get(), 10)
            if event == "message:new":
                break
        assert data["conversation_id"] == str(clinic.conv_b)
        # A round trip on Alex's socket: anything sent to it before is delivered by now.
        await alex_sio.call("heartbeat", {}, namespace="/staff", timeout=5)
        leaked = [to_alex.get_nowait() for _ in range(to_alex.qsize())]
        assert not [e for e in leaked if str(clinic.conv_b) in json.dumps(e[1])], leaked
    finally:
        await alex_sio.disconnect()
        await bo_sio.disconnect()


# -- sessions ------------------------------------------------------------------------------------


async def test_a_session_id_set_before_sign_in_is_never_the_one_after(
    client: TestClient, db: Database, clinic: Clinic, aiohttp_client: Any, sec_settings: Settings
) -> None:
    planted = "attacker-chosen-session-id-0123456789"
    client.session.cookie_jar.update_cookies({"hub_session": planted}, client.make_url("/"))
    assert (await client.get("/", allow_redirects=False)).status == 303
    response = await sign_in(client, AGENT_A)
    assert response.status == 303
    token = session_cookie(client)
    assert token != planted and len(token) >= 40
    # The attacker's browser, holding the planted id, is still nobody.
    attacker: TestClient = await aiohttp_client(create_app(sec_settings, db=db))
    attacker.session.cookie_jar.update_cookies({"hub_session": planted}, attacker.make_url("/"))
    assert (await attacker.get("/api/me")).status == 401
    # Signing in again (someone else at the same browser) replaces the session, and the one it
    # replaced is over on the server too.
    await sign_in(client, AGENT_B)
    second = session_cookie(client)
    assert second != token
    attacker.session.cookie_jar.update_cookies({"hub_session": token}, attacker.make_url("/"))
    assert (await attacker.get("/api/me")).status == 401
    # Signing out ends the session on the server: the old cookie replayed is refused.
    csrf = await csrf_of(client)
    assert (await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)).status
    attacker.session.cookie_jar.update_cookies({"hub_session": second}, attacker.make_url("/"))
    assert (await attacker.get("/api/me")).status == 401
    assert (await attacker.get("/", allow_redirects=False)).headers["Location"] == "/login"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example.org/",
        "https://evil.example.org/",
        "/\\evil.example.org",
        "/\t/evil.example.org",
        "/\n/evil.example.org",
        " //evil.example.org",
        "javascript:alert(1)",
    ],
)
async def test_sign_in_never_redirects_off_site(
    client: TestClient, clinic: Clinic, target: str
) -> None:
    await client.get("/login")
    token = client.session.cookie_jar.filter_cookies(client.make_url("/login"))["hub_login_csrf"]
    response = await client.post(
        "/login",
        data={
            "email": AGENT_A,
            "password": "correct horse battery",
            "csrf_token": token.value,
            "next": target,
        },
        allow_redirects=False,
    )
    assert response.status == 303
    location = response.headers["Location"]
    # What a browser makes of it: tabs and newlines are dropped from URLs.
    seen = re.sub(r"[\t\n\r]", "", location).strip()
    assert seen.startswith("/") and not seen.startswith(("//", "/\\")), location


# -- XSS ---------------------------------------------------------------------------------------

PAYLOADS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "'><svg/onload=alert(1)>",
    "{{ 7*7 }}<b>bold</b>",
]
DANGEROUS = re.compile(
    r"<script>alert|<img src=x onerror|<svg/onload|<b>bold|"
    r"""(?:href|src|action|formaction)\s*=\s*["']?\s*javascript:""",
    re.IGNORECASE,
)


def assert_inert(html: str, where: str) -> None:
    found = DANGEROUS.search(html)
    assert found is None, f"{where}: raw payload {found.group(0)!r} in the page"


async def test_xss_payloads_in_every_field_staff_see_render_as_text(
    client: TestClient, db: Database, ring: KeyRing, clinic: Clinic
) -> None:
    payload = " ".join(PAYLOADS)
    staff = await make_staff(db, "x.admin@demo-clinic.example.org", role="admin")
    team = await actions.do_ensure_team(db, SYSTEM, "Team " + PAYLOADS[1])  # the team's name
    await do_seed_templates(db)
    cid, patient_id, _ = await _conversation(
        db, ring, team, NAME_A + PAYLOADS[0], "+15550100166", payload
    )
    await do_add_note(db, ring, staff, cid, NOTE_TEXT + " " + payload)
    team_name = "Team " + PAYLOADS[1]
    colleague = await actions.do_add_staff_user(
        db,
        SYSTEM,
        NewStaffUser(
            "x.agent@demo-clinic.example.org", PAYLOADS[3], "a long passphrase!", teams=[team_name]
        ),
    )
    await do_assign(db, SYSTEM, cid, colleague)
    async with db.transaction() as session:
        session.add(CannedResponse(title=PAYLOADS[3], body=payload))
    # Mail whose subject, sender name, body and attachment names are payloads.
    raw = mail(
        payload,
        subject=payload,
        sender=f'"{PAYLOADS[1]}" <{EMAIL_A}>',
        attachments=((PAYLOADS[0] + ".txt", b"x"), ('"><img src=x onerror=alert(1)>.txt', b"y")),
    )
    response = await client.post("/webhooks/email/inbound", data=raw, headers=signed_mail(raw))
    assert response.status == 200, await response.text()
    async with db.reader() as session:
        mail_conv = (
            await session.scalars(select(Conversation).where(Conversation.channel == Channel.EMAIL))
        ).one()

    await sign_in(client, "x.admin@demo-clinic.example.org")
    csrf = await csrf_of(client, "/admin/templates")
    saved = await client.post(
        "/admin/templates",
        data={
            "csrf_token": csrf,
            "key": "appointment_reminder",
            "channel": "email",
            "locale": "en",
            "subject": payload,
            "body": payload,
        },
    )
    assert "Saved." in await saved.text(), await saved.text()
    preview = await client.post(
        "/admin/templates/preview",
        data={
            "csrf_token": csrf,
            "key": "appointment_reminder",
            "channel": "email",
            "patient_id": str(patient_id),
        },
    )
    assert preview.status == 200
    assert_inert(await preview.text(), "template preview")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in await preview.text()
    pages = [
        "/",
        "/?status=any",
        f"/conversations/{cid}",
        f"/conversations/{mail_conv.id}",
        "/admin/teams",
        "/admin/staff",
        "/admin/canned",
        "/admin/templates",
        "/admin/templates/appointment_reminder",  # the text and its live preview
        "/admin/routing",
    ]
    for path in pages:
        response = await client.get(path)
        assert response.status == 200, path
        assert_inert(await response.text(), path)
    conversation_page = await (await client.get(f"/conversations/{cid}")).text()
    assert str(markupsafe.escape(PAYLOADS[0])) in conversation_page
    assert str(markupsafe.escape(PAYLOADS[1])) in conversation_page
    assert str(markupsafe.escape(PAYLOADS[3])) in conversation_page  # the assignee's name
    assert "{{ 7*7 }}" in conversation_page  # shown as typed, never run as a template
    api = await (await client.get(f"/api/conversations/{cid}")).json()
    assert api["patient"]["name"] == NAME_A + PAYLOADS[0]  # JSON keeps the text as written


INJECTED = (
    'document.querySelectorAll(\'img[src="x"], svg[onload], [onerror], [onload],'
    " script:not([src])').length"
)
"""Elements a payload would have made had it been parsed as HTML (CSP would stop it running;
this catches the injection itself)."""


@pytest.mark.slow
async def test_xss_payloads_stay_text_in_a_real_browser_as_messages_arrive_live(
    db: Database,
    ring: KeyRing,
    sec_settings: Settings,
    aiohttp_server: Any,
    clinic: Clinic,
    browser: Any,
) -> None:
    from tests.stack import free_port

    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    await aiohttp_server(create_app(replace(sec_settings, public_url=hub_url), db=db), port=port)
    payload = " ".join(PAYLOADS)
    phone = "+15550100155"
    cid, _, _ = await _conversation(db, ring, clinic.team_a, payload, phone, payload)
    staff = await make_staff(db, "z.admin@demo-clinic.example.org", role="admin")
    await do_add_note(db, ring, staff, cid, payload)

    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(f"{hub_url}/login")
    await page.get_by_label("Email").fill("z.admin@demo-clinic.example.org")
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{hub_url}/")
    await page.wait_for_function("() => window.hubSocketConnected === true", timeout=10_000)

    async def text_in(body: str) -> None:
        params = {
            **fixture("inbound_sms")["params"],
            "From": phone,
            "Body": body,
            "MessageSid": "SM" + uuid.uuid4().hex,
        }
        response = await client_post(hub_url, "/webhooks/twilio/sms", params)
        assert response == 200

    # The inbox row is re-rendered live from a server fragment.
    await text_in(PAYLOADS[1] + " live-row")
    await page.locator("#conversation-list li", has_text="live-row").wait_for(timeout=10_000)
    assert await page.evaluate(INJECTED) == 0
    # The conversation page appends a live message from a fragment too.
    await page.goto(f"{hub_url}/conversations/{cid}")
    await page.wait_for_function("() => window.hubSocketConnected === true", timeout=10_000)
    await text_in(PAYLOADS[0] + " live-thread")
    await page.locator("#thread li", has_text="live-thread").wait_for(timeout=10_000)
    assert "<script>alert(1)</script>" in await page.locator("#thread").inner_text()
    assert await page.evaluate(INJECTED) == 0
    assert dialogs == []
    await page.close()


async def client_post(base: str, path: str, params: dict[str, str]) -> int:
    import aiohttp

    headers = {"X-Twilio-Signature": sign(base + path, params)}
    async with (
        aiohttp.ClientSession() as http,
        http.post(base + path, data=params, headers=headers) as response,
    ):
        return response.status


# -- SQL-shaped filter values ------------------------------------------------------------------

SQL_SHAPED = [
    "' OR 1=1 --",
    "'; DROP TABLE inbox_conversation; --",
    "%",
    "_",
    "%' OR '%'='",
    "\\",
    "\u0000",
    "😀",
    "\u02bc OR 1=1 --",
    "1) OR (1=1",
    "x" * 5000,
]


async def test_sql_shaped_filter_values_are_200_or_400_and_never_leak(
    client: TestClient, db: Database, clinic: Clinic
) -> None:
    await sign_in(client, AGENT_A)
    names = ["view", "team", "status", "channel", "priority", "overdue", "cursor", "limit"]
    for value in SQL_SHAPED:
        for name in names:
            query = "?" + urlencode({name: value})
            for path in ("/", "/api/conversations"):
                response = await client.get(path + query)
                text = await response.text()
                assert response.status in (200, 400), (path, name, value[:20], response.status)
                assert NAME_B not in text and BODY_B[:30] not in text, (path, name)
    # Still there afterwards.
    listed = await (await client.get("/api/conversations")).json()
    assert [i["id"] for i in listed["items"]] == [str(clinic.conv_a)]


FORGED_CURSORS: list[Any] = [
    [2**70, "2026-01-01T00:00:00+00:00", "00000000-0000-0000-0000-000000000000"],
    [1, "2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"],
    [1, "9999-12-31T23:59:59+00:00", "00000000-0000-0000-0000-000000000000"],
    [1, "0001-01-01T00:00:00+14:00", "00000000-0000-0000-0000-000000000000"],
    [1, "9999-12-31T23:59:59-14:00", "00000000-0000-0000-0000-000000000000"],
    ["1", "x", "y"],
    {"a": 1, "b": 2, "c": 3},
    [1, 2],
    "' OR 1=1 --",
]


async def test_a_forged_page_cursor_is_a_400_or_a_page(client: TestClient, clinic: Clinic) -> None:
    """Regression: a cursor with a naive time or a rank past 64 bits answered 500."""
    await sign_in(client, AGENT_A)
    for cursor in FORGED_CURSORS:
        token = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")
        for path in ("/", "/api/conversations"):
            response = await client.get(f"{path}?cursor={quote(token)}")
            text = await response.text()
            assert response.status in (200, 400), (path, cursor, text)
            assert NAME_B not in text
    # The cursors the hub makes itself still page through everything.
    await sign_in(client, ADMIN)
    seen: list[str] = []
    cursor = ""
    for _ in range(3):
        page = await (await client.get(f"/api/conversations?limit=1{cursor}")).json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = "&cursor=" + quote(page["next_cursor"])
    assert sorted(seen) == sorted([str(clinic.conv_a), str(clinic.conv_b)])


# -- path traversal in attachment names --------------------------------------------------------

TRAVERSAL_NAMES = [
    "../../etc/passwd",
    "/etc/passwd",
    "..\\..\\windows\\system32\\drivers\\etc\\hosts",
    "C:\\Windows\\win.ini",
    "report\x00.pdf.txt",
    "....//....//secret.txt",
    "%2e%2e%2fetc%2fpasswd",
    "\u202etxt.exe",
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


async def test_attachment_names_cannot_name_a_path(
    client: TestClient,
    db: Database,
    ring: KeyRing,
    clinic: Clinic,
    tmp_path: Path,
    sec_settings: Settings,
) -> None:
    assert sec_settings.var_dir.is_relative_to(tmp_path)  # the hub's own files live here
    files_before = _files(tmp_path)
    sent = {f"file {i}".encode(): name for i, name in enumerate(TRAVERSAL_NAMES)}
    raw = mail("See attached", attachments=tuple((name, data) for data, name in sent.items()))
    response = await client.post("/webhooks/email/inbound", data=raw, headers=signed_mail(raw))
    assert response.status == 200, await response.text()
    # An MMS whose media URL walks up a path: the URL is the provider's, never a file name.
    mms = {
        **fixture("inbound_mms")["params"],
        "MessageSid": "MM" + uuid.uuid4().hex,
        "MediaUrl0": "https://api.twilio.com/2010-04-01/Accounts/AC1/Media/../../../../etc/passwd",
    }
    assert (await post_twilio(client, "/webhooks/twilio/sms", mms)).status == 200
    async with db.reader() as session:
        atts = (await session.scalars(select(Attachment))).all()
    from_mail = {a.unseal_bytes(ring, "data"): a for a in atts if a.data_enc is not None}
    original = from_mail.pop(raw)  # the whole message is kept too, under a name of ours
    assert original.unseal(ring, "filename") == ORIGINAL_NAME
    assert set(from_mail) == set(sent)  # every file kept, in the database, encrypted
    for data, att in from_mail.items():
        name = att.unseal(ring, "filename")
        assert name, sent[data]
        assert not {"/", "\\", "\x00"} & set(name), (sent[data], name)
        assert name not in (".", ".."), (sent[data], name)
    assert all(a.unseal(ring, "filename") is None for a in atts if a.data_enc is None)
    # Staff download them under a name of letters, digits and ._- only.
    await sign_in(client, ADMIN)
    for att in from_mail.values():
        response = await client.get(f"/attachments/{att.id}")
        assert response.status == 200
        disposition = response.headers["Content-Disposition"]
        served = re.fullmatch(r'(inline|attachment); filename="([A-Za-z0-9._\- ]+)"', disposition)
        assert served, disposition
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    # No file appeared outside the hub's var directory, and none named after a payload.
    new_files = _files(tmp_path) - files_before
    assert all(p.is_relative_to(sec_settings.var_dir) for p in new_files), new_files
    assert not {"passwd", "hosts", "win.ini", "secret.txt"} & {p.name for p in new_files}


# -- oversized bodies --------------------------------------------------------------------------


async def test_oversized_bodies_are_413_and_store_nothing(
    client: TestClient, db: Database, clinic: Clinic
) -> None:
    before = await stored_rows(db)
    big_form = {**fixture("inbound_sms")["params"], "Body": "x" * (MAX_WEBHOOK_BYTES + 1)}
    for path in ("/webhooks/twilio/sms", "/webhooks/twilio/status", "/webhooks/twilio/voice"):
        response = await post_twilio(client, path, big_form)
        assert response.status == 413, path
    big_mail = mail("y" * (EMAIL_MAX_BYTES + 1))
    response = await client.post(
        "/webhooks/email/inbound", data=big_mail, headers=signed_mail(big_mail)
    )
    assert response.status == 413
    await sign_in(client, AGENT_A)
    csrf = await csrf_of(client)
    huge = "z" * (MAX_REQUEST_BYTES + 1)
    api = await client.post(
        f"/api/conversations/{clinic.conv_a}/notes",
        data=io.BytesIO(json.dumps({"body": huge}).encode()),
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
    )
    assert api.status == 413
    form = await client.post(
        f"/conversations/{clinic.conv_a}/notes",
        data=io.BytesIO(urlencode({"csrf_token": csrf, "body": huge}).encode()),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    )
    assert form.status == 413
    assert await stored_rows(db) == before


# -- no PHI in any log line --------------------------------------------------------------------


async def test_no_log_line_of_the_module_holds_phi(
    client: TestClient, db: Database, clinic: Clinic, module_logs: LogCapture
) -> None:
    """Runs last (pytest keeps file order): PHI-carrying traffic of its own (so it checks
    something when run alone), then the grep over everything the module logged, as written
    through PhiFilter and as the code emitted it."""
    params = {
        **fixture("inbound_sms")["params"],
        "From": PHONE_A,
        "Body": BODY_A,
        "MessageSid": "SM" + uuid.uuid4().hex,
    }
    assert (await post_twilio(client, "/webhooks/twilio/sms", params)).status == 200
    raw = mail(message_id="<phi-grep@mail.example.org>")
    assert (
        await client.post("/webhooks/email/inbound", data=raw, headers=signed_mail(raw))
    ).status == 200
    await sign_in(client, AGENT_A)
    assert (await client.get(f"/conversations/{clinic.conv_a}")).status == 200
    for handler in logging.getLogger().handlers:
        handler.flush()
    written = module_logs.path.read_text(encoding="utf-8")
    raw_lines = "\n".join(module_logs.raw.lines)
    assert written.strip() and raw_lines.strip(), "nothing was logged: the capture is broken"
    values = [
        v
        for value in PHI_VALUES
        for v in [value, *(national_forms(value) if value.startswith("+1") else [])]
    ]
    for label, text in (("log file", written), ("raw records", raw_lines)):
        hits = [v for v in values if v.lower() in text.lower()]
        assert hits == [], f"PHI in the {label}: {hits}"
