"""What a patient's reply does to their journeys, inside intake's transaction.

The reply goes to the open question it answers: of the patient's active enrollments, the step
sent most recently that asks for something and is not answered yet (a confirmation not given,
a survey question without an answer), and sent less than ``ASK_OPEN_FOR`` ago. So a patient
with two appointments confirms the newer reminder first, then the other. The step's
``on_reply`` handler says what the reply does (its actions) and which template answers it on
the channel it came on. Every reply also stays in the inbox as a message, whatever it did.

The latest answer wins: a patient who confirmed may still cancel by reply ("2") until the
appointment starts, from the confirmation question or a later step that offers a way out
(``asks: cancellation``); a second confirmation does nothing again. A cancel is final by reply
(the slot may be offered to others): what the patient writes after it goes to staff."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent import actions as consent
from hub.consent.models import Purpose
from hub.crypto import KeyRing
from hub.db import new_id
from hub.enums import Channel, ConversationStatus, MessageStatus
from hub.errors import HubError
from hub.inbox.models import Conversation, Message, Note, Patient
from hub.journeys import csat, queries
from hub.journeys.actions import PENDING
from hub.journeys.definitions import DEFAULT_HANDLERS, StepDefinition
from hub.journeys.models import (
    Appointment,
    AppointmentStatus,
    Enrollment,
    EnrollmentStatus,
    Journey,
    RunStatus,
    SurveyAnswer,
)
from hub.journeys.replies import Reply, classify_reply
from hub.journeys.reporting import journey_progress_effect
from hub.journeys.versions import definition_for
from hub.templates import TemplateRenderError
from hub.templates.render import log_render_failure

ASK_OPEN_FOR = timedelta(days=7)
"""A question stays answerable this long after it was sent; later, a reply is just a message."""
MAX_ANSWER_CHARS = 2000
"""A free-text survey answer is stored up to this length (the whole message stays in the
inbox)."""


@dataclass(frozen=True)
class ReplyOutcome:
    enrollment_id: uuid.UUID
    step_id: str
    reply: Reply
    actions: tuple[str, ...]
    cancelled_runs: int = 0
    effect_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class OpenAsk:
    sent_at: datetime
    enrollment: Enrollment
    journey: Journey
    step: StepDefinition


async def handle_reply_in(
    session: AsyncSession,
    ring: KeyRing,
    patient: Patient,
    conversation: Conversation,
    text: str,
    channel: Channel,
    message_id: uuid.UUID,
    now: datetime,
    *,
    clinic: Mapping[str, Any],
) -> ReplyOutcome | None:
    """Act on a reply that answers an open question; None when it answers none (then it is
    an ordinary message for staff)."""
    await csat.patient_wrote_in(session, patient.id, now)
    ask = await open_ask(session, patient.id, now)
    reply = _answer(ask, text, channel) if ask is not None else None
    if reply is None:
        # The latest answer wins: a patient who confirmed may still cancel ("2" after "C")
        # until the appointment starts; a second confirmation changes nothing.
        changed = await open_ask(session, patient.id, now, confirmed=True)
        if changed is not None and _answer(changed, text, channel) == Reply("cancel"):
            ask, reply = changed, Reply("cancel")
    if ask is None or reply is None:
        return None
    step, enrollment = ask.step, ask.enrollment
    handler = step.handler(reply.kind)
    actions = handler.actions if handler else DEFAULT_HANDLERS.get(reply.kind, ())
    appt = (
        await session.get(Appointment, enrollment.appointment_id)
        if enrollment.appointment_id
        else None
    )
    cancelled = 0
    for action in actions:
        if action == "confirm_appointment":
            enrollment.confirmed_at = enrollment.confirmed_at or now
            # Only a booking: a confirmation never overwrites a cancellation or an outcome.
            if appt is not None and appt.status is AppointmentStatus.BOOKED:
                appt.status = AppointmentStatus.CONFIRMED
        elif action == "cancel_remaining_asks":
            cancelled += await _cancel_pending(
                session, ask, "the patient confirmed", only_asks=True
            )
        elif action == "cancel_appointment":
            enrollment.status, enrollment.cancelled_at = EnrollmentStatus.CANCELLED, now
            if appt is not None:
                if appt.status is not AppointmentStatus.CANCELLED:
                    appt.cancelled_at = now  # the reports tell late cancellations apart
                appt.status = AppointmentStatus.CANCELLED
        elif action == "cancel_remaining_steps":
            why = "the patient cancelled" if reply.kind == "cancel" else "the patient answered"
            cancelled += await _cancel_pending(session, ask, why, only_asks=False)
        elif action in ("record_score", "record_answer"):
            await _record_answer(session, ring, ask, reply, text, message_id)
    if ask.journey.key == csat.CSAT_KEY:
        await csat.answered_in(session, enrollment, conversation, message_id, now)
    if "notify_staff" in actions:
        _note_for_staff(ring, session, conversation, ask, reply, cancelled)
    effects: tuple[uuid.UUID, ...] = ()
    if handler is not None and handler.reply_template:
        effects = await _answer_back(
            session, ring, patient, conversation, channel, handler.reply_template, appt, clinic
        )
    # The funnel counts replies, confirmations and cancellations: without this, a
    # coordinator's open Journeys page would show a "C" only after a reload.
    effects += (journey_progress_effect(session, ask.journey.key),)
    await session.flush()
    return ReplyOutcome(enrollment.id, step.id, reply, tuple(actions), cancelled, effects)


def _answer(ask: OpenAsk, text: str, channel: Channel) -> Reply | None:
    """What ``text`` answers at the step; None when it is only a message for staff."""
    step = ask.step
    if step.survey is not None and step.survey.scale == "free_text":
        return Reply("text") if text.strip() else None
    reply = classify_reply(text, step.expecting, channel=channel)
    if reply.kind == "text" and ask.journey.key == csat.CSAT_KEY:
        scored = csat.read_answer(text)  # "4 nice staff": the words are the answer's comment
        reply = Reply("score", scored[0]) if scored else reply
    if reply.kind == "text":
        return None  # not an answer: a person reads it in the inbox
    if reply.kind == "confirm" and ask.enrollment.confirmed_at is not None:
        return None  # confirmed already (a "C" to the day-of text): nothing to do again
    return reply


async def pending_answer_in(
    session: AsyncSession, patient_id: uuid.UUID, text: str, channel: Channel, now: datetime
) -> str | None:
    """What ``text`` would do to the patient's open question ("confirm", "cancel", "score",
    "text"), without doing it: for a reply held back (an unverified sender) so staff see
    what it asked for. None when it answers nothing."""
    ask = await open_ask(session, patient_id, now)
    reply = _answer(ask, text, channel) if ask is not None else None
    if reply is None:
        changed = await open_ask(session, patient_id, now, confirmed=True)
        if changed is not None and _answer(changed, text, channel) == Reply("cancel"):
            return "cancel"
    return reply.kind if reply is not None else None


async def open_ask(
    session: AsyncSession, patient_id: uuid.UUID, now: datetime, *, confirmed: bool = False
) -> OpenAsk | None:
    """The question a reply answers (see the module docstring). With ``confirmed``, instead
    the latest confirmation question the patient has already confirmed: a cancel may still
    change that answer. Appointment questions close when the appointment starts."""
    best: OpenAsk | None = None
    for enrollment in await queries.active_enrollments_of(session, patient_id):
        journey = await session.get(Journey, enrollment.journey_id)
        assert journey is not None
        definition = await definition_for(session, journey, enrollment.version)
        steps = {s.id: s for s in definition.steps}
        answered = {a.step_id for a in await queries.survey_answers(session, enrollment.id)}
        for run in await queries.runs_of(session, enrollment.id, [RunStatus.SENT]):
            step = steps.get(run.step_id)
            if step is None or not step.asks or now - run.due_at > ASK_OPEN_FOR:
                continue
            if not await _went_out(session, run.message_id):
                continue  # deferred (quiet hours, caps) or failed: nothing was asked yet
            if step.asks == "confirmation" and (enrollment.confirmed_at is not None) != confirmed:
                continue
            if confirmed and step.asks != "confirmation":
                continue
            if step.expecting == "confirmation" and await _started(session, enrollment, now):
                continue
            if step.survey is not None and step.id in answered:
                continue
            if best is None or run.due_at > best.sent_at:
                best = OpenAsk(run.due_at, enrollment, journey, step)
    return best


async def _started(session: AsyncSession, enrollment: Enrollment, now: datetime) -> bool:
    if enrollment.appointment_id is None:
        return False
    appt = await session.get(Appointment, enrollment.appointment_id)
    return appt is not None and appt.start_at <= now


async def _cancel_pending(session: AsyncSession, ask: OpenAsk, why: str, *, only_asks: bool) -> int:
    definition = await definition_for(session, ask.journey, ask.enrollment.version)
    steps = {s.id: s for s in definition.steps}
    count = 0
    for run in await queries.runs_of(session, ask.enrollment.id, PENDING):
        step = steps.get(run.step_id)
        if only_asks and (step is None or step.asks != "confirmation"):
            continue
        run.status, run.reason = RunStatus.CANCELLED, why
        count += 1
    return count


def _note_for_staff(
    ring: KeyRing,
    session: AsyncSession,
    conversation: Conversation,
    ask: OpenAsk,
    reply: Reply,
    cancelled: int,
) -> None:
    if reply.kind == "cancel":
        text = (
            "The patient cancelled their appointment by reply; "
            f"{cancelled} planned message(s) were cancelled."
        )
        if ask.enrollment.confirmed_at is not None:
            text += " They had confirmed it earlier: the cancellation is the latest answer."
    elif reply.kind == "confirm":
        text = "The patient confirmed their appointment by reply."
    elif reply.kind == "score":
        text = f"Survey answer ({ask.journey.name}, {ask.step.id}): {reply.score}."
    else:
        text = f"Survey answer ({ask.journey.name}, {ask.step.id}) in the patient's message."
    note = Note(conversation_id=conversation.id, author_id=None, mentions=[])
    note.seal(ring, "body", text)
    session.add(note)
    # Someone has to read it: the conversation comes back to the inbox.
    conversation.status = ConversationStatus.OPEN


async def _answer_back(
    session: AsyncSession,
    ring: KeyRing,
    patient: Patient,
    conversation: Conversation,
    channel: Channel,
    template: str,
    appt: Appointment | None,
    clinic: Mapping[str, Any],
) -> tuple[uuid.UUID, ...]:
    """The handler's reply template, on the channel the patient wrote on (a "C" by email in a
    thread that began by text is confirmed by email). It answers the patient's own message,
    so it is care, not another reminder counted against the caps."""
    from hub.inbox.actions.delivery import queue_outbound
    from hub.inbox.actions.patients import view_patient
    from hub.templates.actions import render_template, template_context

    decision = await consent.may_send(session, patient, channel, Purpose.CARE)
    if not decision.allowed:
        return ()
    appointment = (
        {
            "start": appt.start_at,
            "location": appt.unseal(ring, "location"),
            "provider": appt.unseal(ring, "provider"),
        }
        if appt
        else None
    )
    context = template_context(view_patient(ring, patient), appointment, clinic)
    try:
        rendered = await render_template(session, template, channel.value, context)
    except HubError as exc:
        if isinstance(exc, TemplateRenderError):
            log_render_failure(exc, sender="journey reply")
        return ()  # no variant for this channel or language: staff see the reply and answer
    _message, effects = await queue_outbound(
        session,
        ring,
        conversation,
        rendered.body,
        decision,
        author_id=None,
        purpose=Purpose.CARE,
        channel=channel,
    )
    return tuple(effects)


async def _record_answer(
    session: AsyncSession,
    ring: KeyRing,
    ask: OpenAsk,
    reply: Reply,
    text: str,
    message_id: uuid.UUID,
) -> None:
    """One answer per question: a second reply to an answered question is only a message."""
    if await _answered(session, ask.enrollment.id, ask.step.id):
        return
    answer = SurveyAnswer(
        id=new_id(), enrollment_id=ask.enrollment.id, step_id=ask.step.id, message_id=message_id
    )
    if reply.kind == "score" and reply.score is not None:
        answer.score = reply.score
        scored = csat.read_answer(text) if ask.journey.key == csat.CSAT_KEY else None
        if scored is not None and scored[1]:
            answer.seal(ring, "text", scored[1])
    elif reply.kind == "text":
        answer.seal(ring, "text", text.strip()[:MAX_ANSWER_CHARS])
    else:
        return
    session.add(answer)


async def _went_out(session: AsyncSession, message_id: uuid.UUID | None) -> bool:
    message = await session.get(Message, message_id) if message_id else None
    return message is not None and message.status not in (
        MessageStatus.QUEUED,
        MessageStatus.FAILED,
        MessageStatus.UNDELIVERED,
    )


async def _answered(session: AsyncSession, enrollment_id: uuid.UUID, step_id: str) -> bool:
    return any(a.step_id == step_id for a in await queries.survey_answers(session, enrollment_id))
