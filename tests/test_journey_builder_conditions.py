"""Patient tag filters on journey steps (the issue's "risk or tag filters"): written in YAML or
the builder's form, checked by the parser, and decided by the dispatch on the patient's tags
by blind index, with reasons that name no tag."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.actions.tags import set_patient_tags_in
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.builder import fields_from_form, fields_of, to_yaml
from hub.journeys.definitions import JourneyInvalid, plan
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.journeys.models import StepRun
from hub.journeys.parse import parse_journey
from hub.journeys.versions import do_save_journey
from hub.templates.actions import do_seed_templates

SYSTEM = Actor.system("test")
NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
VISIT = datetime(2026, 11, 27, 10, 0, tzinfo=NY)
TAGGED = """\
key: risk_calls
name: Extra reminders for high-risk patients
purpose: reminders
anchor: appointment_start
steps:
  - id: extra_72h
    offset: -72h
    template: appointment_reminder
    channel: sms
    conditions: [{only_if_tagged: [High-Risk, frail]}]
  - id: usual_48h
    offset: -48h
    template: appointment_reminder
    channel: sms
    conditions: [{skip_if_tagged: [palliative]}]
"""


@pytest.fixture(autouse=True)
def fixed_today(set_clock: Any) -> None:
    set_clock(NOW)


def test_the_parser_reads_and_checks_tag_filters() -> None:
    steps = parse_journey(TAGGED, "risk.yaml").steps
    assert steps[0].tagged("only_if_tagged") == ("high-risk", "frail")
    assert steps[1].tagged("skip_if_tagged") == ("palliative",)
    with pytest.raises(JourneyInvalid, match=r"line 10: .*only_if_tagged: expected a list"):
        parse_journey(TAGGED.replace("[High-Risk, frail]", "[]"), "risk.yaml")
    with pytest.raises(JourneyInvalid, match=r'"a,b" is not a tag'):
        parse_journey(TAGGED.replace("[High-Risk, frail]", '["a,b"]'), "risk.yaml")


def test_the_form_writes_tag_filters() -> None:
    form = {
        "key": ["risk_calls"],
        "purpose": ["reminders"],
        "anchor": ["appointment_start"],
        "step_count": ["1"],
        "s0.id": ["extra"],
        "s0.amount": ["3"],
        "s0.unit": ["d"],
        "s0.when": ["before"],
        "s0.template": ["appointment_reminder"],
        "s0.tagged": ["high-risk, frail"],
        "s0.not_tagged": ["palliative"],
        "window_from": ["08:30"],
        "window_to": ["19:00"],
    }
    definition = parse_journey(to_yaml(fields_from_form(form)), "form")
    assert definition.send_window == (time(8, 30), time(19, 0))
    step = definition.steps[0]
    assert step.conditions == {"only_if_tagged:high-risk,frail", "skip_if_tagged:palliative"}


async def _patient(db: Database, ring: KeyRing, n: int, tags: list[str]) -> uuid.UUID:
    patient_id = await actions.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(name=f"Sample {n}", phone=f"+155501001{n:02d}", time_zone="America/New_York"),
        region="US",
    )
    async with db.transaction() as session:
        await set_patient_tags_in(session, ring, patient_id, tags)
    return patient_id


async def test_dispatch_sends_by_tag_and_names_no_tag(db: Database, ring: KeyRing) -> None:
    await do_seed_templates(db)
    await do_save_journey(db, SYSTEM, TAGGED, "risk.yaml")
    patients = {
        "high-risk": await _patient(db, ring, 1, ["high-risk"]),
        "palliative": await _patient(db, ring, 2, ["Palliative", "frail"]),
        "untagged": await _patient(db, ring, 3, []),
    }
    enrollments = {}
    for who, patient_id in patients.items():
        result = await journeys.do_enroll(
            db,
            SYSTEM,
            "risk_calls",
            patient_id,
            appointment=journeys.NewAppointment(f"appt-{who}", VISIT, location="Room 2"),
            now=NOW,
            ring=ring,
        )
        enrollments[result.enrollment_id] = who
    at = datetime(2026, 11, 25, 10, 0, tzinfo=NY)  # both steps are due
    claimed = await journeys.do_claim_due(db, now=at)
    await do_prepare_batch(
        db,
        ring,
        claimed,
        providers=providers_for({Channel.SMS}, {}),
        clinic={"name": "Demo Clinic", "phone": "+15550109999"},
        public_url="https://hub.example.org",
        now=at,
    )
    async with db.reader() as session:
        runs = (await session.scalars(select(StepRun))).all()
    # A sent run's reason may be a deferral (the daily cap): only skips are compared by reason.
    outcome = {
        (enrollments[r.enrollment_id], r.step_id): (
            r.status.value,
            r.reason if r.status.value == "skipped" else None,
        )
        for r in runs
    }
    assert outcome == {
        ("high-risk", "extra_72h"): ("sent", None),
        ("high-risk", "usual_48h"): ("sent", None),
        ("palliative", "extra_72h"): ("sent", None),  # frail
        ("palliative", "usual_48h"): ("skipped", "the patient has a tag this step skips"),
        ("untagged", "extra_72h"): (
            "skipped",
            "the patient has none of the tags this step is for",
        ),
        ("untagged", "usual_48h"): ("sent", None),
    }


WINDOWED = """\
key: windowed
purpose: reminders
anchor: appointment_start
send_window: 09:00-18:00
steps:
  - {id: day_before, offset: -24h, template: appointment_reminder}
  - {id: early, offset: -2h, template: appointment_reminder}
  - {id: after, offset: +1d12h, template: appointment_reminder}
"""


def test_the_send_window_plans_steps_into_the_patients_day() -> None:
    definition = parse_journey(WINDOWED, "windowed.yaml")
    visit = datetime(2026, 12, 10, 9, 30, tzinfo=NY)
    planned = {
        p.step_id: p.due_at.astimezone(NY)
        for p in plan(definition, visit, datetime(2026, 12, 1, tzinfo=UTC), zone=NY)
    }
    assert planned == {
        "day_before": datetime(2026, 12, 9, 9, 30, tzinfo=NY),  # inside: kept
        # 07:30 on the day is before the window: back to the evening before, not after the visit.
        "early": datetime(2026, 12, 9, 18, 0, tzinfo=NY),
        # 21:30 the day after: forward to the next morning's opening.
        "after": datetime(2026, 12, 12, 9, 0, tzinfo=NY),
    }
    for bad, problem in (
        ("9-18", '"9-18" is not a window like 09:00-18:00'),
        ("18:00-09:00", "closes before it opens"),
    ):
        with pytest.raises(JourneyInvalid, match=f"line 4: send_window: .*{problem}"):
            parse_journey(WINDOWED.replace("09:00-18:00", bad), "windowed.yaml")
    fields = fields_of(definition)
    assert (fields.window_from, fields.window_to) == ("09:00", "18:00")
    assert parse_journey(to_yaml(fields), "form") == definition
