"""Launch warns before it fails (issue 14, points 5 and 3): the dry run counts what a launch
would do for each step (opt-ins nobody has, languages without a variant, no usable channel)
without writing anything, through the dispatch's own decision; and the dispatch never sends a
step silently in English to a patient whose language its template lacks."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.consent import actions as consent
from hub.consent.models import ConsentSource, ConsentState, Purpose
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions as inbox
from hub.inbox.models import Message, Patient
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.cohort import launch
from hub.journeys.definitions import load_examples
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.journeys.models import Enrollment, RunStatus, StepRun
from hub.journeys.preview import LaunchPreview, do_preview_launch
from hub.journeys.reporting import do_funnel
from hub.templates.actions import do_seed_templates, load_seed
from hub.templates.models import MessageTemplate, TemplateVariant
from tests.conftest import stored_rows

SYSTEM = Actor.system("test")
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # 10:00 in New York: inside the send window
CONNECTED = {Channel.SMS, Channel.EMAIL}
CLINIC = {"name": "Demo Clinic", "phone": "+15550109999"}
FOLLOW_UP = """\
key: lang_follow_up
name: Follow-up
purpose: care
anchor: enrollment
steps:
  - {id: thanks, offset: +0h, template: visit_follow_up, channels: [sms, email]}
"""
HEADER = "name,phone,email,language,time_zone\n"
# Synthetic patients: 555 numbers, example.org addresses, fictional names.
COHORT = HEADER + (
    "Avery Sample,+15550100101,,en,America/New_York\n"
    "Blake Placeholder,+15550100102,,es-MX,America/New_York\n"
    "Casey Fictional,+15550100103,,vi,America/New_York\n"
    "Devon Testperson,+15550100104,devon@example.org,vi,America/New_York\n"
    "Emery Example,+15550100105,,en,America/New_York\n"
)


@pytest.fixture(autouse=True)
def fixed_today(set_clock: Any) -> None:
    set_clock(NOW)


@pytest.fixture
async def seeded(db: Database, ring: KeyRing) -> None:
    """The shipped templates, and Emery: already a patient, who texted STOP."""
    await do_seed_templates(db)
    emery = await inbox.do_create_patient(
        db,
        ring,
        SYSTEM,
        NewPatient(name="Emery Example", phone="+15550100105", time_zone="America/New_York"),
        region="US",
    )
    async with db.transaction() as session:
        await consent.revoke_channel(
            session,
            emery,
            Channel.SMS,
            consent.ConsentChange(ConsentSource.KEYWORD, f"patient:{emery}", "STOP"),
        )


async def install(db: Database, text: str) -> None:
    await journeys.do_install_journey(db, SYSTEM, text, "test.yaml")


async def preview(
    db: Database, ring: KeyRing, key: str, cohort: str, available: set[Channel] = CONNECTED
) -> LaunchPreview:
    return await do_preview_launch(
        db, ring, key, io.StringIO(cohort, newline=""), region="US", available=available, now=NOW
    )


async def enroll(db: Database, ring: KeyRing, key: str, cohort: str) -> None:
    report = await launch(
        db, ring, SYSTEM, key, io.StringIO(cohort, newline=""), region="US", now=NOW
    )
    assert report.enrolled


async def dispatch_due(db: Database, ring: KeyRing, at: datetime) -> dict[str, str]:
    """Every due run through the worker's dispatch (do_prepare_batch): outcome by run id."""
    outcomes: dict[str, str] = {}
    while claimed := await journeys.do_claim_due(db, now=at):
        batch = await do_prepare_batch(
            db,
            ring,
            claimed,
            providers=providers_for(CONNECTED, {}),
            clinic=CLINIC,
            public_url="https://hub.example.org",
            now=at,
        )
        outcomes.update({str(r.run_id): r.outcome for r in batch.results})
    return outcomes


async def runs_by_language(
    db: Database, ring: KeyRing
) -> dict[str, tuple[StepRun, Message | None]]:
    async with db.reader() as session:
        rows = (
            await session.execute(
                select(StepRun, Patient, Message)
                .join(Enrollment, Enrollment.id == StepRun.enrollment_id)
                .join(Patient, Patient.id == Enrollment.patient_id)
                .outerjoin(Message, Message.id == StepRun.message_id)
            )
        ).all()
    return {f"{p.unseal(ring, 'name')}": (run, m) for run, p, m in rows}


async def test_no_variant_in_the_patients_language_is_skipped_not_sent_in_english(
    db: Database, ring: KeyRing, seeded: None
) -> None:
    await install(db, FOLLOW_UP)
    await enroll(db, ring, "lang_follow_up", COHORT)
    await dispatch_due(db, ring, NOW)
    runs = await runs_by_language(db, ring)

    casey_run, casey_message = runs["Casey Fictional"]  # vi: visit_follow_up has en and es only
    assert casey_run.status is RunStatus.SKIPPED and casey_message is None
    assert casey_run.reason == "no vi variant of visit_follow_up for sms"
    devon_run, _ = runs["Devon Testperson"]  # vi too, reachable on sms and email
    assert devon_run.reason == "no vi variant of visit_follow_up for sms, email"
    blake_run, blake_message = runs["Blake Placeholder"]  # es-MX gets the es variant
    assert blake_run.status is RunStatus.SENT and blake_message is not None
    assert (blake_message.unseal(ring, "body") or "").startswith("Hola")
    avery_run, avery_message = runs["Avery Sample"]
    assert avery_run.status is RunStatus.SENT and avery_message is not None

    [step] = (await do_funnel(db, "lang_follow_up")).steps
    assert step.counts["untranslated"] == 2
    assert step.counts["skipped"] == 0  # a skip on purpose is another column
    assert step.counts["sent"] == 2
    assert step.counts["failed"] == 1  # Emery: opted out of texts, no email address


async def test_a_journeys_fallback_language_is_used_and_counted(
    db: Database, ring: KeyRing, seeded: None
) -> None:
    await install(
        db, FOLLOW_UP.replace("anchor: enrollment", "anchor: enrollment\nfallback_language: en")
    )
    await enroll(db, ring, "lang_follow_up", COHORT)
    await dispatch_due(db, ring, NOW)
    casey_run, casey_message = (await runs_by_language(db, ring))["Casey Fictional"]
    assert casey_run.status is RunStatus.SENT and casey_message is not None
    assert casey_run.reason is not None
    assert (
        "sent in the fallback language (en): no vi variant of visit_follow_up" in casey_run.reason
    )
    [step] = (await do_funnel(db, "lang_follow_up")).steps
    assert step.counts["fallback"] == 2 and step.counts["untranslated"] == 0
    assert step.counts["sent"] == 4


async def test_a_channel_without_the_language_passes_to_one_that_has_it(
    db: Database, ring: KeyRing, seeded: None
) -> None:
    async with db.transaction() as session:
        template = (
            await session.scalars(
                select(MessageTemplate).where(MessageTemplate.key == "visit_follow_up")
            )
        ).one()
        session.add(
            TemplateVariant(
                template_id=template.id,
                channel=Channel.EMAIL,
                locale="vi",
                subject="Cảm ơn bạn đã đến khám",
                body="Cảm ơn bạn đã đến {{ clinic.name }}.",
            )
        )
    await install(db, FOLLOW_UP)
    await enroll(db, ring, "lang_follow_up", COHORT)
    preview_after = await preview(db, ring, "lang_follow_up", COHORT)
    assert preview_after.enroll == 0 and preview_after.already == 5
    await dispatch_due(db, ring, NOW)
    devon_run, devon_message = (await runs_by_language(db, ring))["Devon Testperson"]
    assert devon_run.status is RunStatus.SENT and devon_run.channel == "email"
    assert devon_message is not None and devon_message.channel is Channel.EMAIL
    assert (devon_message.unseal(ring, "body") or "").startswith("Cảm ơn")
    assert devon_run.reason == (
        "sms: refused (no_variant): no vi variant of visit_follow_up for sms"
    )


async def test_the_dry_run_counts_what_dispatch_then_does_and_writes_nothing(
    db: Database, ring: KeyRing, seeded: None
) -> None:
    await install(db, FOLLOW_UP)
    before = await stored_rows(db)
    dry = await preview(
        db, ring, "lang_follow_up", COHORT + "Frankie Sample,not a number,,en,UTC\n"
    )
    assert await stored_rows(db) == before  # nothing enrolled, no patient created
    assert (dry.rows, dry.enroll, dry.already, dry.patients_created) == (6, 5, 0, 4)
    assert dry.errors == ["line 7: not a phone number"] and dry.error_count == 1
    [step] = dry.steps
    assert (step.sending, step.no_channel) == (2, 1)
    assert step.untranslated == {"vi": 2}
    assert step.untranslated_channels == {"vi": {"sms", "email"}}
    assert dry.warnings == [
        "Step thanks: 1 of 5 patients have no channel it may use (email: no address 1; "
        "sms: opted out 1); it would fail for them.",
        "2 patients prefer vi; template visit_follow_up has no vi variant for email, sms: "
        "Step thanks would be skipped for them (add the variant, or set fallback_language "
        "in the journey).",
    ]

    await enroll(db, ring, "lang_follow_up", COHORT)
    outcomes = await dispatch_due(db, ring, NOW)
    done = sorted(outcomes.values())
    assert done == sorted(["sending"] * step.sending + ["skipped"] * 2 + ["failed"] * 1)


SURVEY_COHORT = HEADER + "".join(
    f"Patient {n},+1555010{n:04d},,en,America/New_York\n" for n in range(1, 5)
)


async def test_the_shipped_survey_warns_that_nobody_has_an_opt_in(
    db: Database, ring: KeyRing, seeded: None
) -> None:
    shipped = resources.files("hub.journeys").joinpath("examples", "post_visit_follow_up.yaml")
    await install(db, shipped.read_text(encoding="utf-8"))
    dry = await preview(db, ring, "post_visit_follow_up", SURVEY_COHORT)
    nps = dry.steps[0]
    assert (nps.due, nps.no_opt_in, nps.sending) == (4, 4, 0)
    assert dry.warnings[0] == (
        "Step nps needs a surveys opt-in: 0 of 4 patients have one on a channel it may use; "
        "it would fail for all 4."
    )

    # One stored patient who opted in to surveys by SMS: the launch matches them by phone.
    await enroll(db, ring, "post_visit_follow_up", HEADER + "Patient 1,+15550100001,,en,UTC\n")
    async with db.transaction() as session:
        bidx = ring.blind_index("phone", "+15550100001")
        patient = (await session.scalars(select(Patient).where(Patient.phone_bidx == bidx))).one()
        change = consent.ConsentChange(ConsentSource.STAFF, "staff:test", "asked at the desk")
        session.add(
            change.record(patient.id, Channel.SMS, Purpose.SURVEYS, ConsentState.GRANTED, NOW)
        )
    dry = await preview(db, ring, "post_visit_follow_up", SURVEY_COHORT)
    # Discharge journeys anchor at enrollment time: the stored patient's launch was at NOW too,
    # so their row is already enrolled; the three others would not be sent the question.
    assert (dry.enroll, dry.already) == (3, 1)
    assert dry.warnings[0].startswith("Step nps needs a surveys opt-in: 0 of 3 patients")

    later = NOW + timedelta(days=1)
    dry = await do_preview_launch(
        db,
        ring,
        "post_visit_follow_up",
        io.StringIO(SURVEY_COHORT, newline=""),
        region="US",
        available=CONNECTED,
        now=later,
    )
    assert (dry.enroll, dry.steps[0].due, dry.steps[0].no_opt_in) == (4, 4, 3)
    assert dry.warnings[0] == (
        "Step nps needs a surveys opt-in: 1 of 4 patients have one on a channel it may use; "
        "it would fail for 3."
    )


def test_every_shipped_journey_text_is_written_in_every_shipped_language() -> None:
    """A step without the patient's language is skipped, so the shipped journeys must not
    lack a language the shipped templates speak (the day-of reminder was English only)."""
    seeds = {seed["key"]: seed for seed in load_seed()}
    languages = {v["locale"] for seed in seeds.values() for v in seed["variants"]}
    missing = []
    for journey in load_examples().values():
        for key in sorted(journey.template_keys()):
            by_channel: dict[str, set[str]] = {}
            for v in seeds[key]["variants"]:
                by_channel.setdefault(v["channel"], set()).add(v["locale"])
            for channel, locales in sorted(by_channel.items()):
                if languages - locales:
                    missing.append(f"{journey.key}: {key} ({channel}) has no {languages - locales}")
    assert missing == []


CALL_FIRST = """\
key: call_first
name: Call first
purpose: care
anchor: enrollment
steps:
  - {id: call, offset: +0h, template: visit_follow_up, channels: [voice]}
"""
# The same instant is 10:00 in New York, 00:00 in Tokyo and 07:00 in Los Angeles: a care call
# is placed only inside the send window, so the patients' zones change what the step does. The
# first six (every language and address mix) are in New York: a decision remembered without
# the window would then count everyone after them as called.
LANGUAGES = ("en", "es", "vi")
ZONES = ("America/New_York", "Asia/Tokyo", "America/Los_Angeles")
ZONES_COHORT = (
    HEADER
    + "".join(
        f"Patient {n},+1555010{n:04d},{f'p{n}@example.org' if n % 2 else ''},"
        f"{LANGUAGES[n % 3]},{ZONES[0 if n <= 6 else 1 + n % 2]}\n"
        for n in range(1, 19)
    )
    + "Emery Example,+15550100105,,en,America/New_York\n"
)


async def test_deciding_each_combination_once_counts_what_deciding_each_row_counts(
    db: Database, ring: KeyRing, seeded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dry run decides each distinct set of facts once (a 100,000-row cohort has few);
    the counts must be those of deciding every patient's every step on its own: here the
    patients' zones put a care call inside or outside the send window."""
    from hub.journeys import preview as preview_module

    await install(db, CALL_FIRST)
    connected = {Channel.SMS, Channel.EMAIL, Channel.VOICE}

    remembered = await preview(db, ring, "call_first", ZONES_COHORT, connected)

    class Forgetful(dict[tuple[object, ...], Any]):
        def __setitem__(self, key: tuple[object, ...], value: Any) -> None:
            pass  # every row's every step decided on its own

    class EachRow(preview_module._Judging):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.decided = Forgetful()

    monkeypatch.setattr(preview_module, "_Judging", EachRow)
    each = await preview(db, ring, "call_first", ZONES_COHORT, connected)
    [step] = remembered.steps
    assert step.summary() == each.steps[0].summary()
    assert remembered.warnings == each.warnings
    assert (step.sending, step.no_channel) == (each.steps[0].sending, each.steps[0].no_channel)
    assert step.untranslated == each.steps[0].untranslated
    assert step.refusals == each.steps[0].refusals
    # Tokyo and Los Angeles are outside the window; New York's are called.
    assert step.refusals.get("voice: outside the call window") and step.sending
