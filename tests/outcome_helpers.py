"""Shared by the outcome report tests: a two-step reminder journey, synthetic patients, the
dispatch of due steps, and a provider's answers (the calls the worker makes after Twilio's or
the mail server's reply)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from hub.audit import Actor
from hub.channels.base import InboundMessage, SendReceipt, StatusUpdate
from hub.channels.email_smtp.adapter import classify_smtp
from hub.channels.twilio_sms.errors import classify
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, MessageStatus
from hub.inbox import actions
from hub.inbox.actions.delivery import SendTask
from hub.inbox.models import Team
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.templates.actions import do_seed_templates

SYSTEM = Actor.system("test")
KEY = "outcome_reminders"
JOURNEY = f"""\
key: {KEY}
name: Outcome reminders
purpose: reminders
anchor: appointment_start
steps:
  - id: day_before
    offset: -24h
    template: appointment_reminder
    channels: [sms, email]
    asks: confirmation
    conditions: [skip_if_confirmed]
  - id: two_hours
    offset: -2h
    template: appointment_reminder
    channels: [sms]
    asks: confirmation
    conditions: [skip_if_confirmed]
"""
ZONE = "America/New_York"
CLINIC = {"name": "Demo Clinic", "phone": "+15550109999"}


def phone(n: int) -> str:
    return f"+155501002{n:02d}"


def email(n: int) -> str:
    return f"outcome.patient{n}@example.org"


async def clinic_team(db: Database) -> uuid.UUID:
    """The clinic's default team, in ZONE: the clinic's zone is its default team's, and the
    outcome reports read their day rollups only for days counted in the filters' zone (without
    it they read the run facts)."""
    async with db.transaction() as session:
        team = Team(name="Front desk", time_zone=ZONE, is_default=True)
        session.add(team)
        await session.flush()
        return team.id


async def install(db: Database) -> None:
    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, JOURNEY, "outcome_reminders.yaml")


async def patient(
    db: Database, ring: KeyRing, n: int, *, by_phone: bool = True, by_email: bool = False
) -> uuid.UUID:
    order = [c for c, on in (("sms", by_phone), ("email", by_email)) if on]
    new = NewPatient(
        name=f"Synthetic Patient {n}",
        phone=phone(n) if by_phone else None,
        email=email(n) if by_email else None,
        time_zone=ZONE,
        channel_order=order,
    )
    return await actions.do_create_patient(db, ring, SYSTEM, new, region="US")


async def dispatch(db: Database, ring: KeyRing, at: datetime) -> dict[str, SendTask]:
    """Claim and prepare what is due at ``at``; the send tasks by the address they go to."""
    prepared = await do_prepare_batch(
        db,
        ring,
        await journeys.do_claim_due(db, now=at),
        providers=providers_for({Channel.SMS, Channel.EMAIL}, {}),
        clinic=CLINIC,
        public_url="http://127.0.0.1",
        reply_domain="reply.demo-clinic.example.org",
        now=at,
    )
    return {t.outbound.to_address: t for t in prepared.tasks}


async def accepted(db: Database, task: SendTask) -> str:
    """The provider took the send (its id returned)."""
    sid = "SM" + uuid.uuid4().hex
    receipt = SendReceipt(task.provider, sid, MessageStatus.SENT)
    await actions.do_record_outcomes(db, [actions.SendOutcome(task, receipt)], retry_base_s=0)
    return sid


async def provider_says(
    db: Database, task: SendTask, status: MessageStatus, code: str = ""
) -> None:
    """The provider took the send, then called back with its final status (and code)."""
    sid = await accepted(db, task)
    update = StatusUpdate(task.provider, sid, status, error_code=code or None)
    await actions.do_apply_status(db, update, classify, retry_base_s=0)


async def mail_server_refuses(db: Database, task: SendTask, code: int, text: str) -> None:
    await actions.do_record_send_failure(db, task, classify_smtp(code, text), retry_base_s=0)


async def text_in(db: Database, ring: KeyRing, n: int, body: str) -> Any:
    message = InboundMessage(
        "twilio_sms", "SM" + uuid.uuid4().hex, Channel.SMS, phone(n), CLINIC["phone"], body
    )
    return await actions.do_receive_inbound(db, ring, message, {}, help_text="help")
