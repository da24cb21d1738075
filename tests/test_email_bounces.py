"""Delivery status notifications from a dozen mail servers (synthetic, shaped like each
server's output): the message they are about is found, through the Message-ID wherever the
report carries it, and "failed" is final whatever the status class (RFC 3464 2.3.3)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.channels.email_smtp.parse import parse_email
from hub.consent.models import Purpose
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.email_intake import do_receive_email
from hub.inbox.models import Conversation, DeliveryAttempt, Message, Patient
from hub.inbox.schemas import NewPatient

DSN = Path(__file__).resolve().parent.parent / "hub/channels/email_smtp/fixtures/dsn"
OUR_ID = "0192f3a0-7c1e-7d2a-9b1c-3f4e5a6b7c8d@reply.demo-clinic.example.org"
DOMAIN = "reply.demo-clinic.example.org"
EARLIER = "0192f399-0000-7000-8000-000000000001@reply.demo-clinic.example.org"

# fixture -> (status, action, permanent, recipient)
SHAPES = {
    # Postfix gave up after its queue lifetime: a 4.x.x with Action: failed is final.
    "postfix_expired.eml": ("4.4.1", "failed", True, "slow.patient@example.org"),
    # Exim writes plain text; the original's Message-ID header is folded onto a second line.
    "exim.eml": ("5.1.1", "failed", True, "gone.patient@example.org"),
    "exim_retry_timeout.eml": ("4.2.2", "failed", True, "full.mailbox@example.org"),
    "exim_delay.eml": ("4.0.0", "delayed", False, "slow.patient@example.org"),
    "sendmail.eml": ("5.1.1", "failed", True, "nobody.example@example.org"),
    "qmail.eml": ("5.1.1", "failed", True, "nobody.example@example.org"),
    "office365.eml": ("5.1.10", "failed", True, "moved.patient@corp.example.org"),
    "office365_expired.eml": ("4.4.7", "failed", True, "slow.patient@example.org"),
    # Exchange 2007 with no delivery-status part and the original base64-encoded.
    "exchange_2007_broken.eml": ("5.1.1", "failed", True, None),
    "outlook_com.eml": ("5.5.0", "failed", True, "inactive.user@outlook.example.com"),
    "gmail.eml": ("5.1.1", "failed", True, "no.such.user@gmail.example.com"),
    "gmail_delay.eml": ("4.4.2", "delayed", False, "slow.patient@example.org"),
    "yahoo.eml": (None, "failed", True, "closed.account@yahoo.example.com"),
    "amazon_ses.eml": ("5.1.1", "failed", True, "nobody.example@example.org"),
    # SendGrid's "Action: expired" with an empty Status: the queue gave up.
    "sendgrid_expired.eml": (None, "expired", True, "slow.patient@example.org"),
    "zimbra_old_postfix.eml": ("5.1.1", "failed", True, "moved.away@zimbra.example.net"),
    "courier.eml": ("5.0.0", "failed", True, "nobody.example@example.org"),
    # Declares a boundary its parts do not use: one text, the report inside it unread.
    "broken_boundary.eml": ("5.1.1", "failed", True, "nobody.example@example.org"),
}


def test_every_fixture_is_in_the_table() -> None:
    assert sorted(SHAPES) == sorted(path.name for path in DSN.glob("*.eml"))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_server_s_report_names_our_message(name: str) -> None:
    email = parse_email((DSN / name).read_bytes())
    bounce = email.bounce
    status, action, permanent, recipient = SHAPES[name]
    assert bounce is not None, name
    assert bounce.original_message_id == OUR_ID
    # A References chain in the returned mail never outranks the failed message itself.
    assert EARLIER not in bounce.mentioned_ids[:1]
    assert (bounce.status, bounce.action, bounce.permanent) == (status, action, permanent)
    if recipient is not None:
        assert bounce.recipient == recipient
    assert email.auto_submitted  # never answered, never a ticket
    assert email.complaint is None and not email.read_receipt
    # The report's own parts are not a patient's attachments.
    assert email.attachments == ()
    if bounce.diagnostic:
        assert "@" not in bounce.diagnostic  # addresses are redacted before anything logs it


def test_failed_is_final_whatever_the_status_class() -> None:
    raw = (DSN / "postfix_expired.eml").read_bytes()
    for status in (b"4.4.7", b"4.4.1", b"4.0.0", b"5.4.7"):
        bounce = parse_email(raw.replace(b"Status: 4.4.1", b"Status: " + status)).bounce
        assert bounce is not None
        assert (bounce.action, bounce.permanent) == ("failed", True)
    delayed = parse_email(raw.replace(b"Action: failed", b"Action: delayed")).bounce
    assert delayed is not None and (delayed.action, delayed.permanent) == ("delayed", False)


def test_our_message_id_is_found_anywhere_in_a_report_without_structure() -> None:
    # A gateway's bounce that names the message only in its prose.
    raw = (
        "Return-Path: <>\r\n"
        "From: Gateway <postmaster@gw.example.net>\r\n"
        "To: clinic@demo-clinic.example.org\r\n"
        "Subject: Nondeliverable mail\r\n"
        "Message-ID: <gw-0001@gw.example.net>\r\n"
        "\r\n"
        f"Your message <{OUR_ID}> could not be delivered: the recipient's\r\n"
        "mailbox was removed. This is a permanent error.\r\n"
    ).encode()
    bounce = parse_email(raw).bounce
    assert bounce is not None
    assert bounce.original_message_id == OUR_ID
    assert (bounce.action, bounce.permanent) == ("failed", True)
    assert "gw-0001@gw.example.net" not in bounce.mentioned_ids  # the report's own id


# -- through the intake ----------------------------------------------------------------------

OUR_UUID = uuid.UUID(OUR_ID.split("@")[0])


async def sent_mail(db: Database, ring: KeyRing) -> uuid.UUID:
    """A reminder of ours (OUR_ID) the relay accepted; its patient's id."""
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(name="Sam Example", email="slow.patient@example.org", time_zone="UTC"),
        region="US",
    )
    async with db.transaction() as session:
        conversation = Conversation(patient_id=patient_id, channel=Channel.EMAIL)
        session.add(conversation)
        await session.flush()
        session.add(
            Message(
                id=OUR_UUID,
                conversation_id=conversation.id,
                direction=Direction.OUTBOUND,
                channel=Channel.EMAIL,
                provider="email_smtp",
                provider_message_id=OUR_ID,
                status=MessageStatus.SENT,
                purpose=Purpose.CARE.value,
                send_attempts=1,
            )
        )
        await session.flush()
        session.add(
            DeliveryAttempt(
                message_id=OUR_UUID,
                attempt=1,
                provider="email_smtp",
                provider_message_id=OUR_ID,
                status=MessageStatus.SENT,
            )
        )
    return patient_id


@pytest.mark.parametrize(
    ("name", "unreachable"),
    [
        # The queue expired: this mail failed for good, the address is not known to be bad.
        ("office365_expired.eml", None),
        ("postfix_expired.eml", None),
        ("exchange_2007_broken.eml", "hard_bounce"),
        ("qmail.eml", "hard_bounce"),
    ],
)
async def test_a_final_report_fails_the_sent_mail_and_only_a_5xx_the_address(
    db: Database, ring: KeyRing, name: str, unreachable: str | None
) -> None:
    patient_id = await sent_mail(db, ring)
    result = await do_receive_email(
        db, ring, (DSN / name).read_bytes(), reply_domain=DOMAIN, clinic={"name": "Demo Clinic"}
    )
    assert result.outcome == "bounce" and result.effect_ids
    async with db.reader() as session:
        message = await session.get(Message, OUR_UUID)
        patient = await session.get(Patient, patient_id)
        conversations = (await session.scalars(select(Conversation))).all()
    assert message is not None and message.status is MessageStatus.FAILED
    assert patient is not None and patient.unreachable.get("email") == unreachable
    assert len(conversations) == 1  # no ticket for the report


async def test_a_delay_notice_leaves_the_sent_mail_sent(db: Database, ring: KeyRing) -> None:
    await sent_mail(db, ring)
    for name in ("gmail_delay.eml", "exim_delay.eml"):
        raw = (DSN / name).read_bytes()
        await do_receive_email(db, ring, raw, reply_domain=DOMAIN, clinic={})
    async with db.reader() as session:
        message = await session.get(Message, OUR_UUID)
    assert message is not None and message.status is MessageStatus.SENT
    assert [n.startswith("delivery delayed") for n in message.delivery_notes] == [True, True]
