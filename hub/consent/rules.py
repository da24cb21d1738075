"""The clinic's consent policy, as data (stored in hub_setting "consent.policy", defaults here).

    {"opt_in_required": ["surveys", "marketing"],
     "send_window": ["08:00", "21:00"],
     "automated_purposes": ["reminders", "surveys", "marketing"],
     "caps": {"per_day": 1, "per_week": 3}}

"Automated purposes" are the clinic-initiated ones (journeys): they wait for the patient's send
window and count against the caps. Care and service messages answer the patient: they go at
any hour, and a staff reply outside the window carries a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.consent.models import Purpose
from hub.errors import HubError

POLICY_SETTING_KEY = "consent.policy"
DEFAULT_SEND_WINDOW = (time(8, 0), time(21, 0))
"""Automated messages go only between these local times in the patient's own time zone."""
DEFAULT_CAPS = (1, 3)
"""At most this many automated messages per patient per local day, and per rolling 7 days."""


class PolicyInvalid(HubError):
    pass


def _time(value: object, field_name: str) -> time:
    try:
        hours, minutes = str(value).split(":")
        return time(int(hours), int(minutes))
    except (ValueError, TypeError):
        raise PolicyInvalid(f"{field_name}: {value!r} is not a time like 08:00") from None


@dataclass(frozen=True)
class ConsentPolicy:
    opt_in_required: frozenset[Purpose] = frozenset({Purpose.SURVEYS, Purpose.MARKETING})
    send_window: tuple[time, time] = DEFAULT_SEND_WINDOW
    automated_purposes: frozenset[Purpose] = frozenset(
        {Purpose.REMINDERS, Purpose.SURVEYS, Purpose.MARKETING}
    )
    per_day: int = DEFAULT_CAPS[0]
    per_week: int = DEFAULT_CAPS[1]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> ConsentPolicy:
        if not data:
            return cls()
        unknown = set(data) - {"opt_in_required", "send_window", "automated_purposes", "caps"}
        if unknown:
            raise PolicyInvalid(f"unknown policy fields: {', '.join(sorted(unknown))}")
        try:
            opt_in = frozenset(
                Purpose(p) for p in data.get("opt_in_required", ["surveys", "marketing"])
            )
            automated = frozenset(
                Purpose(p)
                for p in data.get("automated_purposes", ["reminders", "surveys", "marketing"])
            )
        except ValueError as exc:
            raise PolicyInvalid(f"purposes: {exc}") from None
        window = data.get("send_window", ["08:00", "21:00"])
        if not isinstance(window, list) or len(window) != 2:
            raise PolicyInvalid('send_window: expected ["08:00", "21:00"]')
        start, end = _time(window[0], "send_window[0]"), _time(window[1], "send_window[1]")
        if start >= end:
            raise PolicyInvalid("send_window: the start must come before the end")
        caps = data.get("caps", {})
        per_day, per_week = (
            caps.get("per_day", DEFAULT_CAPS[0]),
            caps.get("per_week", DEFAULT_CAPS[1]),
        )
        if not all(isinstance(n, int) and n >= 0 for n in (per_day, per_week)):
            raise PolicyInvalid("caps: per_day and per_week must be whole numbers")
        return cls(opt_in, (start, end), automated, per_day, per_week)

    def to_data(self) -> dict[str, Any]:
        return {
            "opt_in_required": sorted(p.value for p in self.opt_in_required),
            "send_window": [t.strftime("%H:%M") for t in self.send_window],
            "automated_purposes": sorted(p.value for p in self.automated_purposes),
            "caps": {"per_day": self.per_day, "per_week": self.per_week},
        }


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def in_window(policy: ConsentPolicy, time_zone: str, at: datetime) -> bool:
    local = at.astimezone(zone(time_zone)).time()
    start, end = policy.send_window
    return start <= local < end


def next_window_start(policy: ConsentPolicy, time_zone: str, at: datetime) -> datetime:
    """The next moment inside the send window, in the patient's zone (DST-safe: local wall
    time is built per day, then converted)."""
    tz = zone(time_zone)
    local = at.astimezone(tz)
    start = policy.send_window[0]
    candidate = datetime.combine(local.date(), start, tzinfo=tz)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), start, tzinfo=tz)
    return candidate


def local_day_start(time_zone: str, at: datetime) -> datetime:
    tz = zone(time_zone)
    local = at.astimezone(tz)
    return datetime.combine(local.date(), time(0, 0), tzinfo=tz)
