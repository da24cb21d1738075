"""Clinic-initiated sends (journey steps, reminders): the channel comes from the patient's order
and consent, the text from a template, the time from quiet hours and caps. Whatever happens is
recorded on a message: queued, deferred (with the time), or failed with the reason."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent import actions as consent
from hub.consent.models import Purpose
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus, Priority
from hub.errors import HubError
from hub.inbox import queries
from hub.inbox.actions.delivery import message_new_effect, send_job_effect
from hub.inbox.actions.patients import view_patient
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, Message, Patient
from hub.inbox.schemas import PatientView

Renderer = Callable[[AsyncSession, Channel, PatientView], Awaitable[str]]
"""Renders the text for a channel; raises a HubError (a template error) to fail the send."""


def template_renderer(
    key: str,
    *,
    appointment: Mapping[str, Any] | None,
    clinic: Mapping[str, Any],
    links: Mapping[str, Any] | None = None,
) -> Renderer:
    """Render ``key`` for the chosen channel in the patient's language. A missing variable or
    variant raises, and the send is stored as failed with that reason (nothing goes out)."""
    from hub.templates.actions import render_template, template_context

    async def render(session: AsyncSession, channel: Channel, patient: PatientView) -> str:
        context = template_context(patient, appointment, clinic, links=links)
        rendered = await render_template(session, key, channel.value, context)
        return rendered.body

    return render


@dataclass(frozen=True)
class AutomatedSend:
    message_id: uuid.UUID
    channel: Channel | None
    outcome: str
    """"queued", "deferred", "refused" (no channel allowed) or "failed" (template error)."""
    reason: str
    notes: tuple[str, ...]
    not_before: datetime | None
    effect_ids: tuple[uuid.UUID, ...]


async def _conversation_for(
    session: AsyncSession, patient: Patient, channel: Channel, now: datetime
) -> Conversation:
    found = await queries.latest_conversation_of(session, patient.id, channel)
    if found is not None:
        return found
    # A clinic-initiated message needs no one's attention until the patient answers, and an
    # answer within the reopen window brings the conversation back to the inbox.
    conversation = Conversation(
        patient_id=patient.id,
        channel=channel,
        status=ConversationStatus.RESOLVED,
        priority=Priority.NORMAL,
        created_at=now,
        last_activity_at=now,
        resolved_at=now,
    )
    session.add(conversation)
    await session.flush()
    return conversation


async def do_send_automated(
    db: Database,
    ring: KeyRing,
    patient_id: uuid.UUID,
    *,
    purpose: Purpose,
    render: Renderer,
    available: Iterable[Channel],
    at: datetime | None = None,
) -> AutomatedSend:
    async with db.transaction() as session:
        patient = await session.get(Patient, patient_id)
        if patient is None:
            raise NotFound(f"no patient with id {patient_id}")
        return await send_automated_in(
            session,
            ring,
            patient,
            purpose=purpose,
            render=render,
            available=available,
            at=at or utcnow(),
        )


async def send_automated_in(
    session: AsyncSession,
    ring: KeyRing,
    patient: Patient,
    *,
    purpose: Purpose,
    render: Renderer,
    available: Iterable[Channel],
    at: datetime,
) -> AutomatedSend:
    """``do_send_automated`` inside the caller's transaction (a journey dispatch writes its
    step run in the same commit, which is what makes the step exactly-once)."""
    now = at
    choice = await consent.choose_channel(session, patient, purpose, now, available=available)
    notes = list(choice.reasons)
    decision = choice.decision
    channel = decision.channel if decision else _first_channel(patient)
    conversation = await _conversation_for(session, patient, channel, now)
    message = Message(
        conversation_id=conversation.id,
        direction=Direction.OUTBOUND,
        channel=channel,
        status=MessageStatus.QUEUED,
        purpose=purpose.value,
        created_at=now,
    )
    effects: list[uuid.UUID] = []
    outcome, reason, not_before = "queued", "allowed", None
    if decision is None:
        outcome, reason = "refused", "no channel in the patient's order may be used"
        message.status, message.error_code, message.error_reason = (
            MessageStatus.FAILED,
            "no_channel",
            f"{reason}: " + "; ".join(notes),
        )
    else:
        try:
            body = await render(session, channel, view_patient(ring, patient))
        except HubError as exc:
            outcome, reason = "failed", str(exc)
            message.status, message.error_code, message.error_reason = (
                MessageStatus.FAILED,
                "template",
                f"not sent: {exc}",
            )
        else:
            message.seal(ring, "body", body)
            if decision.deferred:
                outcome, reason, not_before = "deferred", decision.reason, decision.not_before
                message.next_attempt_at = not_before
                notes.append(decision.summary())
    message.delivery_notes = notes
    session.add(message)
    await session.flush()
    if message.status is MessageStatus.QUEUED:
        delay = (not_before - now).total_seconds() if not_before else 0
        effects.append(send_job_effect(session, message.id, queue="bulk", delay_s=delay))
    effects.append(message_new_effect(session, message, conversation))
    return AutomatedSend(
        message.id,
        decision.channel if decision else None,
        outcome,
        reason,
        tuple(notes),
        not_before,
        tuple(effects),
    )


def _first_channel(patient: Patient) -> Channel:
    return next(iter(patient.channels()), Channel.SMS)
