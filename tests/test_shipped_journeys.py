"""Shipped journeys keep what their texts promise: every shipped text that invites a reply
("Reply C", "Reply 2", "press 1", "reply with a number 0-10", "Responda C"...) is sent by a
step that handles that reply. And the day-of reminder's "2" cancels, after an earlier "C" too
(the latest answer wins), through the real intake."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.channels.base import InboundMessage
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.actions.intake import detect_keyword
from hub.inbox.models import Message, Note
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.csat import CSAT_KEY
from hub.journeys.csat import journey_definition as csat_journey
from hub.journeys.definitions import JourneyDefinition, StepDefinition
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.journeys.models import (
    Appointment,
    AppointmentStatus,
    Enrollment,
    EnrollmentStatus,
    RunStatus,
    StepRun,
)
from hub.journeys.parse import load_examples
from hub.templates.actions import do_seed_templates, load_seed
from hub.templates.promises import LANGUAGES, promises

NY = ZoneInfo("America/New_York")
SYSTEM = Actor.system("shipped-journeys-test")
CLINIC = {"name": "Demo Clinic", "phone": "+15550109999"}
PHONE = "+15550100188"
VISIT = datetime(2026, 11, 25, 10, tzinfo=NY)


# --- the promise walk ---------------------------------------------------------------------


def _parts(variant: dict[str, Any]) -> list[str]:
    return [p for p in (variant["body"], variant["subject"], variant["html"]) if p is not None]


def _sent_on(step: StepDefinition) -> tuple[Channel, ...]:
    """Every channel the step may go out on (its own list, or any the patient may prefer)."""
    return step.channel_order(tuple(Channel))


def unkept_promises(
    examples: dict[str, JourneyDefinition], seeds: list[dict[str, Any]]
) -> list[str]:
    """Every shipped invitation to reply that no step acts on, in plain words."""
    variants = {seed["key"]: seed["variants"] for seed in seeds}
    problems: list[str] = []
    sent: set[tuple[str, str]] = set()

    def check(where: str, step: StepDefinition | None, key: str, channel: Channel) -> None:
        for v in variants[key]:
            if v["channel"] != channel.value:
                continue
            sent.add((key, channel.value))
            for text in _parts(v):
                for promise in promises(text, v["locale"]):
                    label = (
                        f'{where}: {key} ({channel.value}, {v["locale"]}) says "{promise.sentence}"'
                    )
                    if promise.meaning == "keyword":
                        if detect_keyword(promise.token) is None:
                            problems.append(f"{label}, but {promise.token} is no keyword")
                        continue
                    kind = step.handled(promise.token, channel) if step else None
                    if kind is None:
                        problems.append(f"{label}, but a {promise.token!r} does nothing there")
                    elif promise.meaning not in ("any", kind):
                        problems.append(f"{label}, but a {promise.token!r} is read as {kind}")

    for journey in examples.values():
        for step in journey.steps:
            for channel in _sent_on(step):
                where = f"{journey.key}.{step.id}"
                check(where, step, step.template, channel)
                # The answers a step sends back are read at the same step.
                for handler in step.on_reply:
                    if handler.reply_template:
                        check(f"{where} (answer)", step, handler.reply_template, channel)
    # Templates no shipped step sends (automatic replies, the chat invite) have no step to
    # handle an answer: they may name carrier keywords only. (A used template's variants for
    # channels the shipped steps do not use are read when a journey sends them.)
    used = {key for key, _channel in sent}
    for key, key_variants in variants.items():
        for v in key_variants:
            if key not in used:
                check("no journey step", None, key, Channel(v["channel"]))
    return problems


def test_every_shipped_text_that_invites_a_reply_belongs_to_a_step_that_handles_it() -> None:
    # The csat journey is shipped in code (hub.journeys.csat), enrolled on a resolution.
    shipped = {**load_examples(), CSAT_KEY: csat_journey()}
    assert unkept_promises(shipped, load_seed()) == []


def test_the_promise_walk_finds_an_unkept_promise() -> None:
    """The walk itself: the day-of step as it shipped (no reply handling) is reported."""
    examples = {**load_examples(), CSAT_KEY: csat_journey()}
    reminders = examples["appointment_reminders"]
    text = (
        resources.files("hub.journeys")
        .joinpath("examples/appointment_reminders.yaml")
        .read_text(encoding="utf-8")
    )
    shipped_before = text.split("    asks: cancellation")[0]
    from hub.journeys.parse import parse_journey

    examples["appointment_reminders"] = parse_journey(shipped_before, "before.yaml")
    assert reminders.step("sms_2h").asks == "cancellation"
    problems = unkept_promises(examples, load_seed())
    # One per language the day-of text is written in (en, es): the same unkept "Reply 2".
    assert all(
        p.startswith("appointment_reminders.sms_2h: appointment_reminder_today (sms, ")
        for p in problems
    )
    (problem,) = [p for p in problems if "(sms, en)" in p]
    assert "Can't make it? Reply 2" in problem and "'2' does nothing there" in problem


@pytest.mark.parametrize(
    ("locale", "text", "expected"),
    [
        ("en", "Reply C to confirm or call us.", [("C", "confirm")]),
        ("en", "Can't make it? Reply 2 or call.", [("2", "cancel")]),
        ("en", "To confirm, press 1. If you need to cancel, press 2.",
         [("1", "confirm"), ("2", "cancel")]),
        ("en", "How likely...? Reply with a number 0-10.", [("0", "score"), ("10", "score")]),
        ("en", "Reply YES to confirm. Reply STOP to opt out.",
         [("YES", "confirm"), ("STOP", "keyword")]),
        ("en", "Questions? Reply here or call us.", []),
        ("es", "Responda C para confirmar o llame.", [("C", "confirm")]),
        ("es", "¿No puede venir? Responda 2.", [("2", "cancel")]),
        ("es", "Para confirmar, oprima 1. Si necesita cancelar, oprima 2.",
         [("1", "confirm"), ("2", "cancel")]),
        ("es", "Responda con su nota del 1 al 5.", [("1", "score"), ("5", "score")]),
    ],
)  # fmt: skip
def test_promises_are_read_from_the_words_per_language(
    locale: str, text: str, expected: list[tuple[str, str]]
) -> None:
    assert [(p.token, p.meaning) for p in promises(text, locale)] == expected


def test_every_shipped_language_has_promise_patterns() -> None:
    locales = {v["locale"].split("-")[0] for seed in load_seed() for v in seed["variants"]}
    assert locales <= set(LANGUAGES)


# --- the day-of "2", before and after a "C", through the intake ---------------------------


@pytest.fixture
async def enrolled(db: Database, ring: KeyRing, set_clock: Any) -> uuid.UUID:
    set_clock(datetime(2026, 11, 20, 12, tzinfo=UTC))
    await do_seed_templates(db)
    text = (
        resources.files("hub.journeys")
        .joinpath("examples/appointment_reminders.yaml")
        .read_text(encoding="utf-8")
    )
    await journeys.do_install_journey(db, SYSTEM, text, "appointment_reminders.yaml")
    pid = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(
            name="Robin Sample",
            phone=PHONE,
            email="robin@example.org",
            time_zone="America/New_York",
            channel_order=["sms", "email"],
        ),
        region="US",
    )
    await journeys.do_enroll(
        db,
        SYSTEM,
        "appointment_reminders",
        pid,
        appointment=journeys.NewAppointment("visit-1", VISIT),
        now=datetime(2026, 11, 20, 12, tzinfo=UTC),
    )
    return pid


async def _dispatch(db: Database, ring: KeyRing, at: datetime, set_clock: Any) -> None:
    set_clock(at)
    claimed = await journeys.do_claim_due(db, now=at)
    await do_prepare_batch(
        db,
        ring,
        claimed,
        providers=providers_for({Channel.SMS, Channel.EMAIL}, {}),
        clinic=CLINIC,
        public_url="https://hub.example.org",
        now=at,
    )


async def _text_in(db: Database, ring: KeyRing, body: str, at: datetime, set_clock: Any) -> None:
    set_clock(at)
    inbound = InboundMessage(
        provider="twilio_sms",
        provider_message_id="SM" + uuid.uuid4().hex,
        channel=Channel.SMS,
        from_address=PHONE,
        to_address="+15550109999",
        body=body,
    )
    await actions.do_receive_inbound(db, ring, inbound, {}, help_text="help", clinic=CLINIC)


async def _state(db: Database, ring: KeyRing) -> dict[str, Any]:
    async with db.reader() as session:
        enrollment = (await session.scalars(select(Enrollment))).one()
        appointment = await session.get(Appointment, enrollment.appointment_id)
        runs = {r.step_id: r for r in (await session.scalars(select(StepRun))).all()}
        outbound = [
            m.unseal(ring, "body") or ""
            for m in (
                await session.scalars(select(Message).order_by(Message.created_at, Message.id))
            ).all()
            if m.direction.value == "outbound"
        ]
        notes = [n.unseal(ring, "body") for n in (await session.scalars(select(Note))).all()]
    assert appointment is not None
    return {
        "enrollment": enrollment.status,
        "confirmed": enrollment.confirmed_at is not None,
        "appointment": appointment.status,
        "runs": {k: r.status for k, r in runs.items()},
        "outbound": outbound,
        "notes": notes,
    }


async def test_the_day_of_2_cancels_for_a_patient_who_never_confirmed(
    db: Database, ring: KeyRing, enrolled: uuid.UUID, set_clock: Any
) -> None:
    for hours in (72, 24, 2):
        await _dispatch(db, ring, VISIT - timedelta(hours=hours), set_clock)
    before = await _state(db, ring)
    assert before["runs"]["sms_2h"] is RunStatus.SENT
    assert "Can't make it? Reply 2" in before["outbound"][-1]

    await _text_in(db, ring, "2", VISIT - timedelta(hours=1, minutes=50), set_clock)
    after = await _state(db, ring)
    assert after["enrollment"] is EnrollmentStatus.CANCELLED
    assert after["appointment"] is AppointmentStatus.CANCELLED
    assert "has been cancelled" in after["outbound"][-1]
    assert after["notes"] == [
        "The patient cancelled their appointment by reply; 0 planned message(s) were cancelled."
    ]


async def test_a_2_after_a_c_cancels_the_confirmed_appointment_the_latest_answer_wins(
    db: Database, ring: KeyRing, enrolled: uuid.UUID, set_clock: Any
) -> None:
    await _dispatch(db, ring, VISIT - timedelta(hours=72), set_clock)
    await _dispatch(db, ring, VISIT - timedelta(hours=24), set_clock)
    await _text_in(db, ring, "C", VISIT - timedelta(hours=23), set_clock)
    confirmed = await _state(db, ring)
    assert confirmed["confirmed"] and confirmed["appointment"] is AppointmentStatus.CONFIRMED
    assert "is confirmed" in confirmed["outbound"][-1]
    assert confirmed["runs"]["sms_2h"] is RunStatus.PLANNED  # the day-of text still goes

    # The day-of text reaches the confirmed patient; a second "C" changes nothing...
    await _dispatch(db, ring, VISIT - timedelta(hours=2), set_clock)
    await _text_in(db, ring, "C", VISIT - timedelta(hours=1, minutes=55), set_clock)
    again = await _state(db, ring)
    assert sum("is confirmed" in b for b in again["outbound"]) == 1
    # ...and a "2" cancels: appointment, staff note, and an answer to the patient.
    await _text_in(db, ring, "2", VISIT - timedelta(hours=1, minutes=50), set_clock)
    after = await _state(db, ring)
    assert after["enrollment"] is EnrollmentStatus.CANCELLED
    assert after["appointment"] is AppointmentStatus.CANCELLED
    assert "has been cancelled" in after["outbound"][-1]
    assert after["notes"][-1].endswith(
        "They had confirmed it earlier: the cancellation is the latest answer."
    )


async def test_a_2_between_the_confirmation_and_the_day_of_text_cancels_and_stops_it(
    db: Database, ring: KeyRing, enrolled: uuid.UUID, set_clock: Any
) -> None:
    await _dispatch(db, ring, VISIT - timedelta(hours=24), set_clock)
    await _text_in(db, ring, "C", VISIT - timedelta(hours=23), set_clock)
    await _text_in(db, ring, "2", VISIT - timedelta(hours=20), set_clock)
    after = await _state(db, ring)
    assert after["appointment"] is AppointmentStatus.CANCELLED
    assert after["runs"]["sms_2h"] is RunStatus.CANCELLED  # no "see you today" after that
    assert "has been cancelled" in after["outbound"][-1]
    # Once cancelled, a "C" is a message for staff: it does not book the slot again.
    await _text_in(db, ring, "C", VISIT - timedelta(hours=19), set_clock)
    assert (await _state(db, ring))["appointment"] is AppointmentStatus.CANCELLED


async def test_no_answer_is_taken_once_the_appointment_has_started(
    db: Database, ring: KeyRing, enrolled: uuid.UUID, set_clock: Any
) -> None:
    await _dispatch(db, ring, VISIT - timedelta(hours=2), set_clock)
    await _text_in(db, ring, "2", VISIT + timedelta(minutes=30), set_clock)
    after = await _state(db, ring)
    assert after["appointment"] is not AppointmentStatus.CANCELLED
    assert after["enrollment"] is not EnrollmentStatus.CANCELLED
