"""Dispatch a claimed batch of step runs. One transaction prepares the whole batch (consent,
channel, template, message, first delivery attempt, run status) with a handful of queries for
all its runs; the caller then sends the prepared messages concurrently and records the answers
in one more transaction (hub.inbox.actions.delivery.do_record_outcomes).

Rows are read as plain values where nothing writes them back through the ORM, and written in
bulk (one INSERT per table and one UPDATE of the runs, each executed for all rows) rather than
through the session's unit of work, whose per-object bookkeeping cost more than deciding and
rendering a message.

Exactly once: a run leaves ``claimed`` in the same commit that creates its message and claims
the message's first attempt, so a duplicated or retried batch finds it handled ("gone"). A batch
that dies before that commit leaves its runs claimed, and they are taken again after the lease;
one that dies after it leaves messages ``sending``, which the stalled-send sweep asks the
provider about before sending again."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.channels.base import Outbound
from hub.consent import actions as consent
from hub.consent import queries as consent_queries
from hub.consent.models import Purpose
from hub.crypto import KeyRing, associated_data
from hub.db import Database, insert_rows, new_id, update_by_id, utcnow
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus, Priority
from hub.errors import HubError
from hub.inbox.actions.delivery import SendTask, address_of, message_new_effect, send_job_effect
from hub.inbox.actions.email_out import build_extras
from hub.inbox.actions.tags import tag_index
from hub.inbox.models import Conversation, DeliveryAttempt, Message, Patient
from hub.journeys import dispatch_queries as dq
from hub.journeys.definitions import JourneyDefinition, StepDefinition
from hub.journeys.models import (
    Journey,
    JourneyStatus,
    RunStatus,
    StepRun,
    SurveyAnswer,
)
from hub.journeys.step_choice import VariantCache, choose_for_step
from hub.journeys.versions import definition_for
from hub.outbox import add_effect
from hub.templates import RENDER_FAILED_CODE, TemplateRenderError
from hub.templates.actions import template_context
from hub.templates.render import Rendered, VariantText, log_render_failure, render_variant

PROGRESS_ROOM = "journeys"
"""socket.io room of the coordinators' journey pages."""


@dataclass(frozen=True)
class Dispatched:
    run_id: uuid.UUID
    outcome: str
    """"sending", "deferred", "skipped", "failed", "released" (journey paused) or "gone"
    (already handled by another batch)."""
    reason: str | None
    message_id: uuid.UUID | None


@dataclass(frozen=True)
class PreparedBatch:
    results: tuple[Dispatched, ...]
    tasks: tuple[SendTask, ...]
    """Messages claimed for their first attempt: send them now, then record the outcomes."""
    effect_ids: tuple[uuid.UUID, ...]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        return counts


@dataclass
class _Batch:
    """What a batch loaded once for all its runs."""

    session: AsyncSession
    ring: KeyRing
    now: datetime
    providers: Mapping[Channel, str]
    clinic: Mapping[str, Any]
    public_url: str
    reply_domain: str | None
    policy: Any
    enrollments: dict[uuid.UUID, dq.EnrollmentFacts]
    journeys: dict[uuid.UUID, Journey]
    patients: dict[uuid.UUID, Patient]
    consent: dict[tuple[uuid.UUID, Channel], dict[Purpose, Any]]
    sends: dict[uuid.UUID, list[datetime]]
    conversations: dict[tuple[uuid.UUID, Channel], Conversation | _Opened]
    replied: dict[uuid.UUID, datetime]
    answers: dict[uuid.UUID, list[SurveyAnswer]]
    failed: dict[tuple[uuid.UUID, str], set[str]]
    variants: VariantCache
    definitions: dict[tuple[uuid.UUID, int | None], JourneyDefinition] = field(default_factory=dict)
    """By journey and the version an enrollment follows (running ones keep theirs)."""
    tags: dict[uuid.UUID, set[bytes]] = field(default_factory=dict)
    """Each patient's tag indexes, loaded only when a step of the batch filters by tag."""
    tasks: list[SendTask] = field(default_factory=list)
    effects: list[uuid.UUID] = field(default_factory=list)
    new_conversations: list[dict[str, Any]] = field(default_factory=list)
    new_messages: list[dict[str, Any]] = field(default_factory=list)
    new_attempts: list[dict[str, Any]] = field(default_factory=list)
    run_changes: list[dict[str, Any]] = field(default_factory=list)
    watched: list[tuple[dict[str, Any], Conversation]] = field(default_factory=list)
    """New messages in conversations someone may have open (not resolved)."""


async def do_prepare_batch(
    db: Database,
    ring: KeyRing,
    run_ids: Iterable[uuid.UUID],
    *,
    providers: Mapping[Channel, str],
    clinic: Mapping[str, Any],
    public_url: str,
    reply_domain: str | None = None,
    now: datetime | None = None,
) -> PreparedBatch:
    """Prepare a claimed batch. ``providers``: the connected channels and their adapters."""
    now = now or utcnow()
    ids = list(dict.fromkeys(run_ids))
    async with db.transaction() as session:
        runs = await dq.claimed_runs(session, ids, db.dialect == "postgresql")
        held = {r.id for r in runs}
        results = [Dispatched(rid, "gone", None, None) for rid in ids if rid not in held]
        if not runs:
            return PreparedBatch(tuple(results), (), ())
        batch = await _load(session, ring, runs, now, providers, clinic, public_url, reply_domain)
        keys: set[str] = set()
        for run in runs:
            enrollment = batch.enrollments[run.enrollment_id]
            journey = batch.journeys[enrollment.journey_id]
            results.append(await _dispatch_one(batch, run, enrollment, journey))
            keys.add(journey.key)
        # Parents first (foreign keys): conversations, messages, their attempts, then the runs
        # that point at the messages.
        await insert_rows(session, Conversation, batch.new_conversations)
        await insert_rows(session, Message, batch.new_messages)
        await insert_rows(session, DeliveryAttempt, batch.new_attempts)
        await update_by_id(session, StepRun, batch.run_changes)
        # Staff watching an open conversation see the reminder appear; resolved ones (most
        # reminders) are on no one's screen, and 20,000 events per launch would cost more
        # than the sends.
        for row, conversation in batch.watched:
            batch.effects.append(message_new_effect(session, Message(**row), conversation))
        for key in sorted(keys):
            batch.effects.append(
                add_effect(
                    session, "notify:journey:progress", {"room": PROGRESS_ROOM, "journey": key}
                ).id
            )
        return PreparedBatch(tuple(results), tuple(batch.tasks), tuple(batch.effects))


async def _load(
    session: AsyncSession,
    ring: KeyRing,
    runs: list[dq.ClaimedRun],
    now: datetime,
    providers: Mapping[Channel, str],
    clinic: Mapping[str, Any],
    public_url: str,
    reply_domain: str | None,
) -> _Batch:
    enrollments = await dq.enrollment_facts(session, [r.enrollment_id for r in runs])
    journeys = await dq.by_ids(session, Journey, [e.journey_id for e in enrollments.values()])
    patient_ids = {e.patient_id for e in enrollments.values()}
    patients = await dq.by_ids(session, Patient, patient_ids)
    conditions: set[str] = set()
    definitions: dict[tuple[uuid.UUID, int | None], JourneyDefinition] = {}
    for run in runs:
        facts = enrollments[run.enrollment_id]
        journey = journeys[facts.journey_id]
        pinned = (journey.id, facts.version)
        if pinned not in definitions:
            definitions[pinned] = await definition_for(session, journey, facts.version)
        step = _step(definitions[pinned], run.step_id)
        if step is not None:
            conditions.update(c.split(":", 1)[0] for c in step.conditions)
    policy = await consent.load_policy(session)
    return _Batch(
        session=session,
        variants=VariantCache(session),
        ring=ring,
        now=now,
        providers=providers,
        clinic=clinic,
        public_url=public_url,
        reply_domain=reply_domain,
        policy=policy,
        enrollments=enrollments,
        journeys=journeys,
        patients=patients,
        consent=await consent_queries.latest_records_of(session, patient_ids),
        sends=await consent_queries.automated_sends_of(
            session,
            patient_ids,
            [p.value for p in policy.automated_purposes],
            now - timedelta(days=7),
        ),
        conversations={**await dq.latest_conversations(session, patient_ids)},
        replied=(
            await dq.last_inbound_at(session, patient_ids)
            if "only_if_no_reply" in conditions
            else {}
        ),
        answers=(
            await dq.answers_of(session, enrollments) if "only_if_score_below" in conditions else {}
        ),
        failed=await dq.tried_channels(
            session, [(r.enrollment_id, r.step_id) for r in runs if r.attempt > 1]
        ),
        definitions=definitions,
        tags=(
            await dq.tag_indexes_of(session, patient_ids)
            if conditions & {"only_if_tagged", "skip_if_tagged"}
            else {}
        ),
    )


def _step(definition: JourneyDefinition, step_id: str) -> StepDefinition | None:
    return next((s for s in definition.steps if s.id == step_id), None)


async def _dispatch_one(
    batch: _Batch, run: dq.ClaimedRun, enrollment: dq.EnrollmentFacts, journey: Journey
) -> Dispatched:
    reason: str | None
    if journey.status is JourneyStatus.PAUSED:
        # Paused after the claim: hand the run back; it goes when the journey resumes.
        _change_run(batch, run, RunStatus.PLANNED, claimed_until=None)
        return Dispatched(run.id, "released", "the journey is paused", None)
    definition = batch.definitions[(journey.id, enrollment.version)]
    step = _step(definition, run.step_id)
    if step is None:
        gone = "the journey no longer has this step"
        _change_run(batch, run, RunStatus.SKIPPED, reason=gone)
        return Dispatched(run.id, "skipped", gone, None)
    skip = _skip_reason(batch, step, enrollment)
    if skip is not None:
        _change_run(batch, run, RunStatus.SKIPPED, reason=skip)
        return Dispatched(run.id, "skipped", skip, None)
    patient = batch.patients[enrollment.patient_id]
    purpose = step.purpose or definition.purpose
    channels = patient.channels()
    choice = await choose_for_step(
        batch.variants,
        patient,
        step,
        purpose,
        batch.now,
        fallback_language=definition.fallback_language,
        policy=batch.policy,
        available=set(batch.providers),
        excluded={
            c: "an earlier attempt of this step failed on it" for c in _failed_channels(batch, run)
        },
        latest={ch: batch.consent.get((patient.id, ch), {}) for ch in Channel},
        caps=consent.caps_from(
            batch.sends.setdefault(patient.id, []), patient.time_zone, batch.now
        ),
    )
    if choice.untranslated is not None:
        # Nothing is written to the patient: a message in a language they did not choose
        # would be read as the clinic's (or not read at all). The funnel counts the skip.
        _change_run(batch, run, RunStatus.SKIPPED, reason=choice.untranslated)
        return Dispatched(run.id, "skipped", choice.untranslated, None)
    notes = choice.notes
    decision = choice.decision
    channel = decision.channel if decision else (channels[0] if channels else Channel.SMS)
    conversation = _conversation_for(batch, patient, channel)
    message_id = new_id()
    message: dict[str, Any] = {
        "id": message_id,
        "conversation_id": conversation.id,
        "direction": Direction.OUTBOUND,
        "channel": channel,
        "status": MessageStatus.QUEUED,
        "purpose": purpose.value,
        "created_at": batch.now,
        "send_attempts": 0,
        "error_code": None,
        "error_reason": None,
        "body_enc": None,
        "subject_enc": None,
        "html_enc": None,
        "next_attempt_at": None,
        "delivery_notes": notes,
    }
    batch.new_messages.append(message)
    if isinstance(conversation, Conversation) and (
        conversation.status is not ConversationStatus.RESOLVED
    ):
        batch.watched.append((message, conversation))
    run_channel: str | None = channel.value
    outcome, reason = "sending", None
    if decision is None:
        reason = "no channel in the patient's order may be used: " + "; ".join(notes)
        message.update(status=MessageStatus.FAILED, error_code="no_channel", error_reason=reason)
        run_channel = None
        outcome = "failed"
    else:
        try:
            rendered = _render(batch, choice.variant, enrollment, patient)
        except HubError as exc:
            code = "template"
            if isinstance(exc, TemplateRenderError):
                # Its own code: the journeys page and /metrics count these from the database.
                code = RENDER_FAILED_CODE
                log_render_failure(exc, sender="journey")
            reason = f"not sent: {exc}"
            message.update(status=MessageStatus.FAILED, error_code=code, error_reason=reason)
            outcome = "failed"
        else:
            message["body_enc"] = _seal(batch.ring, "body_enc", message_id, rendered.body)
            if channel is Channel.EMAIL:
                message["subject_enc"] = _seal(
                    batch.ring, "subject_enc", message_id, rendered.subject
                )
                message["html_enc"] = _seal(batch.ring, "html_enc", message_id, rendered.html)
            batch.sends[patient.id].append(batch.now)  # caps count within the batch too
            if decision.deferred and decision.not_before is not None:
                outcome = "deferred"
                message["next_attempt_at"] = decision.not_before
                notes.append(decision.summary())
                wait = (decision.not_before - batch.now).total_seconds()
                batch.effects.append(
                    send_job_effect(batch.session, message_id, queue="bulk", delay_s=wait)
                )
            else:
                _claim_first_attempt(batch, message, conversation, patient, rendered, decision)
    if outcome == "failed":
        status = RunStatus.FAILED
    else:
        status, reason = RunStatus.SENT, "; ".join(notes) or None
    _change_run(batch, run, status, reason=reason, channel=run_channel, message_id=message_id)
    return Dispatched(run.id, outcome, reason, message_id)


_UNCHANGED: Any = object()


def _change_run(
    batch: _Batch,
    run: dq.ClaimedRun,
    status: RunStatus,
    *,
    claimed_until: datetime | None = _UNCHANGED,
    reason: str | None = _UNCHANGED,
    channel: str | None = _UNCHANGED,
    message_id: uuid.UUID | None = _UNCHANGED,
) -> None:
    """The run's new values, for one UPDATE of the whole batch; every row names the same
    columns (one statement), the ones a case does not change keep their loaded values (the
    row is locked, so they are current)."""
    batch.run_changes.append(
        {
            "row_id": run.id,
            "status": status,
            "claimed_until": run.claimed_until if claimed_until is _UNCHANGED else claimed_until,
            "reason": run.reason if reason is _UNCHANGED else reason,
            "channel": run.channel if channel is _UNCHANGED else channel,
            "message_id": run.message_id if message_id is _UNCHANGED else message_id,
        }
    )


def _seal(ring: KeyRing, column: str, message_id: uuid.UUID, value: str | None) -> bytes | None:
    """What ``Message.seal`` stores, for a row written without a Message object."""
    if value is None:
        return None
    aad = associated_data(Message.__tablename__, column, message_id)
    return ring.encrypt(value.encode("utf-8"), aad)


def _claim_first_attempt(
    batch: _Batch,
    message: dict[str, Any],
    conversation: Conversation | _Opened,
    patient: Patient,
    rendered: Rendered,
    decision: Any,
) -> None:
    channel: Channel = message["channel"]
    provider = batch.providers[channel]
    message.update(status=MessageStatus.SENDING, send_attempts=1)
    batch.new_attempts.append(
        {
            "id": new_id(),
            "message_id": message["id"],
            "attempt": 1,
            "provider": provider,
            "status": MessageStatus.SENDING,
            "created_at": batch.now,
        }
    )
    address = address_of(batch.ring, patient, channel)
    assert address is not None  # the gate refuses a channel the patient has no address for
    callback = None
    if channel in (Channel.SMS, Channel.VOICE):
        callback = f"{batch.public_url}/webhooks/twilio/status?m={message['id']}&a=1"
    extras: dict[str, Any] = {}
    if channel is Channel.EMAIL:  # other channels ignore them (as email_extras says)
        extras = build_extras(
            batch.ring,
            Message(**message),
            conversation if isinstance(conversation, Conversation) else conversation.build(),
            subject=rendered.subject,
            html=rendered.html,
            reply_domain=batch.reply_domain,
            public_url=batch.public_url,
            now=batch.now,
        )
    batch.tasks.append(
        SendTask(
            Outbound(
                message_id=message["id"],
                attempt=1,
                channel=channel,
                to_address=address,
                body=rendered.body,
                from_address=conversation.channel_address,
                status_callback_url=callback,
                **extras,
            ),
            decision,
            provider,
        )
    )


def _skip_reason(batch: _Batch, step: StepDefinition, enrollment: dq.EnrollmentFacts) -> str | None:
    for condition in step.conditions:
        if condition == "skip_if_confirmed" and enrollment.confirmed_at is not None:
            return "the patient already confirmed"
        if condition == "only_if_no_reply":
            last = batch.replied.get(enrollment.patient_id)
            if last is not None and last >= enrollment.created_at:
                return "the patient has replied since enrolling"
        if condition.startswith("only_if_score_below:"):
            limit = int(condition.split(":", 1)[1])
            scores = [a.score for a in batch.answers.get(enrollment.id, []) if a.score is not None]
            if not scores or min(scores) >= limit:
                return f"no survey score below {limit}"
    # The reasons name no tag: a patient's tag ("oncology") says what they are treated for.
    tags = batch.tags.get(enrollment.patient_id, set())
    wanted = step.tagged("only_if_tagged")
    if wanted and not tags & {tag_index(batch.ring, t) for t in wanted}:
        return "the patient has none of the tags this step is for"
    if tags & {tag_index(batch.ring, t) for t in step.tagged("skip_if_tagged")}:
        return "the patient has a tag this step skips"
    return None


def _render(
    batch: _Batch,
    variant: VariantText | HubError | None,
    enrollment: dq.EnrollmentFacts,
    patient: Patient,
) -> Rendered:
    if isinstance(variant, HubError):
        raise variant
    assert variant is not None  # a chosen channel always has its lookup's answer
    appointment = None
    if enrollment.appointment_start is not None:
        location, provider = enrollment.appointment_place(batch.ring)
        appointment = {
            "start": enrollment.appointment_start,
            "location": location,
            "provider": provider,
        }
    named = _Named(patient.unseal(batch.ring, "name"), patient.language, patient.time_zone)
    return render_variant(variant, template_context(named, appointment, batch.clinic))


@dataclass(frozen=True)
class _Named:
    """What a template sees of a patient (hub.templates.actions.PatientFields). Only the name
    is decrypted: a full view would also open the addresses, which templates never use."""

    name: str | None
    language: str
    time_zone: str

    def __repr__(self) -> str:  # keep the name out of tracebacks
        return "_Named(...)"


def _conversation_for(batch: _Batch, patient: Patient, channel: Channel) -> Conversation | _Opened:
    found = batch.conversations.get((patient.id, channel))
    if found is not None:
        return found
    # A clinic-initiated message needs no one's attention until the patient answers, and an
    # answer within the reopen window brings the conversation back to the inbox.
    opened = _Opened(
        {
            "id": new_id(),
            "patient_id": patient.id,
            "channel": channel,
            "status": ConversationStatus.RESOLVED,
            "priority": Priority.NORMAL,
            "created_at": batch.now,
            "last_activity_at": batch.now,
            "resolved_at": batch.now,
        }
    )
    batch.new_conversations.append(opened.row)
    batch.conversations[(patient.id, channel)] = opened
    return opened


@dataclass(frozen=True)
class _Opened:
    """A conversation this batch opens, as the row it inserts. Resolved, so no one watches it;
    no ORM object is built unless a helper needs one (building one costs more than rendering
    the message)."""

    row: dict[str, Any]

    @property
    def id(self) -> uuid.UUID:
        conversation_id: uuid.UUID = self.row["id"]
        return conversation_id

    @property
    def channel_address(self) -> str | None:
        return None  # only an inbound message tells which of the clinic's addresses was used

    def build(self) -> Conversation:
        return Conversation(**self.row)


def _failed_channels(batch: _Batch, run: dq.ClaimedRun) -> set[Channel]:
    """Channels an earlier attempt of this step already failed on (a fallback attempt)."""
    return {Channel(c) for c in batch.failed.get((run.enrollment_id, run.step_id), ())}


def providers_for(connected: Iterable[Channel], known: Mapping[Channel, str]) -> dict[Channel, str]:
    """Connected channels and the adapter name each uses (tests connect channels whose adapter
    is not built; their sends fail at the adapter with a reason)."""
    return {ch: known.get(ch, ch.value) for ch in connected}
