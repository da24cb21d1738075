"""A send whose template still fails to render (a text stored before the save check existed)
is logged without PHI, counted in /metrics and shown to coordinators on the journeys page,
all from what the dispatching process stored; fixing the template clears the warning."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, MessageStatus
from hub.inbox import actions
from hub.inbox.models import Message
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.templates import RENDER_FAILED_CODE
from hub.templates.actions import do_save_variant, do_seed_templates
from hub.templates.models import MessageTemplate, TemplateVariant
from tests.conftest import make_staff
from tests.staff_helpers import sign_in
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

NY = ZoneInfo("America/New_York")
SYSTEM = Actor.system("render-failures-test")
CLINIC = {"name": "Demo Clinic", "phone": "+15550109999"}
COORDINATOR = "cory.coordinator@demo-clinic.example.org"
NAME = "Quinn Placeholder"
DAY_OF = """\
key: day_of
name: Day-of heads-up
purpose: reminders
anchor: appointment_start
steps:
  - {id: sms_2h, offset: -2h, template: appointment_reminder_today, channel: sms}
"""
# As the shipped text was before the check: fails for every appointment without a location.
LEGACY = "See you at {{ appointment.start | time }}, {{ appointment.location }}. {{ clinic.name }}"
VISIT = datetime(2026, 11, 25, 10, tzinfo=NY)


async def _store_unchecked(db: Database, body: str) -> None:
    async with db.transaction() as session:
        template_id = await session.scalar(
            select(MessageTemplate.id).where(MessageTemplate.key == "appointment_reminder_today")
        )
        await session.execute(
            update(TemplateVariant)
            .where(
                TemplateVariant.template_id == template_id,
                TemplateVariant.channel == Channel.SMS,
                TemplateVariant.locale == "en",
            )
            .values(body=body)
        )


async def _enroll_and_dispatch(db: Database, ring: KeyRing, n: int) -> None:
    for i in range(n):
        pid = await actions.do_create_patient(
            db,
            ring,
            SYSTEM,
            NewPatient(name=NAME, phone=f"+1555010{i:04d}", time_zone="America/New_York"),
            region="US",
        )
        await journeys.do_enroll(
            db,
            SYSTEM,
            "day_of",
            pid,
            appointment=journeys.NewAppointment(f"visit-{i}", VISIT),  # no location
            now=datetime(2026, 11, 20, 12, tzinfo=UTC),
        )
    at = VISIT - timedelta(hours=2)
    claimed = await journeys.do_claim_due(db, now=at)
    await do_prepare_batch(
        db,
        ring,
        claimed,
        providers=providers_for({Channel.SMS}, {}),
        clinic=CLINIC,
        public_url="https://hub.example.org",
        now=at,
    )


async def test_a_failed_render_is_logged_counted_and_shown_until_the_template_is_fixed(
    db: Database,
    ring: KeyRing,
    settings: Any,
    aiohttp_client: Any,
    set_clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    set_clock(VISIT - timedelta(days=1))
    await do_seed_templates(db)
    await journeys.do_install_journey(db, SYSTEM, DAY_OF, "day_of.yaml")
    await make_staff(db, COORDINATOR, role="coordinator")
    await _store_unchecked(db, LEGACY)

    set_clock(VISIT - timedelta(hours=2))
    with caplog.at_level(logging.WARNING, logger="hub.templates"):
        await _enroll_and_dispatch(db, ring, 3)

    async with db.reader() as session:
        failed = (await session.scalars(select(Message))).all()
    assert [(m.status, m.error_code) for m in failed] == [
        (MessageStatus.FAILED, RENDER_FAILED_CODE)
    ] * 3
    records = [r for r in caplog.records if r.name == "hub.templates.render"]
    assert len(records) == 3
    record = records[0]
    assert (record.template, record.channel, record.locale) == (  # type: ignore[attr-defined]
        "appointment_reminder_today",
        "sms",
        "en",
    )
    assert record.variable == "appointment.location"  # type: ignore[attr-defined]
    assert NAME.split()[0] not in caplog.text and "5550100" not in caplog.text

    # Another process (the web app) counts what the worker stored.
    app = create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    client = await aiohttp_client(app)
    metrics = await (await client.get("/metrics")).text()
    assert (
        'hub_template_render_failures_total{channel="sms",template="appointment_reminder_today"}'
        " 3.0"
    ) in metrics

    await sign_in(client, COORDINATOR)
    page = await (await client.get("/journeys")).text()
    assert "Messages not sent: a template failed" in page
    banner = page.split('data-field="template-failures"')[1].split("</section>")[0]
    assert "<strong>3</strong>" in banner and "step sms_2h" in banner
    assert "needs appointment.location, which this send does not have" in banner
    assert NAME.split()[0] not in banner

    # An admin fixes the text: the warning goes; the counter keeps its total.
    fixed = LEGACY.replace(
        ", {{ appointment.location }}",
        "{% if appointment.location is defined %}, {{ appointment.location }}{% endif %}",
    )
    await do_save_variant(db, SYSTEM, "appointment_reminder_today", "sms", "en", None, fixed, None)
    page = await (await client.get("/journeys")).text()
    assert "Messages not sent: a template failed" not in page
    metrics = await (await client.get("/metrics")).text()
    assert 'template="appointment_reminder_today"} 3.0' in metrics
