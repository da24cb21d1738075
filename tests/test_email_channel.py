"""The email channel end to end: outbound through a real SMTP server (aiosmtpd) with the
headers clients and providers rely on; replies through the hub's own SMTP receiver (sent with
aiosmtplib) threaded by token, then by In-Reply-To, then by sender; one-click unsubscribe;
automatic mail and bounces that never open a ticket or get an answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest
import redis
from sqlalchemy import select

from fakes.smtp import FakeSmtp
from hub.audit import Actor
from hub.config import Settings
from hub.consent.models import ConsentRecord, ConsentSource, ConsentState, Purpose
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus
from hub.inbox import actions
from hub.inbox.email_ids import email_id_index
from hub.inbox.models import Attachment, Conversation, Message, Patient
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.models import StepRun
from hub.templates.actions import do_seed_templates
from tests.conftest import make_staff
from tests.stack import eventually, free_port
from web.app import create_app
from worker.jobs import run_dispatch_batch, run_send_message

pytestmark = pytest.mark.slow

DOMAIN = "reply.demo-clinic.example.org"
PUBLIC_URL = "https://hub.demo-clinic.example.org"
CLINIC = "clinic@demo-clinic.example.org"
PATIENT = "avery.sample@example.org"
SYSTEM = Actor.system("test")

EMAIL_STEP = """\
key: email_reminders
name: Email reminders
purpose: reminders
anchor: appointment_start
steps:
  - id: email_72h
    offset: -72h
    template: appointment_reminder
    channel: email
    asks: confirmation
"""


@dataclass
class Hub:
    db: Database
    ring: KeyRing
    settings: Settings
    relay: FakeSmtp
    staff: Any
    patient_id: uuid.UUID
    hub_url: str


@pytest.fixture
async def hub(
    fresh_db_url: str, redis_url: str, aiohttp_server: Any, tmp_path: Path, set_clock: Any
) -> AsyncIterator[Hub]:
    # Midday, inside every send window, whenever the suite runs.
    set_clock(datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0))
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    relay = FakeSmtp()
    await relay.start()
    ring = KeyRing.generate("mail1")
    port = free_port()
    settings = Settings(
        database_url=fresh_db_url,
        redis_url=redis_url,
        keys=ring,
        # Behind the clinic's TLS proxy: RFC 8058 one-click needs an https link.
        public_url=PUBLIC_URL,
        port=port,
        var_dir=tmp_path / "var",
        smtp_url=relay.url,
        email_from=f"Demo Clinic <{CLINIC}>",
        reply_domain=DOMAIN,
        inbound_smtp_port=free_port(),
        clinic_emails=(CLINIC,),
        clinic_name="Demo Clinic",
        clinic_phone="+15550109999",
        email_webhook_secret="whsec-test-only",
        log_format="text",
    )
    db = Database.connect(fresh_db_url)
    await aiohttp_server(create_app(settings), port=port)
    await do_seed_templates(db)
    staff = await make_staff(db)
    patient_id = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(
            name="Avery Sample",
            email=PATIENT,
            time_zone="UTC",
            channel_order=["email", "sms"],
            verified=True,
        ),
        region="US",
    )
    try:
        yield Hub(db, ring, settings, relay, staff, patient_id, f"http://127.0.0.1:{port}")
    finally:
        await relay.stop()
        await db.dispose()


async def open_email_conversation(hub: Hub) -> uuid.UUID:
    async with hub.db.transaction() as session:
        conversation = Conversation(
            patient_id=hub.patient_id, channel=Channel.EMAIL, status=ConversationStatus.OPEN
        )
        session.add(conversation)
        await session.flush()
        return conversation.id


async def staff_email(hub: Hub, body: str) -> tuple[uuid.UUID, EmailMessage]:
    conversation_id = await open_email_conversation(hub)
    queued = await actions.do_reply(hub.db, hub.ring, hub.staff, conversation_id, body)
    count = len(hub.relay.messages)
    assert await run_send_message(queued.message_id, hub.settings) == "sent"
    await hub.relay.wait_for(lambda f: len(f.messages) == count + 1)
    return conversation_id, hub.relay.messages[-1].message


async def journey_email(hub: Hub) -> tuple[uuid.UUID, EmailMessage]:
    await journeys.do_install_journey(hub.db, SYSTEM, EMAIL_STEP, "email.yaml")
    start = utcnow() + timedelta(days=3)
    await journeys.do_enroll(
        hub.db,
        SYSTEM,
        "email_reminders",
        hub.patient_id,
        appointment=journeys.NewAppointment("visit-9", start, location="Room 2"),
        now=utcnow() - timedelta(days=1),
        ring=hub.ring,
    )
    # The step is due now (planned against "yesterday"); claim and dispatch it in this process.
    run_ids = await journeys.do_claim_due(hub.db, now=start)
    assert len(run_ids) == 1
    count = len(hub.relay.messages)
    await run_dispatch_batch(run_ids, hub.settings)
    await hub.relay.wait_for(lambda f: len(f.messages) == count + 1)
    async with hub.db.reader() as session:
        run = (await session.scalars(select(StepRun))).one()
    assert run.message_id is not None
    return run.message_id, hub.relay.messages[-1].message


async def test_outbound_mail_carries_message_id_reply_token_and_unsubscribe(hub: Hub) -> None:
    # A staff reply: threaded, not automatic, no unsubscribe (care mail).
    conversation_id, mail = await staff_email(hub, "Your results are ready; call us any time.")
    assert mail["To"] == PATIENT
    assert CLINIC in mail["From"] and "Demo Clinic" in mail["From"]
    assert mail["Message-ID"].endswith(f"@{DOMAIN}>")
    reply_to = mail["Reply-To"]
    assert reply_to.startswith("reply+") and reply_to.endswith(f"@{DOMAIN}")
    assert len(reply_to.split("@")[0]) <= 64  # fits an email local part
    assert mail["Auto-Submitted"] is None and mail["List-Unsubscribe"] is None
    async with hub.db.reader() as session:
        message = (
            await session.scalars(select(Message).where(Message.conversation_id == conversation_id))
        ).one()
    assert f"<{message.provider_message_id}>" == mail["Message-ID"].strip()
    assert message.status is MessageStatus.SENT and message.provider == "email_smtp"
    assert message.sent_at is not None  # the relay took it; nothing else will report

    # A journey reminder: automatic and unsubscribable the RFC 8058 way.
    reminder_id, reminder = await journey_email(hub)
    async with hub.db.reader() as session:
        sent = await session.get(Message, reminder_id)
    assert sent is not None and sent.status is MessageStatus.SENT  # a dispatch batch's too
    assert reminder["Auto-Submitted"] == "auto-generated"
    links = [part.strip(" <>") for part in reminder["List-Unsubscribe"].split(",")]
    assert links[0].startswith(f"{PUBLIC_URL}/unsubscribe/")
    assert links[1].startswith(f"mailto:{CLINIC}")
    assert reminder["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert reminder.get_content_type() == "multipart/alternative"
    assert "Room 2" in reminder.get_body(("plain",)).get_content()


async def patient_writes(
    hub: Hub,
    body: str,
    *,
    to: str,
    in_reply_to: str | None = None,
    subject: str = "Re: your appointment",
    sender: str = PATIENT,
    extra: dict[str, str] | None = None,
) -> str:
    mail = EmailMessage()
    mail["From"] = f"Avery Sample <{sender}>"
    mail["To"] = to
    mail["Subject"] = subject
    message_id = f"<{uuid.uuid4()}@mail.example.org>"
    mail["Message-ID"] = message_id
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
        mail["References"] = in_reply_to
    for key, value in (extra or {}).items():
        mail[key] = value
    mail.set_content(body)
    await aiosmtplib.send(
        mail, hostname="127.0.0.1", port=hub.settings.inbound_smtp_port, start_tls=False
    )
    return message_id.strip("<>")


async def stored(hub: Hub, email_id: str) -> Message:
    async def find() -> Message | None:
        async with hub.db.reader() as session:
            return (
                await session.scalars(
                    select(Message).where(
                        Message.provider_message_id == email_id_index(hub.ring, email_id)
                    )
                )
            ).first()

    return await eventually(find, "the inbound email to be stored", timeout=10)  # type: ignore[no-any-return]


QUOTED = (
    "Thursday at 10 works for me.\n\n"
    "On Mon, Nov 23, 2026 at 9:02 AM Demo Clinic <{0}> wrote:\n"
    "> Your results are ready; call us any time.\n"
)


async def test_replies_thread_by_token_then_in_reply_to_then_sender(hub: Hub) -> None:
    conversation_id, mail = await staff_email(hub, "Your results are ready; call us any time.")

    by_token = await stored(
        hub, await patient_writes(hub, QUOTED.format(CLINIC), to=mail["Reply-To"])
    )
    assert by_token.conversation_id == conversation_id
    assert by_token.unseal(hub.ring, "body") == "Thursday at 10 works for me."  # quote hidden
    async with hub.db.reader() as session:
        original = (
            await session.scalars(select(Attachment).where(Attachment.message_id == by_token.id))
        ).one()
    raw = original.unseal_bytes(hub.ring, "data") or b""
    assert b"Your results are ready" in raw  # the whole original is kept, encrypted
    assert original.data_enc is not None and b"Your results" not in original.data_enc

    # The token removed (the patient wrote to the clinic's address), In-Reply-To kept.
    by_header = await stored(
        hub,
        await patient_writes(hub, "One more question.", to=CLINIC, in_reply_to=mail["Message-ID"]),
    )
    assert by_header.conversation_id == conversation_id

    # Neither: the sender's open conversation.
    by_sender = await stored(hub, await patient_writes(hub, "And parking?", to=CLINIC))
    assert by_sender.conversation_id == conversation_id

    # A patient we do not know opens a new conversation (and an unverified record).
    stranger = await stored(
        hub, await patient_writes(hub, "Hello", to=CLINIC, sender="new.person@example.org")
    )
    assert stranger.conversation_id != conversation_id


async def test_a_forged_token_is_ignored_and_the_mail_threads_by_sender(hub: Hub) -> None:
    mine, mail = await staff_email(hub, "Your results are ready.")
    # Another patient's conversation, whose id an attacker might know or guess.
    async with hub.db.transaction() as session:
        other = Patient(verified=True, channel_order=["email"])
        other.seal(hub.ring, "email", "someone.else@example.org")
        session.add(other)
        await session.flush()
        theirs = Conversation(patient_id=other.id, channel=Channel.EMAIL)
        session.add(theirs)
        await session.flush()
        their_id = theirs.id
    token = mail["Reply-To"].split("+", 1)[1].split("@")[0]
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    message = await stored(
        hub, await patient_writes(hub, "Hi again", to=f"reply+{forged}@{DOMAIN}")
    )
    assert message.conversation_id == mine != their_id


async def test_one_click_unsubscribe_revokes_and_the_next_journey_mail_is_skipped(hub: Hub) -> None:
    _, reminder = await journey_email(hub)
    link = reminder["List-Unsubscribe"].split(",")[0].strip(" <>")
    url = link.replace(PUBLIC_URL, hub.hub_url)  # the proxy forwards to the hub
    async with aiohttp.ClientSession() as http:
        # What a mailbox provider sends for RFC 8058 one-click (no cookies, no CSRF token).
        async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as answer:
            assert answer.status == 200
            assert "no longer receive reminders emails" in await answer.text()
        async with http.get(url) as page:  # people who click get a button, not an action
            assert page.status == 200 and "<form" in await page.text()
        async with http.post(url + "x") as bad:
            assert bad.status == 404
    async with hub.db.reader() as session:
        records = (await session.scalars(select(ConsentRecord))).all()
    assert [(r.channel, r.purpose, r.state, r.source) for r in records] == [
        (Channel.EMAIL, Purpose.REMINDERS, ConsentState.REVOKED, ConsentSource.UNSUBSCRIBE)
    ]

    # The next reminder by email is refused with the reason; SMS is next but has no number.
    start = utcnow() + timedelta(days=3, hours=1)
    await journeys.do_enroll(
        hub.db,
        SYSTEM,
        "email_reminders",
        hub.patient_id,
        appointment=journeys.NewAppointment("visit-10", start),
        now=utcnow() - timedelta(days=1),
    )
    run_ids = await journeys.do_claim_due(hub.db, now=start)
    await run_dispatch_batch(run_ids, hub.settings)
    async with hub.db.reader() as session:
        run = (await session.scalars(select(StepRun).where(StepRun.id == run_ids[0]))).one()
    assert run.reason is not None and "email: refused (opted_out)" in run.reason
    assert "opted out of email on" in run.reason and "by unsubscribing" in run.reason
    assert len(hub.relay.messages) == 1


async def test_out_of_office_and_bounces_never_answer_or_open_a_ticket(hub: Hub) -> None:
    conversation_id, mail = await staff_email(hub, "Your results are ready.")
    async with hub.db.transaction() as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        conversation.status = ConversationStatus.RESOLVED
    sent_before = len(hub.relay.messages)

    ooo = await stored(
        hub,
        await patient_writes(
            hub,
            "I am out of the office until Monday.",
            to=mail["Reply-To"],
            subject="Automatic reply: your results",
            extra={"Auto-Submitted": "auto-replied"},
        ),
    )
    assert ooo.conversation_id == conversation_id
    # A stranger's auto-reply opens nothing at all.
    await patient_writes(
        hub,
        "Out of office",
        to=CLINIC,
        sender="robot@example.org",
        extra={"Auto-Submitted": "auto-replied"},
    )

    bounce = dsn_for(mail["Message-ID"], PATIENT)
    # Bounces come from the null sender (MAIL FROM:<>).
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=hub.settings.inbound_smtp_port)
    async with client:
        await client.sendmail("", [mail["Reply-To"]], bounce)

    async def failed() -> Message | None:
        async with hub.db.reader() as session:
            found = (
                await session.scalars(
                    select(Message).where(
                        Message.conversation_id == conversation_id,
                        Message.direction == Direction.OUTBOUND,
                    )
                )
            ).one()
        return found if found.status is MessageStatus.FAILED else None

    ours = await eventually(failed, "the bounce to fail our message", timeout=10)
    assert ours.error_reason and "5.1.1" in ours.error_reason
    async with hub.db.reader() as session:
        conversations = (await session.scalars(select(Conversation))).all()
        patient = await session.get(Patient, hub.patient_id)
    assert [c.id for c in conversations] == [conversation_id]  # no new conversation
    assert conversations[0].status is ConversationStatus.RESOLVED  # nothing reopened it
    assert patient is not None and patient.unreachable.get("email") == "hard_bounce"
    assert len(hub.relay.messages) == sent_before  # no automatic answer to any of it


def dsn_for(message_id: str, recipient: str) -> bytes:
    """A delivery status notification (RFC 3464) like a mailer-daemon sends for a 5.1.1."""
    boundary = "dsn-boundary-1"
    now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        f"To: <{CLINIC}>\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {now}\r\n"
        f"Message-ID: <{uuid.uuid4()}@mx.example.org>\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        f"\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"Your message could not be delivered: the mailbox does not exist.\r\n\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: failed\r\n"
        f"Status: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\n"
        f"From: Demo Clinic <{CLINIC}>\r\n"
        f"To: {recipient}\r\n"
        f"Subject: A message from Demo Clinic\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()


async def test_the_receiver_refuses_mail_for_anyone_else_at_rcpt(hub: Hub) -> None:
    mail = EmailMessage()
    mail["From"] = PATIENT
    mail["To"] = "someone@elsewhere.example.org"
    mail["Subject"] = "relay?"
    mail.set_content("Trying to relay through the hub.")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await aiosmtplib.send(
            mail, hostname="127.0.0.1", port=hub.settings.inbound_smtp_port, start_tls=False
        )
    assert refused.value.recipients[0].code == 550
    async with hub.db.reader() as session:
        assert (await session.scalars(select(Message))).all() == []


async def test_the_inbound_webhook_needs_its_signature_and_is_idempotent(hub: Hub) -> None:
    import hashlib
    import hmac

    secret = hub.settings.email_webhook_secret
    assert secret is not None
    mail = EmailMessage()
    mail["From"] = f"Avery Sample <{PATIENT}>"
    mail["To"] = CLINIC
    mail["Subject"] = "Question"
    mail["Message-ID"] = "<webhook-1@mail.example.org>"
    mail.set_content("Can I come earlier?")
    raw = mail.as_bytes()
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    url = f"{hub.hub_url}/webhooks/email/inbound"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=raw) as unsigned:
            assert unsigned.status == 401
        async with http.post(url, data=raw, headers={"X-Hub-Signature-256": "sha256=00"}) as bad:
            assert bad.status == 401
        async with hub.db.reader() as session:
            assert (await session.scalars(select(Message))).all() == []
        for _ in range(2):  # a provider's retry changes nothing
            async with http.post(url, data=raw, headers={"X-Hub-Signature-256": signature}) as ok:
                assert ok.status == 200
        junk = b"not an email at all"
        junk_sig = "sha256=" + hmac.new(secret.encode(), junk, hashlib.sha256).hexdigest()
        async with http.post(url, data=junk, headers={"X-Hub-Signature-256": junk_sig}) as bad:
            assert bad.status == 400
    async with hub.db.reader() as session:
        messages = (await session.scalars(select(Message))).all()
    assert [m.unseal(hub.ring, "provider_message_id") for m in messages] == [
        "webhook-1@mail.example.org"
    ]
    assert messages[0].unseal(hub.ring, "body") == "Can I come earlier?"


async def test_staff_answer_an_sms_thread_by_email_and_the_answer_comes_back(hub: Hub) -> None:
    async with hub.db.transaction() as session:
        sms = Conversation(
            patient_id=hub.patient_id, channel=Channel.SMS, status=ConversationStatus.OPEN
        )
        session.add(sms)
        await session.flush()
        sms_id = sms.id
    queued = await actions.do_reply(
        hub.db,
        hub.ring,
        hub.staff,
        sms_id,
        "The form is attached; please send it back.",
        channel=Channel.EMAIL,
    )
    assert await run_send_message(queued.message_id, hub.settings) == "sent"
    await hub.relay.wait_for(lambda f: len(f.messages) == 1)
    sent = hub.relay.messages[0].message
    answer = await stored(hub, await patient_writes(hub, "Done, sent.", to=sent["Reply-To"]))
    assert answer.conversation_id == sms_id and answer.channel is Channel.EMAIL


BY_TEXT = """\
key: text_reminders
name: Text reminders
purpose: reminders
anchor: appointment_start
steps:
  - id: sms_24h
    offset: -24h
    template: appointment_reminder
    channels: [sms, email]
"""


async def test_sms_revoked_goes_by_email_and_all_revoked_goes_nowhere_with_reasons(
    hub: Hub,
) -> None:
    from hub.consent import actions as consent

    async with hub.db.transaction() as session:
        patient = await session.get(Patient, hub.patient_id)
        assert patient is not None
        patient.channel_order = ["sms", "email"]
        patient.seal(hub.ring, "phone", "+15550100199")
        await consent.revoke_channel(
            session,
            hub.patient_id,
            Channel.SMS,
            consent.ConsentChange(ConsentSource.KEYWORD, "patient", "STOP"),
        )
    await journeys.do_install_journey(hub.db, SYSTEM, BY_TEXT, "text.yaml")

    async def remind(visit: str) -> StepRun:
        start = utcnow() + timedelta(days=1)
        await journeys.do_enroll(
            hub.db,
            SYSTEM,
            "text_reminders",
            hub.patient_id,
            appointment=journeys.NewAppointment(visit, start),
            now=utcnow() - timedelta(days=2),
        )
        run_ids = await journeys.do_claim_due(hub.db, now=utcnow())
        await run_dispatch_batch(run_ids, hub.settings)
        async with hub.db.reader() as session:
            return (await session.scalars(select(StepRun).where(StepRun.id == run_ids[0]))).one()

    run = await remind("visit-a")
    await hub.relay.wait_for(lambda f: len(f.messages) == 1)
    assert hub.relay.messages[0].rcpt_tos == [PATIENT]
    assert run.channel == "email" and run.reason is not None
    assert "sms: refused (opted_out): patient opted out of SMS" in run.reason

    async with hub.db.transaction() as session:
        await consent.revoke_channel(
            session,
            hub.patient_id,
            Channel.EMAIL,
            consent.ConsentChange(ConsentSource.UNSUBSCRIBE, "patient", "unsubscribe link"),
        )
    nothing = await remind("visit-b")
    assert nothing.status.value == "failed" and nothing.reason is not None
    assert "sms: refused (opted_out)" in nothing.reason
    assert "email: refused (opted_out)" in nothing.reason
    assert len(hub.relay.messages) == 1


async def test_staff_see_the_subject_the_patient_wrote(hub: Hub) -> None:
    """The subject often says what the mail is about ("Prescription refill"): staff see it
    above the text, escaped like any patient-written field."""
    from hub.inbox.actions.conversations import do_open_conversation
    from web.render import make_environment

    message = await stored(
        hub,
        await patient_writes(hub, "Could you renew it?", to=CLINIC, subject="Refill <b>please</b>"),
    )
    view = await do_open_conversation(hub.db, hub.ring, hub.staff, message.conversation_id)
    [seen] = [m for m in view.messages if m.id == message.id]
    assert seen.subject == "Refill <b>please</b>"
    html = make_environment().get_template("_message.html").render(m=seen)
    assert '<p class="subject">Refill &lt;b&gt;please&lt;/b&gt;</p>' in html
