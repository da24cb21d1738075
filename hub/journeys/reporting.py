"""What a coordinator watches: the funnel of a journey per step (counts only, no PHI), the
patients behind one cell (a PHI read, audited per patient), the survey report, and the live
``journey:progress`` event that tells their screens to fetch the funnel again."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import phonenumbers
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import record
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.inbox import queries as inbox_queries
from hub.inbox.access import StaffContext
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Message, Patient
from hub.journeys import queries
from hub.journeys import reporting_queries as rq
from hub.journeys.actions import definition_of
from hub.journeys.models import Journey, RunStatus, StepRun
from hub.journeys.versions import steps_of_all_versions
from hub.outbox import add_effect
from hub.templates import RENDER_FAILED_CODE
from hub.templates import queries as template_queries

PROGRESS_ROOM = "journeys"
"""socket.io room of the /staff namespace that coordinators and admins join on connect."""
PROGRESS_TOPIC = "notify:journey:progress"
DRILLDOWN_PAGE_SIZE = 50
"""Patients listed per page of a funnel cell."""
DEFAULT_FUNNEL_MAX_AGE = 1.0
"""Seconds a journey's funnel counts are shared between screens (see FunnelCache)."""
MAX_REASON_CHARS = 160
"""A failure reason is cut to this length, so one odd provider message cannot flood a page."""


@dataclass(frozen=True)
class FunnelColumn:
    key: str
    label: str
    definition: str


FUNNEL_COLUMNS = (
    FunnelColumn("enrolled", "enrolled", "Enrollments that have this step in their plan."),
    FunnelColumn("waiting", "waiting", "Not due yet, or being dispatched right now."),
    FunnelColumn(
        "skipped",
        "skipped",
        "Not sent on purpose: a condition held (already confirmed, already replied, no low "
        "score) or the step was due before the patient was enrolled.",
    ),
    FunnelColumn(
        "untranslated",
        "no translation",
        "Not sent: the step's template has no variant in the patient's language on any "
        "channel they may be reached on (add the variant, or give the journey a "
        "fallback_language).",
    ),
    FunnelColumn(
        "stopped",
        "stopped",
        "Not sent: called off before it was due (the patient confirmed or answered, the "
        "appointment was cancelled, or the journey was stopped).",
    ),
    FunnelColumn(
        "sent", "sent", "A message was made for the patient (queued, deferred or on its way)."
    ),
    FunnelColumn(
        "fallback",
        "in fallback language",
        "Sent, in the journey's fallback language: the template has no variant in the "
        "patient's own.",
    ),
    FunnelColumn(
        "delivered", "delivered", "Sent, and the provider reported it delivered (or read)."
    ),
    FunnelColumn(
        "replied",
        "replied",
        "Sent, and the patient wrote to the clinic (any channel) after this step's message "
        "and before the enrollment's next step message.",
    ),
    FunnelColumn(
        "confirmed",
        "confirmed",
        "Sent, and the appointment was confirmed after this step's message and before the "
        "next step's.",
    ),
    FunnelColumn(
        "cancelled",
        "cancelled",
        "Sent, and the enrollment was cancelled (the patient answered 2, or the clinic "
        "cancelled the appointment) after this step's message and before the next step's.",
    ),
    FunnelColumn(
        "opted_out",
        "opted out",
        "Sent, and the patient revoked consent for this message's channel and purpose "
        "(STOP, unsubscribe, staff, carrier) after it and before the next step's message.",
    ),
    FunnelColumn(
        "failed",
        "failed",
        "Could not reach the patient: no channel could be used or rendering failed, or the "
        "message ended failed/undelivered at the provider (these also count as sent).",
    ),
)
COLUMNS = {c.key: c for c in FUNNEL_COLUMNS}
CHART_COLUMNS = (
    "enrolled",
    "sent",
    "delivered",
    "replied",
    "confirmed",
    "cancelled",
    "opted_out",
    "failed",
)
"""Drawn as bars: the patients' path and its exits (the table has every column)."""


@dataclass(frozen=True)
class FailureCount:
    reason: str
    count: int


@dataclass(frozen=True)
class StepFunnel:
    step_id: str
    asks: str | None
    counts: dict[str, int]
    """Patients per funnel column (FUNNEL_COLUMNS)."""
    runs: dict[str, int]
    """Step runs by status: planned, claimed, sent, skipped, cancelled, failed."""
    messages: dict[str, int]
    """The step's messages by delivery status."""
    failures: list[FailureCount]
    """Why the failed ones failed, most common first (reasons only, never PHI)."""


@dataclass(frozen=True)
class Funnel:
    key: str
    name: str
    status: str
    purpose: str
    enrollments: dict[str, int]
    steps: list[StepFunnel]


_DECISION = re.compile(r"\b(sms|email|voice|chat): (refused|deferred) \((\w+)\)")
_PHONE_LIKE = re.compile(r"\+?\d(?:[\s().-]?\d){6,}")
_EMAIL_LIKE = re.compile(r"[^\s@()<>]+@[^\s@()<>]+")
NO_CHANNEL = "no channel in the patient's order may be used"


def scrub(text: str) -> str:
    """Reasons are written without PHI, but a provider's free text could quote a number or an
    address; anything shaped like one is blanked before it reaches a screen."""
    return _EMAIL_LIKE.sub("[address]", _PHONE_LIKE.sub("[number]", text))[:MAX_REASON_CHARS]


def reason_label(
    run_failed: bool, run_reason: str | None, error_code: str | None, error_reason: str | None
) -> str:
    """A short, groupable reason: channel decisions keep their channel and code, and dated
    details ("opted out on 2026-11-20 by replying STOP") are dropped, so that one cause is
    one row in the failure counts."""
    if run_failed or not error_reason:
        text = run_reason or error_reason or "no reason recorded"
    else:
        text = error_reason.partition(" (after ")[0]
        if error_code and error_code not in text:
            text = f"{text} [{error_code}]"
    decisions = _DECISION.findall(text)
    # Channels the step never allows are noise next to the one that refused (an opt-out).
    decisions = [d for d in decisions if d[2] != "channel_unavailable"] or decisions
    if decisions:
        passed = ", ".join(f"{channel} {outcome} ({code})" for channel, outcome, code in decisions)
        text = f"no usable channel: {passed}" if text.startswith(NO_CHANNEL) else passed
    return scrub(text)


async def do_funnel(db: Database, key: str) -> Funnel:
    """Counts per step and column (see FUNNEL_COLUMNS), with failure reasons."""
    async with db.reader() as session:
        journey = await _journey(session, key)
        counts = await rq.column_counts(session, journey.id, list(COLUMNS))
        runs = await rq.run_counts(session, journey.id)
        messages = await rq.delivery_counts(session, journey.id)
        enrollments = await rq.enrollment_counts(session, journey.id)
        failed = await rq.failure_groups(session, journey.id)
        current = definition_of(journey)
        all_steps = await steps_of_all_versions(session, journey)
    failures: dict[str, dict[str, int]] = {}
    for step_id, run_failed, run_reason, code, error_reason, n in failed:
        label = reason_label(run_failed, run_reason, code, error_reason)
        per_step = failures.setdefault(step_id, {})
        per_step[label] = per_step.get(label, 0) + n
    steps = []
    # Older versions' steps too while enrollments still have runs of them.
    shown = {sid for sid, _, _ in runs} | {s.id for s in current.steps}
    for step in (s for s in all_steps if s.id in shown):
        reasons = sorted(failures.get(step.id, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        steps.append(
            StepFunnel(
                step.id,
                step.asks,
                {c: counts.get(step.id, {}).get(c, 0) for c in COLUMNS},
                {status: n for sid, status, n in runs if sid == step.id},
                {status: n for sid, status, n in messages if sid == step.id},
                [FailureCount(reason, n) for reason, n in reasons],
            )
        )
    return Funnel(
        journey.key, journey.name, journey.status.value, journey.purpose, enrollments, steps
    )


class FunnelCache:
    """Every coordinator's screen re-fetches a journey's funnel on each progress event; this
    runs one count per journey at a time and shares its answer for ``max_age`` seconds, so the
    database does the same work however many screens are watching."""

    def __init__(self, db: Database, max_age: float = DEFAULT_FUNNEL_MAX_AGE) -> None:
        self._db, self._max_age = db, max_age
        self._counts: dict[str, tuple[float, asyncio.Task[Funnel]]] = {}

    async def get(self, key: str) -> Funnel:
        now = time.monotonic()
        started, task = self._counts.get(key, (now, None))
        if task is None or (task.done() and now - started > self._max_age):
            task = asyncio.ensure_future(do_funnel(self._db, key))
            self._counts[key] = (now, task)
        # Shielded: a viewer who leaves does not cancel the count the others wait for.
        return await asyncio.shield(task)


async def _journey(session: AsyncSession, key: str) -> Journey:
    journey = await queries.journey_by_key(session, key)
    if journey is None:
        raise NotFound(f"no journey with key {key}")
    return journey


def mask_phone(phone: str) -> str:
    """ "+15550100101" -> "+1 ••• ••• ••01": enough to tell two patients apart on a list."""
    try:
        country = f"+{phonenumbers.parse(phone).country_code} "
    except phonenumbers.NumberParseException:
        country = ""
    return f"{country}••• ••• ••{phone[-2:]}"


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}•••@{domain}"


@dataclass(frozen=True)
class DrilldownRow:
    patient_id: uuid.UUID
    name: str | None
    contact: str | None
    """Masked: the address the step's message went to, else the patient's phone or email."""
    channel: str | None
    run_status: str
    message_status: str | None
    reason: str | None
    due_at: datetime
    conversation_id: uuid.UUID | None
    """Only when the viewer may open that conversation (their teams; admins: any)."""
    enrollment_id: uuid.UUID | None = None
    """For calling off this patient's enrollment from the list (while the step is pending)."""

    def __repr__(self) -> str:  # keep PHI out of tracebacks and debug output
        return f"DrilldownRow(patient_id={self.patient_id})"


@dataclass(frozen=True)
class Drilldown:
    key: str
    name: str
    step_id: str
    column: FunnelColumn
    page: int
    per_page: int
    total: int
    rows: list[DrilldownRow]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _contact(ring: KeyRing, patient: Patient, channel: str | None) -> str | None:
    phone, email = patient.unseal(ring, "phone"), patient.unseal(ring, "email")
    if email and (channel == "email" or not phone):
        return mask_email(email)
    return mask_phone(phone) if phone else None


def _row_reason(run: StepRun, message: Message | None) -> str | None:
    if run.status is RunStatus.SENT and message is not None and message.error_reason:
        return reason_label(False, run.reason, message.error_code, message.error_reason)
    if run.reason:
        return reason_label(run.status is RunStatus.FAILED, run.reason, None, None)
    return None


async def do_drilldown(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    key: str,
    step_id: str,
    column: str,
    *,
    page: int = 1,
    per_page: int = DRILLDOWN_PAGE_SIZE,
) -> Drilldown:
    """The patients behind one funnel cell, a page at a time. Showing names is a read of PHI:
    each patient listed gets an audit event naming the viewer and the cell."""
    if column not in COLUMNS:
        raise NotFound(f"no funnel column {column}")
    page = max(1, page)
    async with db.transaction() as session:
        journey = await _journey(session, key)
        if step_id not in {s.id for s in await steps_of_all_versions(session, journey)}:
            raise NotFound(f"journey {key} has no step {step_id}")
        total, members = await rq.column_members(
            session, journey.id, step_id, column, (page - 1) * per_page, per_page
        )
        patients = await inbox_queries.patients_by_id(session, {pid for _, _, pid in members})
        conversations = await rq.conversations_by_id(
            session, {m.conversation_id for _, m, _ in members if m is not None}
        )
        latest = await rq.latest_conversations(session, {pid for _, m, pid in members if m is None})
        rows = []
        for run, message, patient_id in members:
            conversation = (
                conversations.get(message.conversation_id) if message else latest.get(patient_id)
            )
            patient = patients[patient_id]
            rows.append(
                DrilldownRow(
                    patient_id=patient_id,
                    name=patient.unseal(ring, "name"),
                    contact=_contact(ring, patient, message.channel.value if message else None),
                    channel=message.channel.value if message else run.channel,
                    run_status=run.status.value,
                    message_status=message.status.value if message else None,
                    reason=_row_reason(run, message),
                    due_at=run.due_at,
                    conversation_id=(
                        conversation.id
                        if conversation is not None and ctx.can_see(conversation)
                        else None
                    ),
                    enrollment_id=run.enrollment_id,
                )
            )
        for patient_id in dict.fromkeys(r.patient_id for r in rows):
            await record(
                session,
                ctx.actor,
                "journey.patients.read",
                "patient",
                patient_id,
                {"journey": key, "step": step_id, "column": column, "page": page},
            )
    return Drilldown(
        journey.key, journey.name, step_id, COLUMNS[column], page, per_page, total, rows
    )


def journey_progress_effect(session: AsyncSession, key: str) -> uuid.UUID:
    """Inside the caller's transaction: after it commits, coordinators' screens showing the
    journey re-fetch its funnel (the event names the journey only)."""
    return add_effect(session, PROGRESS_TOPIC, {"room": PROGRESS_ROOM, "journey": key}).id


async def do_announce_progress(db: Database, key: str) -> uuid.UUID:
    """For changes made outside one transaction (a cohort file, a FHIR bundle): one event
    when they are done, instead of one per patient."""
    async with db.transaction() as session:
        return journey_progress_effect(session, key)


async def journey_names(db: Database) -> dict[str, str]:
    """Installed journeys, key -> name, in name order."""
    async with db.reader() as session:
        return {j.key: j.name for j in await queries.all_journeys(session)}


async def known_appointment_start(db: Database, source: str, external_id: str) -> datetime | None:
    """When an appointment enrolled earlier starts (a cancellation may arrive without it)."""
    async with db.reader() as session:
        appointment = await queries.appointment_by_external(session, source, external_id)
        return appointment.start_at if appointment else None


@dataclass(frozen=True)
class SurveyQuestionReport:
    step_id: str
    question: str
    scale: str
    asked: int
    answered: int
    distribution: dict[int, int]
    nps: float | None
    """Net promoter score for 0-10 questions: % 9-10 minus % 0-6."""
    free_text: int | None
    """Free-text answers in the period (a count: the words are PHI); None for scored questions."""

    @property
    def response_rate(self) -> float | None:
        return round(self.answered / self.asked, 3) if self.asked else None


@dataclass(frozen=True)
class SurveyReport:
    key: str
    name: str
    since: datetime
    until: datetime
    questions: list[SurveyQuestionReport]
    rows: list[tuple[str, int, datetime, uuid.UUID]]
    """(step, score, answered at, enrollment) for the CSV: ids only, no PHI."""


def net_promoter_score(scores: list[int]) -> float | None:
    if not scores:
        return None
    promoters = sum(1 for s in scores if s >= 9)
    detractors = sum(1 for s in scores if s <= 6)
    return round(100 * (promoters - detractors) / len(scores), 1)


async def do_survey_report(
    db: Database, key: str, since: datetime, until: datetime
) -> SurveyReport:
    """Asked, answered, response rate and score distribution per survey question of a period
    (questions asked by due time, answers by answer time), NPS for 0-10 questions."""
    async with db.reader() as session:
        journey = await _journey(session, key)
        free_text = await rq.free_text_counts(session, journey.id, since, until)
        steps = [s for s in definition_of(journey).steps if s.survey is not None]
        rows = await rq.survey_rows(session, journey.id, since, until)
        asked = await rq.survey_asks(session, journey.id, [s.id for s in steps], since, until)
    questions = []
    for step in steps:
        assert step.survey is not None
        scores = [score for sid, score, _, _ in rows if sid == step.id]
        texts = free_text.get(step.id, 0) if step.survey.scale == "free_text" else None
        questions.append(
            SurveyQuestionReport(
                step.id,
                step.survey.question,
                step.survey.scale,
                asked.get(step.id, 0),
                len(scores) if texts is None else texts,
                {n: scores.count(n) for n in sorted(set(scores))},
                net_promoter_score(scores) if step.survey.scale == "0-10" else None,
                texts,
            )
        )
    return SurveyReport(journey.key, journey.name, since, until, questions, rows)


RENDER_FAILURES_SHOWN_FOR = timedelta(days=7)
"""The journeys page warns about template render failures this recent."""


@dataclass(frozen=True)
class TemplateFailure:
    """Step messages one template failed to render for, grouped by reason (no PHI)."""

    journey: str
    journey_name: str
    step_id: str
    template: str
    channel: str
    reason: str
    count: int
    last_at: datetime


async def do_template_failures(db: Database, now: datetime | None = None) -> list[TemplateFailure]:
    """Render failures of the last RENDER_FAILURES_SHOWN_FOR, most frequent first, leaving
    out those from before the template was last changed (an admin's fix clears the warning)."""
    since = (now or utcnow()) - RENDER_FAILURES_SHOWN_FOR
    async with db.reader() as session:
        rows = await rq.render_failures(session, RENDER_FAILED_CODE, since)
        journeys = {j.id: j for j in await queries.all_journeys(session)}
        changed = {t.key: t.updated_at for t in await template_queries.all_templates(session)}
    found = []
    for journey_id, step_id, channel, reason, count, last_at in rows:
        journey = journeys.get(journey_id)
        if journey is None:
            continue
        step = next((s for s in definition_of(journey).steps if s.id == step_id), None)
        template = step.template if step else "?"
        if template in changed and last_at < changed[template]:
            continue
        text = scrub(reason.removeprefix("not sent: "))
        found.append(
            TemplateFailure(
                journey.key, journey.name, step_id, template, channel, text, count, last_at
            )
        )
    return sorted(found, key=lambda f: (-f.count, f.journey, f.step_id))


async def do_render_failure_totals(db: Database) -> dict[tuple[str, str], int]:
    """Step messages ever failed to render, by (template, channel): what /metrics counts."""
    async with db.reader() as session:
        rows = await rq.render_failures(session, RENDER_FAILED_CODE)
        journeys = {j.id: j for j in await queries.all_journeys(session)}
    totals: dict[tuple[str, str], int] = {}
    for journey_id, step_id, channel, _reason, count, _last in rows:
        journey = journeys.get(journey_id)
        step = (
            next((s for s in definition_of(journey).steps if s.id == step_id), None)
            if journey
            else None
        )
        key = (step.template if step else "unknown", channel)
        totals[key] = totals.get(key, 0) + count
    return totals
