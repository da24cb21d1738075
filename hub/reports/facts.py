"""One conversation's report facts, computed from its rows (no database access here).

The definitions every inbox figure rests on (docs/reports.md, "Inbox performance"):
- opened: the patient's first message in the conversation. A conversation nobody but the
  clinic wrote in (a reminder never answered, a message staff started) has no facts.
- first response: the first message a person sent at or after that (a staff reply or a reply
  they scheduled, counted when it went out). Automatic sends (auto-replies, HELP answers,
  journey steps) have no author and do not count; notes are not messages.
  ``Conversation.first_responded_at`` is not used: it is set by a staff-started conversation's
  own first message (a "response" to nothing), and it measures from ``created_at``, which for
  a reminder's conversation is when the reminder went out, not when the patient wrote.
- resolved: the first resolution at or after opened; reopened: the next status change after
  it was a reopening, within REOPENED_WITHIN.
- durations are whole seconds, rounded down; the business-hours ones count only the open time
  of the conversation's team (its hours, holidays and zone); no team means always open.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.inbox.event_models import StatusEvent
from hub.routing.hours import HoursInvalid, open_time_between

log = logging.getLogger(__name__)

REOPENED_WITHIN = timedelta(days=7)
"""A resolution undone within this long counts as reopened (the intake's reopen window)."""


@dataclass(frozen=True)
class TeamHours:
    business_hours: Mapping[str, Any]
    holidays: Sequence[str]
    time_zone: str


@dataclass(frozen=True)
class Source:
    """What the facts are computed from: the conversation's current row and its history."""

    conversation_id: uuid.UUID
    team_id: uuid.UUID | None
    assignee_id: uuid.UUID | None
    channel: str
    due_at: datetime | None
    inbound: Sequence[tuple[datetime, str]]
    """(created_at, channel) of each incoming message."""
    person_sends: Sequence[datetime]
    """created_at of each message a person sent."""
    events: Sequence[tuple[datetime, StatusEvent]]
    """Resolutions and reopenings in the order they happened."""


def hour_key(at: datetime, zone: ZoneInfo, channel: str) -> str:
    local = at.astimezone(zone)
    return f"{local.date().isoformat()}|{local.hour}|{channel}"


def parse_hour_key(key: str) -> tuple[date, int, str]:
    day, hour, channel = key.split("|")
    return date.fromisoformat(day), int(hour), channel


def _seconds(start: datetime, end: datetime | None) -> int | None:
    return None if end is None else int((end - start).total_seconds())


def _open_seconds(hours: TeamHours | None, start: datetime, end: datetime | None) -> int | None:
    if end is None:
        return None
    if hours is None:
        return _seconds(start, end)
    try:
        spent = open_time_between(hours.business_hours, hours.holidays, hours.time_zone, start, end)
    except HoursInvalid:
        log.warning("a team's stored hours are unreadable: its durations count the clock")
        return _seconds(start, end)
    return int(spent.total_seconds())


def compute_fact(
    source: Source, hours: TeamHours | None, clinic_zone: ZoneInfo, now: datetime
) -> dict[str, Any] | None:
    """The fact row for ``source``, or None when no patient wrote in the conversation."""
    if not source.inbound:
        return None
    opened = min(at for at, _channel in source.inbound)
    answered = min((at for at in source.person_sends if at >= opened), default=None)
    resolved: datetime | None = None
    reopened = False
    for i, (at, kind) in enumerate(source.events):
        if kind is StatusEvent.RESOLVED and at >= opened:
            resolved = at
            following = source.events[i + 1 : i + 2]
            reopened = bool(
                following
                and following[0][1] is StatusEvent.REOPENED
                and following[0][0] - at <= REOPENED_WITHIN
            )
            break
    ends = [at for at in (answered, resolved) if at is not None]
    return {
        "conversation_id": source.conversation_id,
        "team_id": source.team_id,
        "channel": source.channel,
        "assignee_id": source.assignee_id,
        "opened_at": opened,
        "opened_day": opened.astimezone(clinic_zone).date(),
        "first_response_at": answered,
        "first_response_s": _seconds(opened, answered),
        "first_response_bh_s": _open_seconds(hours, opened, answered),
        "resolved_at": resolved,
        "resolution_s": _seconds(opened, resolved),
        "resolved_day": None if resolved is None else resolved.astimezone(clinic_zone).date(),
        "resolution_bh_s": _open_seconds(hours, opened, resolved),
        "due_at": source.due_at,
        "wait_end_at": min(ends) if ends else None,
        "reopened": reopened,
        "last_inbound_at": max(at for at, _channel in source.inbound),
        "inbound_hours": dict(
            Counter(hour_key(at, clinic_zone, channel) for at, channel in source.inbound)
        ),
        "computed_at": now,
    }


HourKey = tuple[date, int, uuid.UUID, str]
"""(clinic-local day, hour, team or NO_TEAM, channel): a ``report_inbound_hour`` row's key."""


def hour_deltas(
    old: tuple[uuid.UUID, Mapping[str, int]] | None,
    new: tuple[uuid.UUID, Mapping[str, int]] | None,
) -> dict[HourKey, int]:
    """What to add to the hourly counts when a conversation's share changes from ``old`` to
    ``new`` (each: the team it is counted under, and its "day|hour|channel" counts)."""
    deltas: Counter[HourKey] = Counter()
    for sign, share in ((-1, old), (1, new)):
        if share is None:
            continue
        team, counts = share
        for key, n in counts.items():
            day, hour, channel = parse_hour_key(key)
            deltas[(day, hour, team, channel)] += sign * n
    return {k: v for k, v in deltas.items() if v}
