""" "Try a message" (hub/routing/try_message.py, /admin/routing/try): it says which rule fires,
the team, priority, tags and the automatic reply a message would get, and what the consent
gate decides for a chosen patient; and it stores and sends nothing."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from hub.audit import AuditEvent
from hub.config import Settings
from hub.consent.models import Purpose
from hub.consent.schemas import Outcome
from hub.db import Database
from hub.enums import Channel, Priority
from hub.inbox.models import Conversation, Message, Patient, Team
from hub.outbox import OutboxEvent
from hub.routing import actions as routing
from hub.routing.try_message import TryMessage, do_try_message
from tests.conftest import make_staff
from tests.staff_helpers import csrf_of, sign_in
from tests.test_triage_web import PUBLIC, text
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN
from web.app import create_app
from web.keys import RING

pytestmark = pytest.mark.usefixtures("fresh_redis")

ADMIN = "ada.admin@demo-clinic.example.org"
CLINIC = {"name": "Example Clinic", "phone": "(555) 010-0100"}
NOON = datetime(2026, 3, 11, 17, 0, tzinfo=UTC)  # a Wednesday, 12:00 in New York


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    app_settings = replace(
        settings,
        public_url=PUBLIC,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number="+15550109999",
    )
    return await aiohttp_client(create_app(app_settings, db=db))  # type: ignore[no-any-return]


async def _rows(db: Database) -> dict[str, int]:
    counts = {}
    async with db.reader() as session:
        for model in (Conversation, Message, OutboxEvent, Patient, AuditEvent):
            counts[model.__name__] = await session.scalar(select(func.count()).select_from(model))
    return counts


async def _billing_rule(db: Database, actor: Any, **extra: Any) -> None:
    await routing.do_create_rule(
        db,
        actor,
        name="Billing questions",
        conditions={"body_keywords": ["bill", "invoice"], "channel": ["sms"]},
        actions={
            "team": "Billing",
            "priority": "high",
            "add_tags": ["billing"],
            "auto_reply": "Thanks {{ first_name }}, {{ clinic_name }} billing will text you back.",
            **extra,
        },
    )


async def test_a_rule_fires_with_its_team_priority_tags_and_reply(
    client: TestClient, db: Database
) -> None:
    admin = await make_staff(db, ADMIN, role="admin", teams=("Billing",))
    await _billing_rule(db, admin.actor)
    before = await _rows(db)
    ring = client.server.app[RING]

    fired = await do_try_message(
        db,
        ring,
        admin.actor,
        TryMessage("A question about my bill", Channel.SMS, NOON),
        clinic=CLINIC,
    )
    assert fired.rules == ["Billing questions"]
    assert (fired.team, fired.priority, fired.tags) == ("Billing", Priority.HIGH, ["billing"])
    assert fired.reply == "Thanks Sam, Example Clinic billing will text you back."
    assert fired.reply_source == "rule:Billing questions"
    assert fired.consent is None  # no patient chosen

    # Another channel, or other words: the rule does not fire, the default team takes it.
    by_mail = await do_try_message(
        db, ring, admin.actor, TryMessage("my bill", Channel.EMAIL, NOON), clinic=CLINIC
    )
    assert by_mail.rules == [] and by_mail.reply is None and by_mail.priority is Priority.NORMAL
    # Nothing stored, not even an audit line: no patient's data was shown.
    assert await _rows(db) == before


async def test_urgent_words_win_over_the_rule_reply(client: TestClient, db: Database) -> None:
    admin = await make_staff(db, ADMIN, role="admin", teams=("Billing",))
    await _billing_rule(db, admin.actor)
    out = await do_try_message(
        db,
        client.server.app[RING],
        admin.actor,
        TryMessage("chest pain since I saw the bill", Channel.SMS, NOON),
        clinic=CLINIC,
    )
    assert out.urgent and out.priority is Priority.URGENT
    assert out.rules == ["Billing questions"] and out.reply_source == "triage"
    assert any("only the emergency reply" in n for n in out.notes)


async def test_after_hours_the_team_reply_is_shown(client: TestClient, db: Database) -> None:
    admin = await make_staff(db, ADMIN, role="admin", teams=("Front desk",))
    async with db.transaction() as session:
        team = (await session.scalars(select(Team).where(Team.name == "Front desk"))).one()
        team.is_default, team.after_hours_enabled = True, True
        team.time_zone = "America/New_York"
        team.business_hours = {"wed": [["08:00", "17:00"]]}
        team.after_hours_replies = {"en": "We are closed, {{ first_name }}."}
    ring = client.server.app[RING]
    night = datetime(2026, 3, 12, 3, 0, tzinfo=UTC)  # 23:00 in New York
    closed = await do_try_message(
        db, ring, admin.actor, TryMessage("hello", Channel.SMS, night), clinic=CLINIC
    )
    assert (closed.team, closed.reply_source) == ("Front desk", "after_hours")
    assert closed.reply == "We are closed, Sam."
    open_ = await do_try_message(
        db, ring, admin.actor, TryMessage("hello", Channel.SMS, NOON), clinic=CLINIC
    )
    assert open_.reply is None


async def test_the_consent_gate_answers_for_a_chosen_patient(
    client: TestClient, db: Database
) -> None:
    admin = await make_staff(db, ADMIN, role="admin", teams=("Billing",))
    await _billing_rule(db, admin.actor)
    await text(client, "STOP")
    async with db.reader() as session:
        patient_id = (await session.scalars(select(Patient.id))).one()
    before = await _rows(db)

    out = await do_try_message(
        db,
        client.server.app[RING],
        admin.actor,
        TryMessage("my invoice", Channel.SMS, NOON, patient_id=patient_id),
        clinic=CLINIC,
    )
    assert out.consent is not None
    assert (out.consent.outcome, out.consent.code) == (Outcome.REFUSED, "opted_out")
    assert "opted out of SMS" in out.consent.reason
    # Written as routing would: this patient has no name on file.
    assert out.reply == "Thanks there, Example Clinic billing will text you back."
    surveys = await do_try_message(
        db,
        client.server.app[RING],
        admin.actor,
        TryMessage(
            "my invoice", Channel.EMAIL, NOON, patient_id=patient_id, purpose=Purpose.SURVEYS
        ),
        clinic=CLINIC,
    )
    assert surveys.consent is not None and surveys.consent.code == "no_address"
    by_phone = await do_try_message(
        db,
        client.server.app[RING],
        admin.actor,
        TryMessage(
            "my invoice", Channel.SMS, NOON, patient_id=patient_id, consent_channel=Channel.VOICE
        ),
        clinic=CLINIC,
    )
    assert by_phone.consent is not None
    assert (by_phone.consent.channel, by_phone.consent.outcome) == (Channel.VOICE, Outcome.ALLOWED)
    # An audit line per try (the patient's consent and tags were shown), nothing else.
    after = await _rows(db)
    assert after == {**before, "AuditEvent": before["AuditEvent"] + 3}
    with pytest.raises(Exception, match="no such patient"):
        await do_try_message(
            db,
            client.server.app[RING],
            admin.actor,
            TryMessage("x", Channel.SMS, NOON, patient_id=uuid.uuid4()),
            clinic=CLINIC,
        )


async def test_the_routing_page_tries_a_message(client: TestClient, db: Database) -> None:
    await make_staff(db, ADMIN, role="admin", teams=("Billing",))
    await sign_in(client, ADMIN)
    csrf = await csrf_of(client, "/admin/routing")
    await client.post(
        "/admin/routing/rules",
        data={
            "csrf_token": csrf,
            "name": "Billing questions",
            "enabled": "1",
            "c_keywords": "bill, invoice",
            "a_team": "Billing",
            "a_reply": "Billing will call you, {{ first_name }}.",
        },
        allow_redirects=False,
    )
    before = await _rows(db)
    answer = await client.post(
        "/admin/routing/try",
        data={"csrf_token": csrf, "body": "where is my invoice", "channel": "sms", "at": ""},
        headers={"HX-Request": "true"},
    )
    html = await answer.text()
    assert answer.status == 200 and "<html" not in html  # the fragment only
    assert "Billing questions" in html and "Billing will call you, Sam." in html
    empty = await client.post(
        "/admin/routing/try", data={"csrf_token": csrf, "body": " ", "channel": "sms"}
    )
    assert "type the message a patient would send" in await empty.text()
    assert await _rows(db) == before


async def test_rules_stop_and_business_hours_as_routing_does(
    client: TestClient, db: Database
) -> None:
    admin = await make_staff(db, ADMIN, role="admin", teams=("Front desk", "Billing"))
    async with db.transaction() as session:
        desk = (await session.scalars(select(Team).where(Team.name == "Front desk"))).one()
        desk.is_default, desk.time_zone = True, "America/New_York"
        desk.business_hours = {"wed": [["08:00", "17:00"]]}
    await routing.do_create_rule(
        db,
        admin.actor,
        name="Night tag",
        conditions={"business_hours": "closed"},
        actions={"add_tags": ["night"]},
    )
    await routing.do_create_rule(
        db,
        admin.actor,
        name="New senders",
        conditions={"patient_is_new": True},
        actions={"team": "Billing"},
        stop_processing=True,
    )
    await routing.do_create_rule(
        db, admin.actor, name="Everything", conditions={}, actions={"priority": "low"}
    )
    ring = client.server.app[RING]
    night = datetime(2026, 3, 12, 3, 0, tzinfo=UTC)
    known = await do_try_message(
        db, ring, admin.actor, TryMessage("hi", Channel.SMS, NOON), clinic=CLINIC
    )
    assert known.rules == ["Everything"] and known.priority is Priority.LOW
    new_at_night = await do_try_message(
        db, ring, admin.actor, TryMessage("hi", Channel.SMS, night, is_new=True), clinic=CLINIC
    )
    assert new_at_night.rules == ["Night tag", "New senders"]  # stopped before "Everything"
    assert (new_at_night.team, new_at_night.tags) == ("Billing", ["night"])
    assert new_at_night.priority is Priority.NORMAL
