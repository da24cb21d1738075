"""Tables for what `make mutate` found the suite did not hold (docs/testing.md): the words of
a bounce report, what a bounce written for people yields, what `hub audit verify` says about
each kind of tampering, the consent gate's refusals, keywords, and who a staff context names.
Each row is written from the rule, so a plausible slip in the code fails one. The webhooks'
refusals are in tests/test_mutant_webhooks.py, claimed sends in tests/test_mutant_claims.py."""

from __future__ import annotations

import uuid
from email import message_from_bytes
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update

from hub.audit import GENESIS_HASH, Actor, Anchor, AuditEvent, AuditHead, record, verify
from hub.channels.email_smtp.bounce import plain_bounce
from hub.channels.email_smtp.parse import parse_email
from hub.consent.models import Purpose
from hub.consent.policy import decide
from hub.consent.schemas import Outcome
from hub.db import Database, utcnow
from hub.enums import Channel, Role
from hub.errors import HubError
from hub.inbox.access import StaffContext
from hub.inbox.actions.intake import Keyword, detect_keyword
from hub.inbox.models import Patient, StaffUser, Team
from tests.conftest import ON_POSTGRES
from tests.mail_reports import OUR_ID, multi, report

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


async def test_a_cut_tail_with_a_rewound_head_is_caught_by_the_anchor(db: Database) -> None:
    """The attack the anchor exists for: the newest rows deleted and audit_head set back to
    the last row kept, so the shortened chain is whole in itself."""
    await _chain(db, 5)
    async with db.reader() as session:
        hashes = dict((await session.execute(select(AuditEvent.seq, AuditEvent.hash))).all())
    await _tamper(
        db,
        delete(AuditEvent).where(AuditEvent.seq > 3),
        update(AuditHead).values(seq=3, hash=hashes[3]),
    )
    assert await _verified(db) == (True, 3, None, None)
    assert await _verified(db, Anchor(5, hashes[5])) == (
        False,
        3,
        4,
        "the chain ends at row 3 but the anchor records row 5: "
        "rows were cut from the end and the head rewound",
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
        time_zone="America/Chicago",
    )
    ctx = StaffContext.of(staff) if via is None else StaffContext.of(staff, via)
    # Every time on their screens is written in their own zone (the localtime filter).
    assert ctx.time_zone == "America/Chicago"
    assert (ctx.staff_id, ctx.role, ctx.team_ids) == (staff.id, Role.AGENT, frozenset({team.id}))
    assert (ctx.display_name, ctx.via, ctx.must_change_password) == (
        "Dana Agent",
        via or "staff",
        True,
    )
    # The audit log names a person's own actions as staff, a token's as api.
    assert str(ctx.actor) == f"{via or 'staff'}:{staff.id}"
