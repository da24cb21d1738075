"""Tables for what `make mutate` found the suite did not hold (docs/testing.md): the words of
a bounce report, what a bounce written for people yields, what `hub audit verify` says about
each kind of tampering, how the inbound-mail webhook refuses, and what a claimed send hands the
provider. Each row is written from the rule, so a plausible slip in the code fails one."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import delete, func, select, text, update

from hub.audit import GENESIS_HASH, Actor, Anchor, AuditEvent, AuditHead, record, verify
from hub.channels.email_smtp.bounce import plain_bounce
from hub.channels.email_smtp.parse import parse_email
from hub.channels.registry import CHANNEL_PROVIDERS
from hub.config import Settings
from hub.consent.actions import do_record_consent
from hub.consent.models import ConsentState, Purpose
from hub.consent.policy import decide
from hub.consent.schemas import Outcome
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, MessageStatus, Role
from hub.errors import HubError
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.actions.intake import Keyword, detect_keyword
from hub.inbox.models import Conversation, DeliveryAttempt, Message, Patient, StaffUser, Team
from hub.inbox.schemas import NewPatient
from hub.outbox import OutboxEvent
from tests.conftest import ON_POSTGRES, make_staff
from tests.mail_reports import OUR_ID, multi, report
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

# --- a report's Action words ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "permanent"),
    [
        # "expired" (SendGrid) is a queue that gave up, even with a 4.x.x class.
        ("Action: expired|Status: 4.4.7", True),
        # Success words are never a failure, even when no status backs them.
        ("Action: delivered", False),
        ("Action: relayed", False),
        ("Action: expanded", False),
        ("Action: relayed|Status: 5.0.0", False),
        ("Action: expanded|Status: 5.0.0", False),
        ("Action: delivered|Status: 5.0.0", False),
    ],
)
def test_report_action_words(fields: str, permanent: bool) -> None:
    bounce = parse_email(report(fields)).bounce
    assert bounce is not None
    assert bounce.permanent is permanent


A, B, C, D = (f"rfc822; {x}@example.org" for x in ("ana", "ben", "cai", "dev"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Of several recipients, the failed one is reported, then a delayed one.
        (
            multi(
                f"Final-Recipient: {A}|Action: delivered|Status: 2.0.0",
                f"Final-Recipient: {B}|Action: delayed|Status: 4.2.2",
                f"Final-Recipient: {C}|Action: failed|Status: 5.1.1|"
                "Diagnostic-Code: smtp; 550 5.1.1 no such user",
            ),
            ("cai@example.org", "failed", "5.1.1", "550 5.1.1 no such user", True),
        ),
        (
            multi(
                f"Final-Recipient: {A}|Action: delivered|Status: 2.0.0",
                f"Final-Recipient: {B}|Action: delayed|Status: 4.2.2",
            ),
            ("ben@example.org", "delayed", "4.2.2", None, False),
        ),
        (
            multi(
                f"Final-Recipient: {A}|Action: delivered", f"Final-Recipient: {C}|Action: FAILED"
            ),
            ("cai@example.org", "failed", None, None, True),
        ),
        # Any one of Action, Status or Final-Recipient makes a block a recipient's.
        (
            multi(f"Original-Recipient: {D}|Action: failed"),
            ("dev@example.org", "failed", None, None, True),
        ),
        (
            multi(f"Original-Recipient: {D}|Status: 5.1.1"),
            ("dev@example.org", None, "5.1.1", None, True),
        ),
        (
            multi(f"Final-Recipient: {D}|Diagnostic-Code: smtp; 550 gone"),
            ("dev@example.org", None, None, "550 gone", True),
        ),
        # An Action with a comment is still that Action.
        (
            multi(f"Final-Recipient: {D}|Action: failed (gave up)|Status: 4.4.7"),
            ("dev@example.org", "failed", "4.4.7", None, True),
        ),
        # A report that quotes no Message-ID, or names no recipient, is still a failure.
        (
            multi(f"Final-Recipient: {D}|Action: failed|Status: 5.1.1", quoted=False),
            ("dev@example.org", "failed", "5.1.1", None, True),
        ),
        (multi("Remote-MTA: dns; mx.example.org"), (None, None, None, None, True)),
    ],
    ids=[
        "failed-first",
        "delayed-next",
        "case",
        "action-only",
        "status-only",
        "recipient-only",
        "comment",
        "no-id",
        "no-block",
    ],
)
def test_report_table(raw: bytes, expected: tuple[Any, ...]) -> None:
    bounce = parse_email(raw).bounce
    assert bounce is not None
    got = (bounce.recipient, bounce.action, bounce.status, bounce.diagnostic, bounce.permanent)
    assert got == expected


# --- a bounce written for people --------------------------------------------------------------


def people(body: str, quoted: str = f"Message-ID: {OUR_ID}\nTo: slow.patient@example.org") -> Any:
    raw = f"""From: MAILER-DAEMON@mx.example.org
To: bounces@reply.demo-clinic.example.org
Subject: Mail delivery failed
Content-Type: text/plain

{body}

------ original headers ------
{quoted}
""".replace("\n", "\r\n")
    return message_from_bytes(raw.encode())


@pytest.mark.parametrize(
    ("body", "quoted", "expected"),
    [
        # The line staff read as the reason is the one holding the status or the SMTP reply.
        (
            "Hello.\nRemote said: 550 5.1.1 no such user here\nBye.",
            None,
            ("5.1.1", "failed", True, "Remote said: 550 5.1.1 no such user here"),
        ),
        (
            "Hello.\nThe server answered 552 mailbox over quota\nBye.",
            None,
            (None, "failed", True, "The server answered 552 mailbox over quota"),
        ),
        (
            "We tried.\nStatus 4.2.2 for the mailbox\nThis is a warning only; will retry.",
            None,
            ("4.2.2", "delayed", False, "Status 4.2.2 for the mailbox"),
        ),
        (
            "Mailbox full (4.2.2).\nNothing else.",
            None,
            ("4.2.2", "delayed", False, "Mailbox full (4.2.2)."),
        ),
        # A status alone, with neither the original's id nor its recipient, is still a bounce.
        ("Delivery failed: 5.7.1 refused", "Subject: hello", ("5.7.1", "failed", True, None)),
        # Found from the quoted original alone: no status, no id named, a failure.
        ("It did not work.", "To: slow.patient@example.org", (None, "failed", True, None)),
    ],
)
def test_people_bounce_table(
    body: str, quoted: str | None, expected: tuple[str | None, str, bool, str | None]
) -> None:
    message = people(body, quoted) if quoted else people(body)
    text_ = message.get_payload()
    bounce = plain_bounce(message, [], text_)
    assert bounce is not None
    status, action, permanent, diagnostic = expected
    assert (bounce.status, bounce.action, bounce.permanent) == (status, action, permanent)
    if diagnostic is not None:
        assert bounce.diagnostic == diagnostic


def test_a_people_bounce_names_the_original_when_quoted() -> None:
    bounce = plain_bounce(people("Status: 5.1.1"), [], people("Status: 5.1.1").get_payload())
    assert bounce is not None
    assert bounce.original_message_id == OUR_ID.strip("<>")
    assert bounce.recipient == "slow.patient@example.org"


# --- what `hub audit verify` says -------------------------------------------------------------

ALICE = Actor.staff("00000000-0000-7000-8000-00000000000a")


async def _chain(db: Database, n: int) -> None:
    for i in range(n):
        async with db.transaction() as session:
            await record(session, ALICE, "patient.read", "patient", f"p{i}", {"i": i})


async def _tamper(db: Database, *statements: Any) -> None:
    async with db.transaction() as session:
        if ON_POSTGRES:  # migration 0014's triggers refuse this to the hub's own role
            await session.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            await session.execute(statement)


async def _verified(db: Database, anchor: Anchor | None = None) -> tuple[Any, ...]:
    async with db.reader() as session:
        result = await verify(session, anchor)
    return (result.ok, result.checked, result.bad_seq, result.reason)


HEAD_MOVED = (
    "the chain ends at row 5 but the head records row {seq}: "
    "rows were deleted from the end or the head was edited"
)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda: [update(AuditHead).values(seq=7)], (False, 5, 6, HEAD_MOVED.format(seq=7))),
        (lambda: [update(AuditHead).values(seq=3)], (False, 5, 3, HEAD_MOVED.format(seq=3))),
        (
            lambda: [update(AuditHead).values(hash="0" * 64)],
            (False, 5, 5, HEAD_MOVED.format(seq=5)),
        ),
        (lambda: [delete(AuditHead)], (False, 5, None, "the audit_head row is missing")),
        (
            lambda: [update(AuditEvent).where(AuditEvent.seq == 2).values(prev_hash="0" * 64)],
            (False, 1, 2, "its previous hash does not match the row before it"),
        ),
        (
            lambda: [update(AuditEvent).where(AuditEvent.seq == 4).values(action="patient.update")],
            (False, 3, 4, "its contents do not match its hash"),
        ),
        (
            lambda: [delete(AuditEvent).where(AuditEvent.seq == 2)],
            (False, 1, 2, "row 2 is missing"),
        ),
    ],
    ids=["head-ahead", "head-behind", "head-hash", "no-head", "link", "contents", "gap"],
)
async def test_verify_says_what_was_done(db: Database, change: Any, expected: tuple[Any]) -> None:
    await _chain(db, 5)
    assert await _verified(db) == (True, 5, None, None)
    await _tamper(db, *change())
    assert await _verified(db) == expected


async def test_verify_hands_back_the_head_it_reached(db: Database) -> None:
    await _chain(db, 3)
    async with db.reader() as session:
        result = await verify(session)
        head = await session.scalar(select(AuditHead))
    assert head is not None
    assert result.head == Anchor(3, head.hash)


async def test_a_rewritten_row_at_the_anchor_is_named(db: Database) -> None:
    await _chain(db, 4)
    assert await _verified(db, Anchor(3, "e" * 64)) == (
        False,
        2,
        3,
        "its hash differs from the anchor: this row or one before it was rewritten",
    )


@pytest.mark.parametrize("value", ["3", "3:xyz", "", "three:" + "a" * 64])
def test_a_mistyped_anchor_says_what_one_looks_like(value: str) -> None:
    with pytest.raises(HubError) as caught:
        Anchor.parse(value)
    assert str(caught.value) == (
        "an audit anchor is SEQ:HASH as printed by `hub audit anchor` (a row number, a "
        "colon and 64 hex digits)"
    )


async def test_a_wrong_genesis_anchor_is_named(db: Database) -> None:
    await _chain(db, 2)
    assert await _verified(db, Anchor(0, "f" * 64)) == (
        False,
        0,
        0,
        "the anchor for row 0 must be the genesis hash",
    )
    assert (await _verified(db, Anchor(0, GENESIS_HASH)))[0] is True


# --- the inbound-mail webhook's refusals ------------------------------------------------------

SECRET = "inbound-secret-for-tests"


@pytest.fixture
async def mail_client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    app = create_app(
        replace(
            settings,
            public_url="http://127.0.0.1",
            email_webhook_secret=SECRET,
            email_max_bytes=4096,
        ),
        db=db,
    )
    client: TestClient = await aiohttp_client(app)
    return client


def _mail() -> bytes:
    mail = EmailMessage()
    mail["From"] = "Avery Sample <avery.sample@example.org>"
    mail["To"] = "front-desk@demo-clinic.example.org"
    mail["Subject"] = "Question"
    mail["Message-ID"] = "<survivor-1@mail.example.org>"
    mail.set_content("Can I come earlier?")
    return mail.as_bytes()


def _signed(raw: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


async def _messages(db: Database) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)) or 0)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-Hub-Signature-256": ""}, 401),
        ({"X-Hub-Signature-256": "XXXX"}, 401),
        ({"X-Hub-Signature-256": "sha256="}, 401),
        ({"X-Hub-Signature-256": _signed(b"another body")}, 401),
        ({"X-Hub-Signature-256": _signed(_mail(), "another secret")}, 401),
        ({"X-Hub-Signature-256": _signed(_mail()).removeprefix("sha256=")}, 401),
    ],
    ids=["none", "empty", "junk", "prefix-only", "other-body", "other-secret", "no-prefix"],
)
async def test_unsigned_mail_is_refused_and_counted(
    db: Database, mail_client: TestClient, headers: dict[str, str], status: int
) -> None:
    response = await mail_client.post("/webhooks/email/inbound", data=_mail(), headers=headers)
    assert response.status == status
    assert await response.text() == "missing or wrong X-Hub-Signature-256"
    assert await _messages(db) == 0
    metrics = await (await mail_client.get("/metrics")).text()
    assert _counter(metrics, "email", "inbound", "signature") == 1.0


async def test_the_webhook_answers_in_plain_words_when_off_or_too_big(
    db: Database, settings: Settings, aiohttp_client: Any, mail_client: TestClient
) -> None:
    raw = _mail() + b"x" * 5000
    big = await mail_client.post(
        "/webhooks/email/inbound", data=raw, headers={"X-Hub-Signature-256": _signed(raw)}
    )
    assert (big.status, await big.text()) == (413, "message too large")
    metrics = await (await mail_client.get("/metrics")).text()
    assert _counter(metrics, "email", "inbound", "too_large") == 1.0
    off: TestClient = await aiohttp_client(
        create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    )
    raw = _mail()
    response = await off.post(
        "/webhooks/email/inbound", data=raw, headers={"X-Hub-Signature-256": _signed(raw)}
    )
    assert (response.status, await response.text()) == (
        404,
        "inbound-mail webhook is not configured",
    )
    assert await _messages(db) == 0


async def test_signed_mail_is_taken_once_and_counted(db: Database, mail_client: TestClient) -> None:
    raw = _mail()
    outcomes = []
    for _ in range(2):  # a provider's retry stores nothing more
        response = await mail_client.post(
            "/webhooks/email/inbound", data=raw, headers={"X-Hub-Signature-256": _signed(raw)}
        )
        assert response.status == 200
        outcomes.append((await response.json())["outcome"])
    assert outcomes[0] == "message" and outcomes[1] != "message"
    assert await _messages(db) == 1
    metrics = await (await mail_client.get("/metrics")).text()
    accepted = {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('hub_webhook_accepted_total{kind="inbound",')
        and 'provider="email"' in line
    }
    assert accepted == {outcomes[0]: 1.0, outcomes[1]: 1.0}
    assert _counter(metrics, "email", "inbound", "signature") == 0.0


async def test_signed_junk_is_refused_in_plain_words(db: Database, mail_client: TestClient) -> None:
    raw = b"\x00\x01 not a mail"
    response = await mail_client.post(
        "/webhooks/email/inbound", data=raw, headers={"X-Hub-Signature-256": _signed(raw)}
    )
    assert response.status == 400
    assert await response.text()  # says what was wrong with it
    assert await _messages(db) == 0
    metrics = await (await mail_client.get("/metrics")).text()
    assert _counter(metrics, "email", "inbound", "malformed") == 1.0


def _counter(metrics: str, provider: str, kind: str, reason: str) -> float:
    """The value of hub_webhook_rejected_total for those labels on /metrics (0 when absent)."""
    labels = f'{{kind="{kind}",provider="{provider}",reason="{reason}"}}'
    for line in metrics.splitlines():
        if line.startswith("hub_webhook_rejected_total" + labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- what a claimed send hands the provider ---------------------------------------------------

CLINIC = "+15550100999"
PATIENT = "+15550100123"
PATIENTS: dict[uuid.UUID, uuid.UUID] = {}
"""Queued message -> its patient (the fixture's)."""


@pytest.fixture
async def queued(db: Database, ring: KeyRing) -> AsyncIterator[uuid.UUID]:
    staff = await make_staff(db)
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=PATIENT, verified=True),
        region="US",
    )
    async with db.transaction() as session:
        conversation = Conversation(patient_id=patient_id, channel="sms", channel_address=CLINIC)
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    reply = await actions.do_reply(db, ring, staff, conversation_id, "Your results are ready.")
    PATIENTS[reply.message_id] = patient_id
    yield reply.message_id


async def test_the_first_claim_hands_over_what_the_patient_gets(
    db: Database, ring: KeyRing, queued: uuid.UUID
) -> None:
    claim = await actions.do_claim_send(
        db, ring, queued, provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org"
    )
    assert claim.task is not None
    out = claim.task.outbound
    assert (out.message_id, out.attempt, out.channel) == (queued, 1, Channel.SMS)
    assert (out.to_address, out.from_address, out.body) == (
        PATIENT,
        CLINIC,
        "Your results are ready.",
    )
    assert out.status_callback_url == (
        f"https://hub.example.org/webhooks/twilio/status?m={queued}&a=1"
    )
    assert claim.task.provider == CHANNEL_PROVIDERS[Channel.SMS]
    assert claim.task.decision.allowed
    # The staff screen hears the message is on its way.
    assert await _effects(db, claim.effect_ids) == [("notify:message:status", str(queued))]
    async with db.reader() as session:
        attempts = (await session.scalars(select(DeliveryAttempt))).all()
        message = await session.get(Message, queued)
    assert [(a.message_id, a.attempt) for a in attempts] == [(queued, 1)]
    assert attempts[0].created_at is not None
    assert message is not None and message.send_attempts == 1
    # A duplicate job gets nothing to send.
    again = await actions.do_claim_send(
        db, ring, queued, provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org"
    )
    assert again.task is None and again.skipped is not None


async def test_a_channel_not_connected_fails_the_message_in_plain_words(
    db: Database, ring: KeyRing, queued: uuid.UUID
) -> None:
    claim = await actions.do_claim_send(
        db, ring, queued, provider={Channel.EMAIL: "smtp"}, public_url="https://hub.example.org"
    )
    assert claim.task is None
    assert claim.skipped == "the sms channel is not connected on this hub"
    # Staff see the failure at once.
    assert await _effects(db, claim.effect_ids) == [("notify:message:status", str(queued))]
    async with db.reader() as session:
        message = await session.get(Message, queued)
    assert message is not None
    assert (message.status, message.error_code, message.error_reason) == (
        MessageStatus.FAILED,
        "channel_unavailable",
        "the sms channel is not connected on this hub",
    )


async def test_a_missing_message_is_reported_not_found(db: Database, ring: KeyRing) -> None:
    claim = await actions.do_claim_send(
        db, ring, uuid.uuid4(), provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org"
    )
    assert (claim.task, claim.effect_ids, claim.skipped) == (None, (), "not found")


async def _effects(db: Database, ids: tuple[uuid.UUID, ...]) -> list[tuple[str, str | None]]:
    """The outbox rows behind ``ids``: what is released after commit, and for which message."""
    async with db.reader() as session:
        rows = [await session.get(OutboxEvent, effect_id) for effect_id in ids]
    return [(r.topic, r.payload.get("message_id")) for r in rows if r is not None]


async def test_a_send_after_an_opt_out_fails_and_staff_see_why(
    db: Database, ring: KeyRing, queued: uuid.UUID
) -> None:
    staff = await make_staff(db, "ria.admin@demo-clinic.example.org")
    await do_record_consent(
        db,
        staff,
        PATIENTS[queued],
        Channel.SMS,
        [Purpose.CARE],
        ConsentState.REVOKED,
        "phone",
    )
    claim = await actions.do_claim_send(
        db, ring, queued, provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org"
    )
    assert claim.task is None
    async with db.reader() as session:
        message = await session.get(Message, queued)
        attempts = (await session.scalars(select(DeliveryAttempt))).all()
    assert message is not None and attempts == []
    assert message.status is MessageStatus.FAILED
    assert message.error_code and message.error_reason
    assert claim.skipped == f"refused: {message.error_reason}"
    assert await _effects(db, claim.effect_ids) == [("notify:message:status", str(queued))]


async def test_a_job_that_runs_early_puts_itself_back(
    db: Database, ring: KeyRing, queued: uuid.UUID
) -> None:
    now = utcnow()
    async with db.transaction() as session:
        message = await session.get(Message, queued)
        assert message is not None
        message.next_attempt_at = now + timedelta(hours=1)
    claim = await actions.do_claim_send(
        db, ring, queued, provider=CHANNEL_PROVIDERS, public_url="https://hub.example.org", now=now
    )
    assert (claim.task, claim.skipped) == (None, "not due yet")
    assert await _effects(db, claim.effect_ids) == [("job:send_message", str(queued))]
    async with db.reader() as session:
        event = await session.get(OutboxEvent, claim.effect_ids[0])
        message = await session.get(Message, queued)
    assert event is not None and event.payload["delay_s"] == pytest.approx(3600, abs=1)
    assert message is not None and message.status is MessageStatus.QUEUED


async def test_a_reminder_at_night_waits_for_morning_and_is_never_dropped(
    db: Database, ring: KeyRing
) -> None:
    staff = await make_staff(db)
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=PATIENT, verified=True),
        region="US",
    )
    async with db.transaction() as session:
        conversation = Conversation(patient_id=patient_id, channel="sms", channel_address=CLINIC)
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    reply = await actions.do_reply(
        db, ring, staff, conversation_id, "See you tomorrow at 9.", purpose=Purpose.REMINDERS
    )
    night = utcnow().replace(hour=3, minute=0, second=0, microsecond=0)
    claim = await actions.do_claim_send(
        db,
        ring,
        reply.message_id,
        provider=CHANNEL_PROVIDERS,
        public_url="https://hub.example.org",
        now=night,
    )
    assert claim.task is None
    day = night.strftime("%Y-%m-%d")
    assert claim.skipped == (
        f"deferred: it is {day} 03:00 UTC for the patient, outside 08:00-21:00; "
        f"deferred to {day} 08:00 UTC"
    )
    async with db.reader() as session:
        message = await session.get(Message, reply.message_id)
        assert message is not None
        event = await session.get(OutboxEvent, claim.effect_ids[0])
    assert message.status is MessageStatus.QUEUED
    assert message.next_attempt_at == night.replace(hour=8)
    assert message.error_reason == "waiting: " + claim.skipped.removeprefix("deferred: ")
    assert event is not None and event.topic == "job:send_message"
    assert event.payload["message_id"] == str(reply.message_id)
    assert event.payload["delay_s"] == 5 * 3600


async def test_a_claimed_email_carries_its_reply_address_and_unsubscribe_link(
    db: Database, ring: KeyRing
) -> None:
    staff = await make_staff(db)
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Avery Sample", phone=PATIENT, email="avery@example.org", verified=True),
        region="US",
    )
    async with db.transaction() as session:
        conversation = Conversation(
            patient_id=patient_id, channel="email", channel_address="front-desk@example.org"
        )
        session.add(conversation)
        await session.flush()
        conversation_id = conversation.id
    reply = await actions.do_reply(
        db, ring, staff, conversation_id, "See you tomorrow at 9.", purpose=Purpose.REMINDERS
    )
    noon = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    claim = await actions.do_claim_send(
        db,
        ring,
        reply.message_id,
        provider=CHANNEL_PROVIDERS,
        public_url="https://hub.example.org",
        reply_domain="reply.demo-clinic.example.org",
        now=noon,
    )
    assert claim.task is not None
    out = claim.task.outbound
    assert (out.channel, out.to_address, out.status_callback_url) == (
        Channel.EMAIL,
        "avery@example.org",
        None,
    )
    assert out.reply_to is not None and out.reply_to.startswith("reply+")
    assert out.reply_to.endswith("@reply.demo-clinic.example.org")
    assert out.unsubscribe_url is not None
    assert out.unsubscribe_url.startswith("https://hub.example.org/unsubscribe/")
    assert claim.task.provider == CHANNEL_PROVIDERS[Channel.EMAIL]


# --- what the consent gate tells staff, and which words are keywords ------------------------


@pytest.mark.parametrize(
    ("channel", "address", "unreachable", "code", "reason"),
    [
        (
            Channel.WHATSAPP,
            {},
            {},
            "not_connected",
            "WhatsApp is not connected on this hub yet; reply by another channel",
        ),
        (Channel.EMAIL, {}, {}, "no_address", "patient has no address for email"),
        (
            Channel.SMS,
            {"phone_enc": b"x"},
            {"sms": "landline"},
            "unreachable",
            "patient cannot be reached by SMS: the number is a landline or cannot receive texts",
        ),
        (
            Channel.EMAIL,
            {"email_enc": b"x"},
            {"email": "mailbox gone"},
            "unreachable",
            "patient cannot be reached by email: mailbox gone",
        ),
    ],
)
def test_the_gate_refuses_with_a_reason_staff_can_act_on(
    channel: Channel, address: dict[str, bytes], unreachable: dict[str, str], code: str, reason: str
) -> None:
    at = utcnow()
    patient = Patient(id=uuid.uuid4(), unreachable=unreachable, time_zone="UTC", **address)
    decision = decide(patient, channel, Purpose.CARE, at, {})
    assert (decision.outcome, decision.code, decision.reason) == (Outcome.REFUSED, code, reason)
    assert (decision.patient_id, decision.channel, decision.purpose, decision.at) == (
        patient.id,
        channel,
        Purpose.CARE,
        at,
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", (Keyword.STOP, "STOP")),
        (" stop. ", (Keyword.STOP, "STOP")),
        ("Stop!", (Keyword.STOP, "STOP")),
        ("STOPX", None),
        ("INFOX", None),
        ("XSTOP", None),
        ("help", (Keyword.HELP, "HELP")),
        ("start", (Keyword.START, "START")),
    ],
)
def test_only_the_whole_word_is_a_keyword(body: str, expected: object) -> None:
    assert detect_keyword(body) == expected


@pytest.mark.parametrize("via", [None, "api"])
def test_a_staff_context_carries_who_and_how(via: str | None) -> None:
    team = Team(id=uuid.uuid4(), name="Front desk")
    staff = StaffUser(
        id=uuid.uuid4(),
        role=Role.AGENT,
        display_name="Dana Agent",
        must_change_password=True,
        teams=[team],
    )
    ctx = StaffContext.of(staff) if via is None else StaffContext.of(staff, via)
    assert (ctx.staff_id, ctx.role, ctx.team_ids) == (staff.id, Role.AGENT, frozenset({team.id}))
    assert (ctx.display_name, ctx.via, ctx.must_change_password) == (
        "Dana Agent",
        via or "staff",
        True,
    )
    # The audit log names a person's own actions as staff, a token's as api.
    assert str(ctx.actor) == f"{via or 'staff'}:{staff.id}"
