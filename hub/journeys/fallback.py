"""A journey message that failed for good (a hard bounce, a landline, retries used up) falls
back to the step's next channel: a new attempt of the step run, due now. The dispatch of that
attempt skips every channel an earlier attempt failed on, and the consent gate decides among
the rest as usual; with none left, the attempt fails with the reasons."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import Channel
from hub.inbox.models import Patient
from hub.journeys import queries
from hub.journeys.models import Enrollment, EnrollmentStatus, Journey, RunStatus, StepRun
from hub.journeys.versions import definition_for

MAX_ATTEMPTS = 4
"""Attempts of one step (one per channel, at most): a bound, whatever the channel list says."""


async def fall_back_in(
    session: AsyncSession, message_id: uuid.UUID, channel: Channel, reason: str, now: datetime
) -> StepRun | None:
    """Inside the transaction that marks ``message_id`` failed: plan the step's next attempt
    when its channel policy has a channel not tried yet. Returns the new run, if any."""
    run = await queries.run_of_message(session, message_id)
    if run is None or run.attempt >= MAX_ATTEMPTS:
        return None
    enrollment = await session.get(Enrollment, run.enrollment_id)
    if enrollment is None or enrollment.status is not EnrollmentStatus.ACTIVE:
        return None
    journey = await session.get(Journey, enrollment.journey_id)
    patient = await session.get(Patient, enrollment.patient_id)
    assert journey is not None and patient is not None
    definition = await definition_for(session, journey, enrollment.version)
    step = next((s for s in definition.steps if s.id == run.step_id), None)
    if step is None:
        return None
    attempts = await queries.attempts_of_step(session, run.enrollment_id, run.step_id)
    if any(a.attempt > run.attempt for a in attempts):
        return None  # a fallback exists already (a repeated failure callback)
    tried = {a.channel for a in attempts if a.channel} | {channel.value}
    if all(c.value in tried for c in step.channel_order(patient.channels())):
        return None
    fallback = StepRun(
        enrollment_id=run.enrollment_id,
        step_id=run.step_id,
        attempt=run.attempt + 1,
        due_at=now,
        status=RunStatus.PLANNED,
        reason=f"falls back: {channel.value} failed ({reason})",
    )
    session.add(fallback)
    await session.flush()
    return fallback
