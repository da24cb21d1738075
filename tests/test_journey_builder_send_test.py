""" "Send a test to me": the coordinator's request is audited and queued after its commit, and
the worker emails every step's texts for the made-up sample to the coordinator's own staff
address through a real SMTP relay (aiosmtpd), never to a patient."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from fakes.smtp import FakeSmtp
from hub.audit import Actor, AuditEvent
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.journeys.timeline import Sample
from hub.journeys.trial import TEST_TOPIC, TrialRequest, do_request_test
from hub.journeys.versions import do_save_journey
from hub.outbox import OutboxEvent
from hub.templates.actions import do_seed_templates
from tests.conftest import make_staff
from tests.staff_helpers import csrf_of, sign_in
from web.app import create_app
from worker.journey_test import run_journey_test

COORD = "cole.coord@demo-clinic.example.org"
JOURNEY = """\
key: tested
name: Tested reminders
purpose: reminders
anchor: appointment_start
steps:
  - {id: email_3d, offset: -3d, template: appointment_reminder, channel: email}
  - {id: sms_2h, offset: -2h, template: appointment_reminder_today, channel: sms}
"""
DAY = date.today() + timedelta(days=20)


@pytest.fixture
async def relay() -> AsyncIterator[FakeSmtp]:
    server = FakeSmtp()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def mail_settings(
    fresh_db_url: str, redis_url: str, ring: KeyRing, tmp_path: Path, relay: FakeSmtp
) -> Settings:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return Settings(
        database_url=fresh_db_url,
        redis_url=redis_url,
        keys=ring,
        public_url="https://hub.demo-clinic.example.org",
        var_dir=tmp_path / "var",
        smtp_url=relay.url,
        email_from="Demo Clinic <clinic@demo-clinic.example.org>",
        clinic_phone="+15550109999",
    )


async def test_the_worker_emails_the_steps_to_the_coordinator_only(
    committed_db: Database, mail_settings: Settings, relay: FakeSmtp
) -> None:
    await do_seed_templates(committed_db)
    await do_save_journey(committed_db, Actor.system("test"), JOURNEY, "tested.yaml")
    coord = await make_staff(committed_db, COORD, role="coordinator")
    zone = "Europe/Berlin"
    sample = Sample(
        "en", zone, datetime.combine(DAY, time(9, 30), ZoneInfo(zone)), datetime.now(UTC)
    )
    effect, address = await do_request_test(
        committed_db, coord.actor, coord.staff_id, "tested", sample
    )
    assert address == COORD
    async with committed_db.reader() as session:
        event = await session.get(OutboxEvent, effect)
        assert event is not None and event.topic == TEST_TOPIC
        request = TrialRequest.decode(event.payload["test"])
        audit = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "journey.test.send")
            )
        ).one()
    assert (request.staff_id, request.key, request.version, request.zone) == (
        coord.staff_id,
        "tested",
        1,
        zone,
    )
    assert audit.actor == f"staff:{coord.staff_id}"

    assert await run_journey_test(event.payload["test"], mail_settings) == "sent"
    [mail] = relay.messages
    assert mail.rcpt_tos == [COORD]
    assert mail.message["Subject"] == "Test: Tested reminders, version 1 (2 steps)"
    body = mail.message.get_content()
    assert "No patient was sent anything." in body
    first = datetime.combine(DAY - timedelta(days=3), time(9, 30), ZoneInfo(zone))
    assert f"== email_3d, {first:%a %b %-d %Y, %H:%M %Z}" in body
    assert "== sms_2h" in body and "-- sms (1 segment" in body
    assert body.count("Hi Alex") == 2


async def test_the_preview_page_sends_a_test_and_says_where(
    db: Database, settings: Settings, aiohttp_client: Any, relay: FakeSmtp
) -> None:
    await do_seed_templates(db)
    await do_save_journey(db, Actor.system("test"), JOURNEY, "tested.yaml")
    await make_staff(db, COORD, role="coordinator")
    app = create_app(
        replace(
            settings,
            public_url="http://127.0.0.1",
            smtp_url=relay.url,
            email_from="Demo Clinic <clinic@demo-clinic.example.org>",
        ),
        db=db,
    )
    client: TestClient = await aiohttp_client(app)
    await sign_in(client, COORD)
    page = await client.get("/journeys/tested/preview?sample_zone=Asia/Tokyo")
    html = await page.text()
    assert "Send a test to me" in html and 'name="sample_zone" value="Asia/Tokyo"' in html
    csrf = await csrf_of(client, "/journeys/tested/preview")
    sent = await client.post(
        "/journeys/tested/test",
        data={
            "csrf_token": csrf,
            "sample_date": DAY.isoformat(),
            "sample_time": "10:00",
            "sample_zone": "Asia/Tokyo",
            "sample_language": "en",
        },
    )
    assert sent.status == 200 and sent.url.query["sample_zone"] == "Asia/Tokyo"
    assert f"is on its way to {COORD}" in await sent.text()
    async with db.reader() as session:
        events = (
            await session.scalars(select(OutboxEvent).where(OutboxEvent.topic == TEST_TOPIC))
        ).all()
    assert len(events) == 1 and uuid.UUID(events[0].payload["test"].split("|")[0])
    assert "|Asia/Tokyo|en" in events[0].payload["test"]
