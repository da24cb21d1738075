"""Consent changes and checks. Functions taking a session join the caller's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent import queries
from hub.consent.models import (
    RECORDED_PURPOSES,
    ConsentRecord,
    ConsentSource,
    ConsentState,
    Purpose,
)
from hub.consent.policy import decide
from hub.consent.schemas import Decision
from hub.db import utcnow
from hub.enums import Channel
from hub.inbox.models import Patient


async def may_send(
    session: AsyncSession,
    patient: Patient,
    channel: Channel,
    purpose: Purpose,
    at: datetime | None = None,
) -> Decision:
    latest = await queries.latest_records(session, patient.id, channel)
    return decide(patient, channel, purpose, at or utcnow(), latest)


@dataclass(frozen=True)
class ConsentChange:
    """Who changed consent, how, and the evidence (without PHI: "STOP", "error 21610")."""

    source: ConsentSource
    actor: str
    evidence: str
    evidence_message_id: uuid.UUID | None = None

    def record(
        self,
        patient_id: uuid.UUID,
        channel: Channel,
        purpose: Purpose,
        state: ConsentState,
        at: datetime,
    ) -> ConsentRecord:
        return ConsentRecord(
            patient_id=patient_id,
            channel=channel,
            purpose=purpose,
            state=state,
            source=self.source,
            actor=self.actor,
            evidence=self.evidence,
            evidence_message_id=self.evidence_message_id,
            created_at=at,
        )


async def revoke_channel(
    session: AsyncSession, patient_id: uuid.UUID, channel: Channel, change: ConsentChange
) -> None:
    """Revoke every purpose on a channel at once (what SMS STOP means to carriers)."""
    now = utcnow()
    for purpose in RECORDED_PURPOSES:
        session.add(change.record(patient_id, channel, purpose, ConsentState.REVOKED, now))
    await session.flush()


async def restore_channel(
    session: AsyncSession, patient_id: uuid.UUID, channel: Channel, change: ConsentChange
) -> None:
    """Undo a channel-wide opt-out: each purpose returns to what it was before the revocation
    (care and reminders to granted; surveys and marketing only if they had been granted)."""
    now = utcnow()
    for purpose in RECORDED_PURPOSES:
        past = await queries.history(session, patient_id, channel, purpose)
        before = [r for r in past if r.state is not ConsentState.REVOKED]
        if purpose in (Purpose.CARE, Purpose.REMINDERS) or (
            before and before[-1].state is ConsentState.GRANTED
        ):
            state = ConsentState.GRANTED
        elif not past:
            continue
        else:
            state = ConsentState.UNKNOWN
        if past and past[-1].state is state:
            continue
        session.add(change.record(patient_id, channel, purpose, state, now))
    await session.flush()


async def is_opted_out(session: AsyncSession, patient_id: uuid.UUID, channel: Channel) -> bool:
    latest = await queries.latest_records(session, patient_id, channel)
    care = latest.get(Purpose.CARE)
    return care is not None and care.state is ConsentState.REVOKED
