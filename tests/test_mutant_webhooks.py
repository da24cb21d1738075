"""How the signed webhooks refuse, and whose verdict on a mail's sender counts: tables for
what `make mutate` found the suite did not hold (docs/testing.md)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from email.message import EmailMessage
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from hub.config import Settings
from hub.db import Database
from hub.inbox.models import Message
from tests.twilio_helpers import fixture, sign
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")


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
    # Says what was wrong with it, so whoever runs the provider's side can fix it.
    assert await response.text() == (
        "the message has no email header (From, To, Subject, Date, Message-ID...)"
    )
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


# --- whose verdict on the sender counts --------------------------------------------------------

PROVIDER_ID = "mx.mail-provider.example.com"
"""The authserv-id of the clinic's inbound mail provider, trusted to check senders for us."""


@pytest.mark.parametrize(
    ("results", "verified", "check"),
    [
        (
            f"{PROVIDER_ID}; dkim=pass header.d=example.org; dmarc=pass header.from=example.org",
            True,
            "relay_pass",
        ),
        (f"{PROVIDER_ID}; dmarc=fail header.from=example.org", False, "dmarc_fail"),
        # The sender's own header, under a name the clinic does not trust: their word only.
        ("mx.attacker.example; dmarc=pass header.from=example.org", False, "relay_missing"),
    ],
    ids=["pass", "fail", "forged"],
)
async def test_the_provider_s_verdict_on_the_posted_mail_is_what_staff_see(
    db: Database,
    settings: Settings,
    aiohttp_client: Any,
    results: str,
    verified: bool,
    check: str,
) -> None:
    app = create_app(
        replace(
            settings,
            public_url="http://127.0.0.1",
            email_webhook_secret=SECRET,
            trusted_authserv_id=PROVIDER_ID,
        ),
        db=db,
    )
    client: TestClient = await aiohttp_client(app)
    raw = f"Authentication-Results: {results}\r\n".encode() + _mail()
    response = await client.post(
        "/webhooks/email/inbound", data=raw, headers={"X-Hub-Signature-256": _signed(raw)}
    )
    assert (response.status, (await response.json())["outcome"]) == (200, "message")
    async with db.reader() as session:
        [message] = (await session.scalars(select(Message))).all()
    # "Sender not verified" on the conversation unless the provider vouched for this mail.
    assert (message.sender_verified, message.sender_check) == (verified, check)
    metrics = await (await client.get("/metrics")).text()
    labels = f'kind="sender",outcome="{check}",provider="email"'
    assert f"hub_webhook_accepted_total{{{labels}}} 1.0" in metrics


# --- Twilio's signature -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/webhooks/twilio/sms", "/webhooks/twilio/status"])
async def test_a_hub_without_a_twilio_token_takes_no_twilio_webhook(
    db: Database, settings: Settings, aiohttp_client: Any, path: str
) -> None:
    """Nothing to check a signature against is a refusal, whatever the request carries."""
    client: TestClient = await aiohttp_client(
        create_app(replace(settings, twilio_auth_token=None), db=db)
    )
    params = fixture("inbound_sms" if path.endswith("sms") else "status_delivered")["params"]
    response = await client.post(
        path,
        data=params,
        headers={"X-Twilio-Signature": sign(settings.public_url + path, params)},
    )
    assert (response.status, await response.text()) == (
        403,
        "missing or invalid X-Twilio-Signature\n",
    )
    assert await _messages(db) == 0
    metrics = await (await client.get("/metrics")).text()
    kind = "inbound" if path.endswith("sms") else "status"
    assert _counter(metrics, "twilio_sms", kind, "signature") == 1.0
