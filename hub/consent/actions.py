"""Consent changes and checks. Functions taking a session join the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent import queries
from hub.consent.models import (
    RECORDED_PURPOSES,
    ConsentRecord,
    ConsentSource,
    ConsentState,
    Purpose,
)
from hub.consent.policy import CapUsage, decide
from hub.consent.rules import (
    POLICY_SETTING_KEY,
    ConsentPolicy,
    PolicyInvalid,
    local_day_start,
)
from hub.consent.schemas import ChannelChoice, Decision, Outcome
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel
from hub.inbox.access import StaffContext
from hub.inbox.models import Patient


async def load_policy(session: AsyncSession) -> ConsentPolicy:
    """The clinic's policy; a malformed stored policy falls back to the defaults (which are
    the strict ones) rather than blocking every send."""
    try:
        return ConsentPolicy.from_data(await queries.policy_data(session, POLICY_SETTING_KEY))
    except PolicyInvalid:
        return ConsentPolicy()


async def cap_usage(
    session: AsyncSession,
    patient: Patient,
    policy: ConsentPolicy,
    at: datetime,
    exclude_message_id: uuid.UUID | None = None,
) -> CapUsage:
    times = await queries.automated_sends(
        session,
        patient.id,
        [p.value for p in policy.automated_purposes],
        at - timedelta(days=7),
        exclude_message_id,
    )
    return caps_from(times, patient.time_zone, at)


def caps_from(times: list[datetime], time_zone: str, at: datetime) -> CapUsage:
    """Cap usage from the creation times of the week's automated sends, oldest first."""
    day_start = local_day_start(time_zone, at)
    return CapUsage(
        today=sum(1 for t in times if t >= day_start),
        week=len(times),
        oldest_in_week=times[0] if times else None,
    )


async def may_send(
    session: AsyncSession,
    patient: Patient,
    channel: Channel,
    purpose: Purpose,
    at: datetime | None = None,
    *,
    policy: ConsentPolicy | None = None,
    exclude_message_id: uuid.UUID | None = None,
) -> Decision:
    """The gate: allowed, refused (with the reason), or deferred (with the time it may go).
    ``exclude_message_id``: the message being checked at send time, not to count it twice."""
    at = at or utcnow()
    policy = policy or await load_policy(session)
    latest = await queries.latest_records(session, patient.id, channel)
    caps = None
    if purpose in policy.automated_purposes:
        caps = await cap_usage(session, patient, policy, at, exclude_message_id)
    return decide(patient, channel, purpose, at, latest, policy, caps)


async def choose_channel(
    session: AsyncSession,
    patient: Patient,
    purpose: Purpose,
    at: datetime | None = None,
    *,
    available: Iterable[Channel] | None = None,
) -> ChannelChoice:
    """Walk the patient's channel order; the first channel that is allowed (or only deferred:
    quiet hours and caps apply to every channel alike) wins, and every channel passed over
    says why."""
    at = at or utcnow()
    policy = await load_policy(session)
    usable = set(available) if available is not None else set(Channel)
    passed: list[Decision] = []
    for channel in patient.channels():
        if channel not in usable:
            passed.append(_unavailable(patient, channel, purpose, at))
            continue
        decision = await may_send(session, patient, channel, purpose, at, policy=policy)
        if decision.allowed or decision.deferred:
            return ChannelChoice(decision, tuple(passed))
        passed.append(decision)
    return ChannelChoice(None, tuple(passed))


def choose_from(
    patient: Patient,
    purpose: Purpose,
    at: datetime,
    *,
    policy: ConsentPolicy,
    available: Iterable[Channel],
    latest: Mapping[Channel, dict[Purpose, ConsentRecord]],
    caps: CapUsage | None,
    order: Iterable[Channel] | None = None,
    excluded: Mapping[Channel, str] | None = None,
) -> ChannelChoice:
    """``choose_channel`` over records and cap usage the caller loaded for many patients at
    once (a dispatch batch); the same decisions. ``order``: the channels to walk (a journey
    step's own preference), else the patient's order. ``excluded``: channels the caller rules
    out, with the reason (an earlier attempt failed there)."""
    usable = set(available)
    passed: list[Decision] = []
    for channel in patient.channels() if order is None else order:
        if excluded and channel in excluded:
            why = excluded[channel]
            passed.append(Decision(Outcome.REFUSED, patient.id, channel, purpose, at, "tried", why))
            continue
        if channel not in usable:
            passed.append(_unavailable(patient, channel, purpose, at))
            continue
        automated = purpose in policy.automated_purposes
        decision = decide(
            patient,
            channel,
            purpose,
            at,
            latest.get(channel, {}),
            policy,
            caps if automated else None,
        )
        if decision.allowed or decision.deferred:
            return ChannelChoice(decision, tuple(passed))
        passed.append(decision)
    return ChannelChoice(None, tuple(passed))


def _unavailable(patient: Patient, channel: Channel, purpose: Purpose, at: datetime) -> Decision:
    return Decision(
        Outcome.REFUSED,
        patient.id,
        channel,
        purpose,
        at,
        "channel_unavailable",
        f"{channel.value} is not connected on this hub",
    )


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


STAFF_REASONS = {
    "phone": "patient asked on the phone",
    "in_person": "patient asked in person",
    "written": "signed form received",
    "correction": "correcting an earlier entry",
}
"""Reasons staff pick from when recording consent; a fixed list keeps PHI out of the record."""


async def do_record_consent(
    db: Database,
    ctx: StaffContext,
    patient_id: uuid.UUID,
    channel: Channel,
    purposes: Iterable[Purpose],
    state: ConsentState,
    reason: str,
) -> None:
    """A staff member records a patient's wish (granted or revoked), with the reason."""
    from hub.audit import record
    from hub.inbox.exceptions import NotFound

    if reason not in STAFF_REASONS:
        raise ValueError(f"reason must be one of: {', '.join(STAFF_REASONS)}")
    if state is ConsentState.UNKNOWN:
        raise ValueError("record granted or revoked")
    change = ConsentChange(ConsentSource.STAFF, str(ctx.actor), STAFF_REASONS[reason])
    now = utcnow()
    async with db.transaction() as session:
        if await session.get(Patient, patient_id) is None:
            raise NotFound("no such patient")
        for purpose in purposes:
            if purpose is Purpose.SERVICE:
                continue
            session.add(change.record(patient_id, channel, purpose, state, now))
        await session.flush()
        await record(
            session,
            ctx.actor,
            "consent.record",
            "patient",
            patient_id,
            {"channel": channel.value, "state": state.value},
        )


async def do_get_policy(db: Database) -> ConsentPolicy:
    async with db.reader() as session:
        return await load_policy(session)


async def do_set_policy(db: Database, ctx: StaffContext, data: dict[str, Any]) -> ConsentPolicy:
    from hub.audit import record
    from hub.routing.models import HubSetting

    policy = ConsentPolicy.from_data(data)  # raises PolicyInvalid with the field
    async with db.transaction() as session:
        row = await session.get(HubSetting, POLICY_SETTING_KEY)
        if row is None:
            session.add(HubSetting(key=POLICY_SETTING_KEY, value=policy.to_data()))
        else:
            row.value = policy.to_data()
        await record(session, ctx.actor, "consent.policy", "setting", POLICY_SETTING_KEY)
    return policy


@dataclass(frozen=True)
class Unsubscribed:
    purpose: Purpose
    changed: bool
    """False when the patient had already unsubscribed (the link clicked twice)."""


async def do_unsubscribe(db: Database, ring: KeyRing, token: str) -> Unsubscribed | None:
    """An email unsubscribe link (RFC 8058 one-click or the confirmation page): revoke that
    purpose for email, with the mail it came in as evidence. None for a token we did not make."""
    from hub.links import read_unsubscribe_token

    what = read_unsubscribe_token(ring, token)
    if what is None:
        return None
    purpose = Purpose(what.purpose)
    async with db.transaction() as session:
        if await session.get(Patient, what.patient_id) is None:
            return None
        latest = await queries.latest_records(session, what.patient_id, Channel.EMAIL)
        current = latest.get(purpose)
        if current is not None and current.state is ConsentState.REVOKED:
            return Unsubscribed(purpose, False)
        change = ConsentChange(
            ConsentSource.UNSUBSCRIBE,
            f"patient:{what.patient_id}",
            "unsubscribe link in an email",
            evidence_message_id=what.message_id,
        )
        session.add(
            change.record(what.patient_id, Channel.EMAIL, purpose, ConsentState.REVOKED, utcnow())
        )
        await session.flush()
    return Unsubscribed(purpose, True)
