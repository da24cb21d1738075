"""A journey end to end: a real `hub worker` (RQ's cron scheduler ticking, forked work horses)
on real Redis, the SDK against the fake Twilio, and a clock every process shares, moved
forward by the test. Steps go out at their times and not before, CONFIRM by SMS stops the
remaining ask and is answered, and a survey score is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.consent import actions as consent
from hub.consent.models import ConsentSource, ConsentState, Purpose
from hub.db import utcnow
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.models import RunStatus, StepRun, SurveyAnswer
from hub.templates.actions import do_seed_templates
from tests.stack import WAIT_S, Stack, eventually

pytestmark = pytest.mark.slow

SYSTEM = Actor.system("test")

REMINDERS = """\
key: e2e_reminders
name: Reminders
purpose: reminders
anchor: appointment_start
steps:
  - id: ask_72h
    offset: -72h
    template: appointment_reminder
    channels: [sms]
    asks: confirmation
    conditions: [skip_if_confirmed]
    on_reply:
      confirm:
        do: [confirm_appointment, cancel_remaining_asks]
        reply: appointment_confirmed
  - id: ask_24h
    offset: -24h
    template: appointment_reminder
    channels: [sms]
    asks: confirmation
    conditions: [skip_if_confirmed]
  - id: today_2h
    offset: -2h
    template: appointment_reminder_today
    channels: [sms]
"""


async def test_steps_go_out_at_their_times_confirm_stops_asks_and_a_score_is_stored(
    stack: Stack,
) -> None:
    await do_seed_templates(stack.db)
    await journeys.do_install_journey(stack.db, SYSTEM, REMINDERS, "e2e_reminders.yaml")
    patient_id = await actions.do_create_patient(
        stack.db,
        stack.ring,
        SYSTEM,
        NewPatient(name="Avery Sample", phone=stack.patient_number, time_zone="UTC", verified=True),
        region="US",
    )
    async with stack.db.transaction() as session:  # surveys need the patient's opt-in
        change = consent.ConsentChange(ConsentSource.STAFF, "staff:test", "asked at the desk")
        session.add(
            change.record(patient_id, Channel.SMS, Purpose.SURVEYS, ConsentState.GRANTED, utcnow())
        )
    # 14:00 UTC five days out: every step's time falls inside the 08:00-21:00 send window.
    today = utcnow()
    start = datetime(today.year, today.month, today.day, 14, tzinfo=UTC) + timedelta(days=5)
    await journeys.do_enroll(
        stack.db,
        SYSTEM,
        "e2e_reminders",
        patient_id,
        appointment=journeys.NewAppointment("visit-1", start, location="Room 2"),
        ring=stack.ring,
    )
    texts = stack.fake.messages

    async def at(moment: datetime) -> None:
        """Move every clock to ``moment`` and wait for a tick that has seen it."""
        await stack.ticked_at(stack.advance_clock(moment - utcnow()))

    # A minute before the first step: a tick runs, nothing goes out.
    await at(start - timedelta(hours=72, minutes=1))
    assert texts == []
    await at(start - timedelta(hours=72))
    await stack.fake.wait_for(lambda f: len(f.messages) == 1, timeout=WAIT_S)
    assert texts[0].to == stack.patient_number and "Room 2" in texts[0].body

    await stack.text_from_patient("CONFIRM")
    await stack.fake.wait_for(lambda f: len(f.messages) == 2, timeout=WAIT_S)
    assert "is confirmed" in texts[1].body  # the step's reply template answers

    runs = await step_runs(stack)
    assert (runs["ask_24h"].status, runs["ask_24h"].reason) == (
        RunStatus.CANCELLED,
        "the patient confirmed",
    )
    await at(start - timedelta(hours=24))
    assert len(texts) == 2  # the second ask never goes
    await at(start - timedelta(hours=2))
    await stack.fake.wait_for(lambda f: len(f.messages) == 3, timeout=WAIT_S)
    assert "today" in texts[2].body.lower()
    assert {r.channel for r in (await step_runs(stack)).values() if r.channel} == {"sms"}

    # After the visit: the shipped follow-up survey, its NPS question the next day.
    await install_example(stack, "post_visit_follow_up")
    await journeys.do_enroll(
        stack.db, SYSTEM, "post_visit_follow_up", patient_id, anchor_at=start + timedelta(hours=1)
    )
    await at(start + timedelta(days=1, hours=1))
    await stack.fake.wait_for(lambda f: len(f.messages) == 4, timeout=WAIT_S)
    await stack.text_from_patient("9")

    async def stored() -> list[tuple[str, int | None]]:
        async with stack.db.reader() as session:
            answers = (await session.scalars(select(SurveyAnswer))).all()
        return [(a.step_id, a.score) for a in answers]

    assert await eventually(stored, "the survey answer") == [("nps", 9)]
    # 9 is not below 7: the free-text follow-up is skipped when its time comes.
    await at(start + timedelta(days=1, hours=3, minutes=1))

    async def follow_up_handled() -> StepRun | None:
        run = (await step_runs(stack))["could_do_better"]
        return None if run.status is RunStatus.CLAIMED else run

    run = await eventually(follow_up_handled, "the follow-up question's batch")
    assert (run.status, run.reason) == (RunStatus.SKIPPED, "no survey score below 7")
    assert len(texts) == 4


async def install_example(stack: Stack, key: str) -> None:
    """Install a shipped example journey (as `hub journey launch` does on first use)."""
    text = resources.files("hub.journeys").joinpath("examples", f"{key}.yaml").read_text()
    await journeys.do_install_journey(stack.db, SYSTEM, text, f"{key}.yaml")


async def step_runs(stack: Stack) -> dict[str, StepRun]:
    async with stack.db.reader() as session:
        rows = (await session.scalars(select(StepRun).order_by(StepRun.attempt))).all()
    return {r.step_id: r for r in rows}
