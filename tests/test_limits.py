"""Limits on what a client or an author can make the hub hold: how long a request body may take
to arrive, how long a note may be, how much a template may render."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.actions.conversations import DEFAULT_MAX_NOTE_CHARS, do_add_note
from hub.inbox.models import Message
from hub.inbox.schemas import NewPatient
from hub.templates import TemplateInvalid, TemplateRenderError
from hub.templates.lint import check_for_save
from hub.templates.render import VariantText, render_variant
from tests.conftest import make_staff, stored_rows
from tests.staff_helpers import csrf_of, sign_in
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER
from web import middleware
from web.app import create_app
from web.keys import METRICS
from web.metrics import Metrics

ADMIN = "robin.admin@demo-clinic.example.org"
TOO_LONG = "Handover. " * (DEFAULT_MAX_NOTE_CHARS // 10) + "!"

pytestmark = pytest.mark.usefixtures("fresh_redis")

DEADLINE_S = 0.2
"""A small body deadline for the tests, so a stalled client is answered quickly."""
ANSWER_WITHIN_S = 5.0
"""How long a test waits for the hub's answer before calling it hung."""


@pytest.fixture
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(middleware, "DEFAULT_BODY_READ_TIMEOUT_S", DEADLINE_S)


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    twilio = replace(
        settings,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=CLINIC_NUMBER,
        public_url="http://127.0.0.1",  # plain http, so the test client keeps Secure-less cookies
    )
    return await aiohttp_client(create_app(twilio, db=db))  # type: ignore[no-any-return]


async def _open(host: str, port: int, path: str, length: int, first: bytes) -> Any:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
        + first
    )
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> bytes:
    # The hub closes the connection after a 408, so reading to the end is the whole answer.
    # A client still sending when the hub closes gets a reset after the answer (the kernel
    # resets a socket closed with unread input); StreamReader.read() to the end would drop
    # what had arrived, so read in pieces and keep them.
    received = bytearray()

    async def read_to_end() -> None:
        while True:
            try:
                piece = await reader.read(4096)
            except ConnectionResetError:
                return
            if not piece:
                return
            received.extend(piece)

    await asyncio.wait_for(read_to_end(), ANSWER_WITHIN_S)
    return bytes(received)


async def test_a_stalled_webhook_body_is_answered_408_and_stores_nothing(
    short_deadline: None, client: TestClient, db: Database
) -> None:
    before = await stored_rows(db)
    reader, writer = await _open(
        client.host, client.port, "/webhooks/twilio/sms", 500, b"From=%2B1555"
    )
    try:
        answer = await _answer(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"did not arrive in time" in answer
    assert await stored_rows(db) == before


async def test_a_trickled_form_body_is_cut_at_the_deadline(
    short_deadline: None, client: TestClient
) -> None:
    # Slowloris: a byte at a time, each well inside any idle timeout, never finishing.
    reader, writer = await _open(client.host, client.port, "/login", 10_000, b"e")

    async def trickle() -> None:
        while not writer.is_closing():
            writer.write(b"x")
            await asyncio.sleep(DEADLINE_S / 10)

    sender = asyncio.create_task(trickle())
    try:
        answer = await _answer(reader)
    finally:
        sender.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_work_after_the_body_has_arrived_is_not_cut(
    short_deadline: None, aiohttp_client: Any
) -> None:
    # The deadline bounds reading the body, not the handler: a slow database after a
    # complete body must still answer.
    read = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        body = await request.read()
        read.set()
        await asyncio.sleep(DEADLINE_S * 3)  # the handler's own slow work, past the deadline
        return web.Response(text=f"{len(body)}")

    app = web.Application(middlewares=[middleware.error_middleware])
    app[METRICS] = Metrics()
    app.router.add_post("/slow", slow)
    client: TestClient = await aiohttp_client(TestServer(app))
    response = await client.post("/slow", data=b"x" * 100_000)
    assert read.is_set()
    assert response.status == 200
    assert await response.text() == "100000"


@pytest.fixture
async def conversation(db: Database, ring: KeyRing) -> uuid.UUID:
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Ada Testpatient", phone="+15550100123", email=None),
        region="US",
    )
    message_id = await actions.do_record_inbound(db, ring, patient_id, Channel.SMS, "Hello")
    async with db.reader() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        return message.conversation_id


async def test_a_note_over_the_cap_is_refused_in_plain_words_and_not_stored(
    db: Database, ring: KeyRing, conversation: uuid.UUID
) -> None:
    admin: StaffContext = await make_staff(db, ADMIN)
    before = await stored_rows(db)
    with pytest.raises(ValueError, match=f"at most {DEFAULT_MAX_NOTE_CHARS:,} characters"):
        await do_add_note(db, ring, admin, conversation, TOO_LONG)
    assert await stored_rows(db) == before
    # The cap counts the note as kept: surrounding blanks are trimmed before it applies.
    await do_add_note(db, ring, admin, conversation, "  " + "n" * DEFAULT_MAX_NOTE_CHARS + "\n")


async def test_the_note_cap_answers_in_the_api_and_on_the_page(
    client: TestClient, db: Database, conversation: uuid.UUID
) -> None:
    await make_staff(db, ADMIN)
    await sign_in(client, ADMIN)
    token = await csrf_of(client)
    before = await stored_rows(db)
    api = await client.post(
        f"/api/conversations/{conversation}/notes",
        json={"body": TOO_LONG},
        headers={"X-CSRF-Token": token},
    )
    assert api.status == 422
    assert "at most 10,000 characters" in (await api.json())["error"]["message"]
    page = await client.post(
        f"/conversations/{conversation}/notes",
        data={"body": TOO_LONG, "csrf_token": token},
        headers={"Referer": str(client.make_url(f"/conversations/{conversation}"))},
    )
    assert page.status == 200
    assert "at most 10,000 characters" in await page.text()
    assert await stored_rows(db) == before


# --- the template sandbox's bounds -----------------------------------------------------------

OVER_THE_BOUNDS = [
    ("{{ 'x' * 300000 }}", "repeating text or a list would make 300,000"),
    ("{{ ['x' * 1000] * 300 }}", "repeating text or a list would make 300,300"),
    ("{{ 10 ** 2000 }}", "a power would make a number over 4,096 bits"),
    ("{{ '%300000s' % 'a' }}", "formatting text would make 300,000"),
    ("{{ '{:>300000}'.format('a') }}", "format() would make 300,000"),
    ("{{ 'a'.ljust(300000) }}", "ljust() would make 300,000"),
    ("{{ 'a' | center(300000) }}", "the center filter would make 300,000"),
    ("{% set s = 'x' * 1000 %}{{ s | replace('x', s) }}", "the replace filter would make"),
    ("{{ range(1000) | join('x' * 1000) }}", "the join filter would make"),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(19) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "joining text with ~ would make 262,144",
    ),
    (
        "{% for a in range(200) %}{% for b in range(200) %}{% endfor %}{% endfor %}done",
        "takes more than 20,000 loop steps and calls",
    ),
    ("{% for i in range(3000) %}{{ 'y' * 100 }}{% endfor %}", "renders more than 200,000"),
    (
        "{% set b %}{% for i in range(3000) %}{{ 'y' * 100 }}{% endfor %}{% endset %}"
        "{{ b | length }}",
        "renders more than 200,000",
    ),
    ("{% for i in range(2100) %}" + "y" * 100 + "{% endfor %}", "renders more than 200,000"),
    (
        "{% set b %}{% for i in range(2100) %}" + "y" * 100 + "{% endfor %}{% endset %}"
        "{{ b | length }}",
        "renders more than 200,000",
    ),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "calls a macro within itself"),
]


@pytest.mark.parametrize(("body", "problem"), OVER_THE_BOUNDS)
def test_a_render_past_a_bound_fails_naming_the_problem(body: str, problem: str) -> None:
    # Sizes just past the bounds: without them these render (slowly, or huge), and pass.
    with pytest.raises(TemplateRenderError) as caught:
        render_variant(VariantText("limits_test", "sms", "en", body), {})
    assert problem in str(caught.value)
    assert "xxxx" not in str(caught.value) and "yyyy" not in str(caught.value)


def test_ordinary_templates_are_within_the_bounds() -> None:
    body = (
        "Hi {{ 'ab' * 3 }} {% for i in range(3) %}{{ i }}{% endfor %} {{ '%05d' % 42 }} "
        "{{ 'a b' | replace('a', 'c') }} {{ [1, 2] | join(', ') }} {{ '{:>4}'.format(7) }} "
        "{{ 2 ** 10 }} {% set ns = namespace(n=0) %}{% for i in range(5) %}"
        "{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"
    )
    rendered = render_variant(VariantText("limits_test", "sms", "en", body), {})
    assert rendered.body == "Hi ababab 012 00042 c b 1, 2    7 1024 10"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("{% if false %}{{ 'x' * 10**9 }}{% endif %}See you soon.", "1,000,000,000 characters"),
        ("{% if false %}{{ ['a', 'b'] * 200000 }}{% endif %}See you soon.", "400,000 characters"),
        ("{% if false %}{{ 9 ** 99999 }}{% endif %}See you soon.", "over 4,096 bits"),
    ],
)
def test_saving_refuses_a_huge_literal_even_where_no_send_reaches_it(
    body: str, problem: str
) -> None:
    # The trial renders never take the branch: only reading the text finds it.
    with pytest.raises(TemplateInvalid, match="the text, line 1: this ") as refused:
        check_for_save("appointment_reminder", "sms", "en", None, body, None)
    assert problem in str(refused.value)
