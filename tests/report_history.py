"""Known inbox histories for the inbox report tests, and their recount: plain Python over the
raw rows (conversations, messages, status events, teams), never the facts or the report code.

The business-hours recount walks each wait minute by minute asking the routing's ``is_open``
(a different method from the facts' interval arithmetic)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from hub.db import Database
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus, Priority
from hub.inbox.event_models import ConversationEvent, StatusEvent
from hub.inbox.models import Conversation, Message, Patient, Team
from hub.routing.hours import is_open

NY = "America/New_York"
WEEKDAYS_8_TO_17 = {d: [["08:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}


@dataclass
class Spec:
    """One conversation's history: what the patient and staff did, when."""

    inbound: list[datetime]
    replies: list[datetime] = field(default_factory=list)
    """Messages a person sent."""
    automatic: list[datetime] = field(default_factory=list)
    """Messages the hub sent by itself (no author): never a first response."""
    events: list[tuple[datetime, StatusEvent]] = field(default_factory=list)
    team: uuid.UUID | None = None
    agent: uuid.UUID | None = None
    channel: Channel = Channel.SMS
    due: datetime | None = None
    created: datetime | None = None
    inbound_channels: list[Channel] | None = None


async def seed(db: Database, specs: list[Spec], author: uuid.UUID) -> list[uuid.UUID]:
    """The rows of ``specs``, committed to the test's transaction; their conversation ids."""
    ids = []
    async with db.transaction() as session:
        for spec in specs:
            patient = Patient(verified=False)
            session.add(patient)
            await session.flush()
            created = spec.created or min(spec.inbound or [*spec.automatic, *spec.replies])
            resolved = spec.events and spec.events[-1][1] is StatusEvent.RESOLVED
            conversation = Conversation(
                patient_id=patient.id,
                channel=spec.channel,
                status=ConversationStatus.RESOLVED if resolved else ConversationStatus.OPEN,
                priority=Priority.NORMAL,
                team_id=spec.team,
                assignee_id=spec.agent,
                created_at=created,
                last_activity_at=created,
                first_response_due_at=spec.due,
                resolved_at=spec.events[-1][0] if resolved else None,
            )
            session.add(conversation)
            await session.flush()
            channels = spec.inbound_channels or [spec.channel] * len(spec.inbound)
            for at, channel in zip(spec.inbound, channels, strict=True):
                session.add(
                    Message(
                        conversation_id=conversation.id,
                        direction=Direction.INBOUND,
                        channel=channel,
                        status=MessageStatus.RECEIVED,
                        created_at=at,
                    )
                )
            for at, who in [(t, author) for t in spec.replies] + [
                (t, None) for t in spec.automatic
            ]:
                session.add(
                    Message(
                        conversation_id=conversation.id,
                        direction=Direction.OUTBOUND,
                        channel=spec.channel,
                        author_id=who,
                        status=MessageStatus.SENT,
                        created_at=at,
                    )
                )
            for at, kind in spec.events:
                session.add(ConversationEvent(conversation_id=conversation.id, kind=kind, at=at))
            await session.flush()
            ids.append(conversation.id)
    return ids


# --- the recount ----------------------------------------------------------------------------


@dataclass
class Counted:
    conversation_id: uuid.UUID
    team_id: uuid.UUID | None
    agent_id: uuid.UUID | None
    channel: str
    status: ConversationStatus
    opened: datetime
    answered: datetime | None
    resolved: datetime | None
    reopened: bool
    due: datetime | None
    first_s: int | None
    first_bh_s: int | None
    resolution_s: int | None
    resolution_bh_s: int | None
    inbound: list[tuple[datetime, str]]

    def breached(self, now: datetime) -> bool:
        if self.due is None:
            return False
        ends = [t for t in (self.answered, self.resolved) if t is not None]
        return (min(ends) if ends else now) > self.due


def open_seconds_by_minutes(team: Team | None, start: datetime, end: datetime) -> int:
    """The part of [start, end) at which the team was open, walked a clock minute at a time
    (hours change only on whole minutes, so each minute is all open or all closed)."""
    if team is None:
        return int((end - start).total_seconds())
    total = timedelta(0)
    at = start
    while at < end:
        minute_end = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
        step_end = min(minute_end, end)
        if is_open(team.business_hours, team.holidays, team.time_zone, at):
            total += step_end - at
        at = step_end
    return int(total.total_seconds())


async def recount(db: Database) -> dict[uuid.UUID, Counted]:
    """Each conversation a patient wrote in, from the raw tables."""
    async with db.reader() as session:
        conversations = (await session.scalars(select(Conversation))).all()
        messages = (await session.scalars(select(Message))).all()
        events = (await session.scalars(select(ConversationEvent))).all()
        teams = {t.id: t for t in (await session.scalars(select(Team))).all()}
    out = {}
    for c in conversations:
        mine = [m for m in messages if m.conversation_id == c.id]
        inbound = sorted(
            (m.created_at, m.channel.value) for m in mine if m.direction is Direction.INBOUND
        )
        if not inbound:
            continue
        opened = inbound[0][0]
        replies = sorted(
            m.created_at
            for m in mine
            if m.direction is Direction.OUTBOUND and m.author_id is not None
        )
        answered = next((t for t in replies if t >= opened), None)
        history = sorted(
            ((e.at, e.id, e.kind) for e in events if e.conversation_id == c.id),
            key=lambda e: (e[0], e[1]),
        )
        resolved, reopened = None, False
        for i, (at, _id, kind) in enumerate(history):
            if kind is StatusEvent.RESOLVED and at >= opened:
                resolved = at
                nxt = history[i + 1] if i + 1 < len(history) else None
                reopened = bool(
                    nxt and nxt[2] is StatusEvent.REOPENED and nxt[0] - at <= timedelta(days=7)
                )
                break
        team = teams.get(c.team_id) if c.team_id else None
        out[c.id] = Counted(
            c.id,
            c.team_id,
            c.assignee_id,
            c.channel.value,
            c.status,
            opened,
            answered,
            resolved,
            reopened,
            c.first_response_due_at,
            int((answered - opened).total_seconds()) if answered else None,
            open_seconds_by_minutes(team, opened, answered) if answered else None,
            int((resolved - opened).total_seconds()) if resolved else None,
            open_seconds_by_minutes(team, opened, resolved) if resolved else None,
            inbound,
        )
    return out


def period(start: date, end: date, zone: str) -> tuple[datetime, datetime]:
    """[local midnight of start, local midnight after end) as UTC."""
    tz = ZoneInfo(zone)
    low = datetime.combine(start, time(0), tzinfo=tz).astimezone(UTC)
    high = datetime.combine(end + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return low, high


def pct(values: list[int], p: float) -> int | None:
    """The smallest value with at least ``p`` of the values at or below it, as the reports
    give it: rounded down to what staff read (the second under a minute, the minute under a
    day, the hour beyond; docs/reports.md)."""
    if not values:
        return None
    ordered = sorted(values)
    value = ordered[max(math.ceil(p * len(ordered)) - 1, 0)]
    for below, step in ((60, 1), (86400, 60)):
        if value < below:
            return value - value % step
    return value - value % 3600


def expected_responses(
    counted: list[Counted], low: datetime, high: datetime, now: datetime, *, bh: bool
) -> dict[str, Any]:
    opened = [c for c in counted if low <= c.opened < high]
    waits = [(c.first_bh_s if bh else c.first_s) for c in opened if c.answered is not None]
    resolved = [c for c in counted if c.resolved is not None and low <= c.resolved < high]
    lengths = [(c.resolution_bh_s if bh else c.resolution_s) for c in resolved]
    with_due = [c for c in opened if c.due is not None]
    breaches = sum(c.breached(now) for c in opened)
    return {
        "opened": len(opened),
        "first_response_median": pct([w for w in waits if w is not None], 0.5),
        "first_response_p90": pct([w for w in waits if w is not None], 0.9),
        "not_answered_yet": sum(c.answered is None and c.resolved is None for c in opened),
        "closed_without_reply": sum(c.answered is None and c.resolved is not None for c in opened),
        "sla_breaches": breaches,
        "sla_breach_rate": breaches / len(with_due) if with_due else None,
        "resolved": len(resolved),
        "resolution_median": pct([x for x in lengths if x is not None], 0.5),
        "resolution_p90": pct([x for x in lengths if x is not None], 0.9),
    }


def buckets(counted: list[Counted], low: datetime, high: datetime, *, bh: bool) -> list[int]:
    edges = [0, 3600, 4 * 3600, 8 * 3600, 24 * 3600]
    out = [0] * 6
    for c in counted:
        if not low <= c.opened < high:
            continue
        if c.answered is None:
            out[5] += c.resolved is None
            continue
        wait = c.first_bh_s if bh else c.first_s
        assert wait is not None
        out[sum(wait >= e for e in edges) - 1] += 1
    return out


def expected_volume(
    counted: list[Counted], low: datetime, high: datetime, zone: str
) -> tuple[dict[str, Any], list[list[int]]]:
    resolved = [c for c in counted if c.resolved is not None and low <= c.resolved < high]
    reopened = sum(c.reopened for c in resolved)
    tz = ZoneInfo(zone)
    heat = [[0] * 24 for _ in range(7)]
    incoming = 0
    for c in counted:
        for at, _channel in c.inbound:
            if low <= at < high:
                local = at.astimezone(tz)
                heat[local.weekday()][local.hour] += 1
                incoming += 1
    return {
        "opened": sum(low <= c.opened < high for c in counted),
        "resolved": len(resolved),
        "reopened": reopened,
        "reopened_rate": reopened / len(resolved) if resolved else None,
        "incoming_messages": incoming,
    }, heat


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(NY)).astimezone(UTC)


def march_history(desk: uuid.UUID, mail: uuid.UUID, ana: uuid.UUID, ben: uuid.UUID) -> list[Spec]:
    """A week around New York's March 2026 clock change (Sunday the 8th), for the front desk
    (weekdays 08:00-17:00, New York) and a mail team (always open), plus the week before it."""
    resolved, reopened = StatusEvent.RESOLVED, StatusEvent.REOPENED
    return [
        # Answered in 30 minutes, resolved at 10:00.
        Spec(
            [ny(2026, 3, 9, 9, 0)],
            [ny(2026, 3, 9, 9, 30)],
            events=[(ny(2026, 3, 9, 10), resolved)],
            team=desk,
            agent=ana,
            due=ny(2026, 3, 9, 13, 0),
        ),
        # Friday 16:00, answered Monday 08:30 across the change: 1.5 open hours.
        Spec(
            [ny(2026, 3, 6, 16, 0), ny(2026, 3, 7, 10, 0)],
            [ny(2026, 3, 9, 8, 30)],
            team=desk,
            agent=ana,
            due=ny(2026, 3, 9, 11, 0),
        ),
        # Only an automatic answer: not answered yet, its target long gone.
        Spec(
            [ny(2026, 3, 10, 7, 0)],
            automatic=[ny(2026, 3, 10, 7, 0)],
            team=desk,
            agent=ben,
            due=ny(2026, 3, 10, 12, 0),
        ),
        # Resolved without a reply after its target.
        Spec(
            [ny(2026, 3, 10, 11, 0)],
            events=[(ny(2026, 3, 10, 16, 0), resolved)],
            team=desk,
            due=ny(2026, 3, 10, 15, 0),
        ),
        # Resolved, reopened by the patient two days later, resolved again.
        Spec(
            [ny(2026, 3, 9, 14, 0), ny(2026, 3, 11, 9, 0)],
            [ny(2026, 3, 9, 15, 0), ny(2026, 3, 11, 9, 20)],
            events=[
                (ny(2026, 3, 9, 16, 0), resolved),
                (ny(2026, 3, 11, 9, 0), reopened),
                (ny(2026, 3, 11, 10, 0), resolved),
            ],
            team=desk,
            agent=ben,
            due=ny(2026, 3, 9, 18, 0),
        ),
        # Resolved, reopened by staff eight days later: not "reopened within 7 days".
        Spec(
            [ny(2026, 3, 2, 9, 0)],
            [ny(2026, 3, 2, 12, 0)],
            events=[(ny(2026, 3, 2, 13, 0), resolved), (ny(2026, 3, 10, 13, 0), reopened)],
            team=desk,
            agent=ana,
            due=ny(2026, 3, 2, 13, 0),
        ),
        # Staff wrote first; the patient answered at 11:00, staff at 13:00: a 2-hour wait.
        Spec(
            [ny(2026, 3, 11, 11, 0)],
            [ny(2026, 3, 11, 10, 0), ny(2026, 3, 11, 13, 0)],
            team=desk,
            agent=ana,
            created=ny(2026, 3, 11, 10, 0),
        ),
        # A reminder nobody answered: no facts.
        Spec([], automatic=[ny(2026, 3, 9, 9, 0)], team=desk),
        # Mail team, always open, over the Saturday night of the change: 23 clock hours.
        Spec(
            [ny(2026, 3, 7, 12, 0)],
            [ny(2026, 3, 8, 11, 0)],
            channel=Channel.EMAIL,
            team=mail,
            events=[(ny(2026, 3, 8, 12, 0), resolved)],
            due=ny(2026, 3, 7, 16, 0),
        ),
        # No team, two channels of incoming messages.
        Spec(
            [ny(2026, 3, 12, 20, 15), ny(2026, 3, 12, 20, 40), ny(2026, 3, 13, 1, 5)],
            [ny(2026, 3, 13, 9, 0)],
            inbound_channels=[Channel.SMS, Channel.CHAT, Channel.SMS],
        ),
        # Answered in 5 hours of a Wednesday.
        Spec(
            [ny(2026, 3, 11, 8, 0)],
            [ny(2026, 3, 11, 13, 0)],
            team=desk,
            agent=ben,
            due=ny(2026, 3, 11, 12, 0),
        ),
        # Mail team, a quick one.
        Spec(
            [ny(2026, 3, 12, 9, 0)],
            [ny(2026, 3, 12, 9, 10)],
            channel=Channel.EMAIL,
            team=mail,
            agent=ben,
            events=[(ny(2026, 3, 12, 9, 15), resolved)],
        ),
    ]
