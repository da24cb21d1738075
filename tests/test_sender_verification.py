"""Spoofed senders (issue 15): mail to the hub's own SMTP receiver is checked with SPF, DKIM
and DMARC against a DNS table (never the internet); mail through the clinic's provider is
judged by that provider's Authentication-Results. Unverified mail is kept and shown to staff,
but never confirms, cancels or scores a journey step, nor changes consent, by itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import dkim
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from fakes.dns import DnsServer, FakeResolver
from fakes.smtp import FakeSmtp
from hub.audit import Actor
from hub.channels.email_smtp.auth_results import check_relayed
from hub.channels.email_smtp.resolver import DnsResolver, DnsTempError
from hub.channels.email_smtp.sender_auth import SenderCheck, check_direct
from hub.config import Settings
from hub.consent.models import ConsentRecord
from hub.crypto import KeyRing
from hub.db import Database
from hub.errors import ConfigError
from hub.inbox import actions
from hub.inbox.schemas import NewPatient
from hub.journeys.models import Appointment, AppointmentStatus, Enrollment
from hub.templates.actions import do_seed_templates
from tests.browser import assert_accessible, sign_in_page
from tests.conftest import make_staff
from tests.stack import free_port
from tests.test_email_automatic import fixture as report_fixture
from tests.test_email_automatic import receive, reminded
from tests.test_email_channel import CLINIC, DOMAIN, PATIENT, PUBLIC_URL, Hub, journey_email, stored
from web.app import create_app

pytestmark = pytest.mark.slow

PROVIDER_ID = "mx.clinic-provider.example"
"""The authserv-id of the clinic's (fake) inbound mail provider."""
WEBHOOK_SECRET = "whsec-test-only"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PATIENT_DOMAIN = PATIENT.rpartition("@")[2]
STAFF_EMAIL = "dana.agent@demo-clinic.example.org"
"""``make_staff``'s default admin."""


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    """The patient's domain as its owner publishes it: mail comes from their provider at
    192.0.2.25 (not this machine), and DMARC says to reject anything else."""
    table = FakeResolver()
    table.txt(PATIENT_DOMAIN, "v=spf1 ip4:192.0.2.25 -all")
    table.txt(f"_dmarc.{PATIENT_DOMAIN}", "v=DMARC1; p=reject; rua=mailto:d@example.org")
    monkeypatch.setattr("web.email.DnsResolver", lambda: table)
    return table


@pytest.fixture
async def start_hub(
    fresh_db_url: str, redis_url: str, aiohttp_server: Any, tmp_path: Path, set_clock: Any
) -> AsyncIterator[Callable[..., Any]]:
    """Starts the hub with the SMTP receiver and the signed webhook; keywords are settings."""
    set_clock(datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0))
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    relay = FakeSmtp()
    await relay.start()
    db = Database.connect(fresh_db_url)

    async def start(**extra: Any) -> Hub:
        ring = KeyRing.generate("mail1")
        port = free_port()
        settings = Settings(
            database_url=fresh_db_url,
            redis_url=redis_url,
            keys=ring,
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
            email_webhook_secret=WEBHOOK_SECRET,
            log_format="text",
            **extra,
        )
        await aiohttp_server(create_app(settings), port=port)
        await do_seed_templates(db)
        staff = await make_staff(db)
        patient_id = await actions.do_create_patient(
            db,
            ring,
            Actor.system("test"),
            NewPatient(name="Avery Sample", email=PATIENT, channel_order=["email"], verified=True),
            region="US",
        )
        return Hub(db, ring, settings, relay, staff, patient_id, f"http://127.0.0.1:{port}")

    try:
        yield start
    finally:
        await relay.stop()
        await db.dispose()


def reply_mail(body: str, *, to: str = CLINIC, sender: str = PATIENT) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = f"Avery Sample <{sender}>"
    mail["To"] = to
    mail["Subject"] = "Re: your appointment"
    mail["Message-ID"] = f"<{uuid.uuid4()}@mail.example.org>"
    mail.set_content(body)
    return mail


async def smtp_send(hub: Hub, raw: bytes, *, mail_from: str = PATIENT) -> None:
    await aiosmtplib.send(
        raw,
        sender=mail_from,
        recipients=[CLINIC],
        hostname="127.0.0.1",
        port=hub.settings.inbound_smtp_port,
        start_tls=False,
    )


async def appointment_status(hub: Hub) -> AppointmentStatus:
    async with hub.db.reader() as session:
        return (await session.scalars(select(Appointment))).one().status


def message_id_of(raw: bytes) -> str:
    for line in raw.decode().splitlines():
        if line.lower().startswith("message-id:"):
            return line.split(":", 1)[1].strip().strip("<>")
    raise AssertionError("no Message-ID")


async def test_a_forged_from_is_kept_and_flagged_and_cancels_nothing(
    start_hub: Any, dns: FakeResolver
) -> None:
    hub = await start_hub()
    await journey_email(hub)
    raw = reply_mail("2").as_bytes()  # "2" cancels, sent from this machine, not the provider
    await smtp_send(hub, raw)

    message = await stored(hub, message_id_of(raw))
    assert (message.sender_verified, message.sender_check) == (False, "dmarc_fail")
    assert any("journey answer (cancel)" in note for note in message.delivery_notes)
    assert await appointment_status(hub) is not AppointmentStatus.CANCELLED
    async with hub.db.reader() as session:
        enrollment = (await session.scalars(select(Enrollment))).one()
    assert enrollment.cancelled_at is None
    assert (f"_dmarc.{PATIENT_DOMAIN}", "TXT") in dns.asked
    async with aiohttp.ClientSession() as client, client.get(f"{hub.hub_url}/metrics") as page:
        metrics = await page.text()
    counted = 'hub_webhook_accepted_total{kind="sender",outcome="dmarc_fail",provider="email"} 1.0'
    assert counted in metrics


def dkim_key(dns: FakeResolver, selector: str = "s2026") -> bytes:
    """A fresh RSA key published as ``<selector>._domainkey`` of the patient's domain."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dns.txt(
        f"{selector}._domainkey.{PATIENT_DOMAIN}",
        f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}",
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def signed(mail: EmailMessage, key: bytes, domain: str = PATIENT_DOMAIN) -> bytes:
    raw = mail.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    signature = dkim.sign(
        raw,
        b"s2026",
        domain.encode(),
        key,
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    return signature + raw


async def test_a_dkim_signed_reply_is_verified_and_its_cancel_applies(
    start_hub: Any, dns: FakeResolver
) -> None:
    hub = await start_hub()
    key = dkim_key(dns)
    await journey_email(hub)

    # Signed, then changed on the way: the signature no longer holds, so nothing applies.
    tampered = signed(reply_mail("C"), key).replace(b"\r\nC\r\n", b"\r\n2\r\n")
    await smtp_send(hub, tampered)
    held = await stored(hub, message_id_of(tampered))
    assert (held.sender_verified, held.sender_check) == (False, "dmarc_fail")
    assert await appointment_status(hub) is not AppointmentStatus.CANCELLED

    raw = signed(reply_mail("2"), key)
    await smtp_send(hub, raw)
    message = await stored(hub, message_id_of(raw))
    assert (message.sender_verified, message.sender_check) == (True, "dkim_pass")
    assert await appointment_status(hub) is AppointmentStatus.CANCELLED


async def test_an_aligned_spf_pass_is_verified_and_its_confirmation_applies(
    start_hub: Any, dns: FakeResolver
) -> None:
    hub = await start_hub()
    # The patient's provider sends from this machine with a bounce address on a subdomain,
    # whose SPF (through an include) lists it; the From domain's own SPF does not.
    dns.txt(f"mail.{PATIENT_DOMAIN}", "v=spf1 include:_spf.provider.example -all")
    dns.txt("_spf.provider.example", "v=spf1 ip4:127.0.0.1 ip6:::1 -all")
    await journey_email(hub)
    # Relaxed alignment (the DMARC record asks no aspf=s): the subdomain counts.
    raw = reply_mail("C").as_bytes()
    await smtp_send(hub, raw, mail_from=f"bounces@mail.{PATIENT_DOMAIN}")
    message = await stored(hub, message_id_of(raw))
    assert (message.sender_verified, message.sender_check) == (True, "spf_pass")
    assert await appointment_status(hub) is AppointmentStatus.CONFIRMED


async def test_a_dns_failure_keeps_the_mail_unverified(start_hub: Any, dns: FakeResolver) -> None:
    hub = await start_hub()
    dns.fail(PATIENT_DOMAIN)
    await journey_email(hub)
    raw = reply_mail("2").as_bytes()
    await smtp_send(hub, raw)  # accepted (250): a DNS outage never loses a patient's mail
    message = await stored(hub, message_id_of(raw))
    assert (message.sender_verified, message.sender_check) == (False, "temperror")
    assert await appointment_status(hub) is not AppointmentStatus.CANCELLED


class BrokenResolver:
    def lookup(self, name: str, rdtype: str) -> list[str]:
        raise RuntimeError("a resolver bug")


async def test_a_fault_in_the_check_keeps_the_mail_unverified(
    start_hub: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("web.email.DnsResolver", BrokenResolver)
    hub = await start_hub()
    raw = reply_mail("Can I bring my son?").as_bytes()
    await smtp_send(hub, raw)  # 250, not a 4xx that would have the sender retry for days
    message = await stored(hub, message_id_of(raw))
    assert (message.sender_verified, message.sender_check) == (False, "temperror")
    assert "sender check failed" in caplog.text


def with_results(mail: EmailMessage, *headers: str) -> bytes:
    raw = mail.as_bytes()
    top = "".join(f"Authentication-Results: {h}\r\n" for h in headers).encode()
    return top + raw


async def post_webhook(hub: Hub, raw: bytes) -> None:
    digest = hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{hub.hub_url}/webhooks/email/inbound",
            data=raw,
            headers={"X-Hub-Signature-256": f"sha256={digest}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()


async def test_the_trusted_provider_s_verdict_is_honoured_and_a_forged_one_ignored(
    start_hub: Any, dns: FakeResolver
) -> None:
    hub = await start_hub(trusted_authserv_id=PROVIDER_ID)
    await journey_email(hub)

    # A sender's own header claiming a pass under another name: the sender's word only.
    forged = with_results(
        reply_mail("2"), f"mx.attacker.example; dmarc=pass header.from={PATIENT_DOMAIN}"
    )
    await post_webhook(hub, forged)
    held = await stored(hub, message_id_of(forged))
    assert (held.sender_verified, held.sender_check) == (False, "relay_missing")
    assert await appointment_status(hub) is not AppointmentStatus.CANCELLED

    # The provider's own header on top says DMARC failed; a forged pass below it is ignored.
    failed = with_results(
        reply_mail("2"),
        f"{PROVIDER_ID}; spf=fail smtp.mailfrom={PATIENT}; dmarc=fail header.from={PATIENT_DOMAIN}",
        f"{PROVIDER_ID}; dmarc=pass header.from={PATIENT_DOMAIN}",
    )
    await post_webhook(hub, failed)
    assert (await stored(hub, message_id_of(failed))).sender_check == "dmarc_fail"
    assert await appointment_status(hub) is not AppointmentStatus.CANCELLED

    passed = with_results(
        reply_mail("2"),
        f"{PROVIDER_ID}; dkim=pass header.d={PATIENT_DOMAIN};"
        f" dmarc=pass header.from={PATIENT_DOMAIN}",
    )
    await post_webhook(hub, passed)
    message = await stored(hub, message_id_of(passed))
    assert (message.sender_verified, message.sender_check) == (True, "relay_pass")
    assert await appointment_status(hub) is AppointmentStatus.CANCELLED


async def test_mail_from_a_trusted_relay_is_judged_by_its_header_not_by_spf(
    start_hub: Any, dns: FakeResolver
) -> None:
    from ipaddress import ip_network

    hub = await start_hub(
        trusted_authserv_id=PROVIDER_ID, trusted_mail_relays=(ip_network("127.0.0.1/32"),)
    )
    await journey_email(hub)
    # SPF would fail for this machine; the relay that checked the sender says DMARC passed.
    raw = with_results(reply_mail("C"), f"{PROVIDER_ID}; dmarc=pass header.from={PATIENT_DOMAIN}")
    await smtp_send(hub, raw)
    message = await stored(hub, message_id_of(raw))
    assert (message.sender_verified, message.sender_check) == (True, "relay_pass")
    assert await appointment_status(hub) is AppointmentStatus.CONFIRMED


@pytest.mark.parametrize(
    ("records", "mail_from", "expected"),
    [
        # SPF passes for another organization's domain: not the From domain's word.
        ({"bulk.example.net": "v=spf1 ip4:192.0.2.7 -all"}, "b@bulk.example.net", "not_aligned"),
        # Relaxed alignment: a subdomain of the same organization counts ...
        ({"mail.example.org": "v=spf1 ip4:192.0.2.7 -all"}, "b@mail.example.org", "spf_pass"),
        # ... unless the domain asks for strict alignment.
        (
            {
                "mail.example.org": "v=spf1 ip4:192.0.2.7 -all",
                "_dmarc.example.org": "v=DMARC1; p=reject; aspf=s",
            },
            "b@mail.example.org",
            "dmarc_fail",
        ),
        # Organizational domains follow the public suffix list: co.uk is a suffix.
        ({"other.co.uk": "v=spf1 ip4:192.0.2.7 -all"}, "b@other.co.uk", "not_aligned"),
        ({"example.org": "v=spf1 ~all"}, "a@example.org", "spf_softfail"),
        ({"example.org": "v=spf1 -all"}, "a@example.org", "spf_fail"),
        ({}, "a@example.org", "no_auth"),
    ],
)
def test_alignment_and_reasons(records: dict[str, str], mail_from: str, expected: str) -> None:
    table = FakeResolver()
    for name, value in records.items():
        table.txt(name, value)
    raw = reply_mail("hello").as_bytes()
    if "co.uk" in mail_from:
        raw = reply_mail("hello", sender="avery@clinic.co.uk").as_bytes()
    check = check_direct(raw, table, ip="192.0.2.7", mail_from=mail_from, helo="mx.example.net")
    assert check.reason == expected
    assert check.verified is (expected == "spf_pass")


def test_no_or_several_from_addresses_cannot_pass() -> None:
    table = FakeResolver().txt("example.org", "v=spf1 ip4:192.0.2.7 -all")
    raw = reply_mail("hi").as_bytes().replace(b"From: ", b"From: a@example.org, ", 1)
    assert check_direct(raw, table, ip="192.0.2.7", mail_from="a@example.org", helo="h") == (
        SenderCheck(False, "no_from")
    )
    assert check_relayed(raw, PROVIDER_ID).reason == "relay_missing"


def test_the_resolver_asks_dns_servers_over_the_wire_within_its_time_box() -> None:
    table = FakeResolver()
    table.txt(PATIENT_DOMAIN, "v=spf1 mx -all")
    table.add(PATIENT_DOMAIN, "MX", f"10 mx.{PATIENT_DOMAIN}")
    table.add(f"mx.{PATIENT_DOMAIN}", "A", "192.0.2.7")
    table.txt(f"_dmarc.{PATIENT_DOMAIN}", "v=DMARC1; p=reject")
    table.fail("slow.example.net")
    with DnsServer(table) as server:
        resolver = DnsResolver(0.5, nameservers=["127.0.0.1"], port=server.port)
        assert resolver.lookup(f"_dmarc.{PATIENT_DOMAIN}", "TXT") == ["v=DMARC1; p=reject"]
        assert resolver.lookup(f"nothing.{PATIENT_DOMAIN}", "TXT") == []
        started = time.monotonic()
        with pytest.raises(DnsTempError):
            resolver.lookup("slow.example.net", "TXT")
        assert time.monotonic() - started < 2  # the time box, not dnspython's 5 s default
        # pyspf's "mx" mechanism through real answers: MX, then the exchange's address.
        raw = reply_mail("hello").as_bytes()
        verdict = check_direct(raw, resolver, ip="192.0.2.7", mail_from=PATIENT, helo="h.example")
        assert verdict == SenderCheck(True, "spf_pass")
        other = check_direct(raw, resolver, ip="192.0.2.8", mail_from=PATIENT, helo="h.example")
        assert other == SenderCheck(False, "dmarc_fail")
        spoofed = reply_mail("hi", sender="a@slow.example.net").as_bytes()
        late = check_direct(spoofed, resolver, ip="192.0.2.8", mail_from="", helo="h.example")
        assert late == SenderCheck(False, "temperror")


def test_relays_without_an_authserv_id_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="HUB_TRUSTED_AUTHSERV_ID"):
        Settings.from_env({"HUB_TRUSTED_MAIL_RELAYS": "10.0.0.5"})
    settings = Settings.from_env(
        {"HUB_TRUSTED_MAIL_RELAYS": "10.0.0.5, 10.0.1.0/24", "HUB_TRUSTED_AUTHSERV_ID": "mx.x"}
    )
    assert len(settings.trusted_mail_relays) == 2 and settings.trusted_authserv_id == "mx.x"


async def test_an_unverified_spam_complaint_stops_nothing(db: Database, ring: KeyRing) -> None:
    await reminded(db, ring)
    result = await receive(db, ring, report_fixture("arf_abuse.eml"), SenderCheck(False, "no_auth"))
    assert result.outcome == "complaint"
    async with db.reader() as session:
        assert (await session.scalars(select(ConsentRecord))).all() == []


async def test_staff_see_sender_not_verified_on_the_conversation_and_in_the_inbox(
    start_hub: Any, dns: FakeResolver, browser: Any
) -> None:
    hub = await start_hub()
    await journey_email(hub)
    raw = reply_mail("2").as_bytes()
    await smtp_send(hub, raw)
    message = await stored(hub, message_id_of(raw))

    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await sign_in_page(
        page, hub.hub_url, "dana.agent@demo-clinic.example.org", "correct horse battery"
    )
    row = page.locator(f'li.row[data-conversation-id="{message.conversation_id}"]')
    await row.get_by_text("Sender not verified").wait_for()
    await page.goto(f"{hub.hub_url}/conversations/{message.conversation_id}")
    note = page.locator(f'li[data-message-id="{message.id}"] .sender-unverified')
    text = await note.inner_text()
    assert text.startswith("Sender not verified:")
    assert "DMARC" in text and "nothing" in text.lower()
    assert "It reads as a journey answer (cancel); that was not applied." in text
    await assert_accessible(page)
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await note.is_visible()
    await assert_accessible(page)
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        await page.screenshot(path=str(SCREENSHOTS / "sender-not-verified.png"), full_page=False)
    await page.close()
