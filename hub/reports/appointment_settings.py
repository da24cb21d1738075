"""The appointments report's two settings, kept in the hub's settings store: the clinic's own
baseline period (days before the hub sent reminders, whose no-show rate the report sets beside
today's) and how close to the start a cancellation counts as late."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.db import Database
from hub.errors import HubError
from hub.settings_store import put_setting_in, setting_value

SETTING_KEY = "reports.appointments"
DEFAULT_LATE_CANCEL_HOURS = 24
"""A cancellation that comes in less than this many hours before the start is late: the slot
can seldom be offered to someone else."""
MAX_LATE_CANCEL_HOURS = 24 * 14
MAX_BASELINE_DAYS = 731
"""Longest baseline period (two years): longer says little about the clinic as it is now."""


class AppointmentSettingsInvalid(HubError):
    pass


@dataclass(frozen=True)
class AppointmentSettings:
    baseline: tuple[date, date] | None = None
    """First and last day (in the clinic's zone) of the baseline period; None: not set."""
    late_cancel_hours: int = DEFAULT_LATE_CANCEL_HOURS

    def to_data(self) -> dict[str, Any]:
        return {
            "baseline_start": self.baseline[0].isoformat() if self.baseline else None,
            "baseline_end": self.baseline[1].isoformat() if self.baseline else None,
            "late_cancel_hours": self.late_cancel_hours,
        }

    @classmethod
    def from_data(cls, data: Any) -> AppointmentSettings:
        """The stored value; a damaged one reads as the defaults (a report must still open)."""
        if not isinstance(data, dict):
            return cls()
        try:
            baseline = None
            if data.get("baseline_start") and data.get("baseline_end"):
                baseline = (
                    date.fromisoformat(data["baseline_start"]),
                    date.fromisoformat(data["baseline_end"]),
                )
            hours = int(data.get("late_cancel_hours") or DEFAULT_LATE_CANCEL_HOURS)
        except (TypeError, ValueError):
            return cls()
        return cls(baseline, hours)


def check_baseline(start: date, end: date) -> tuple[date, date]:
    if end < start:
        raise AppointmentSettingsInvalid(
            f"the baseline ends ({end.isoformat()}) before it starts ({start.isoformat()})"
        )
    if (end - start).days + 1 > MAX_BASELINE_DAYS:
        raise AppointmentSettingsInvalid(
            f"the baseline is {(end - start).days + 1} days long; choose at most "
            f"{MAX_BASELINE_DAYS} days (two years)"
        )
    return start, end


def check_late_cancel_hours(hours: int) -> int:
    if not 1 <= hours <= MAX_LATE_CANCEL_HOURS:
        raise AppointmentSettingsInvalid(
            f"a late cancellation is one less than 1 to {MAX_LATE_CANCEL_HOURS} hours before "
            f"the start; {hours} is outside that"
        )
    return hours


async def load_appointment_settings(session: AsyncSession) -> AppointmentSettings:
    return AppointmentSettings.from_data(await setting_value(session, SETTING_KEY))


async def do_get_appointment_settings(db: Database) -> AppointmentSettings:
    async with db.reader() as session:
        return await load_appointment_settings(session)


async def _save(db: Database, actor: Actor, change: dict[str, Any]) -> AppointmentSettings:
    async with db.transaction() as session:
        current = await load_appointment_settings(session)
        saved = AppointmentSettings.from_data({**current.to_data(), **change})
        await put_setting_in(session, SETTING_KEY, saved.to_data())
        await record(session, actor, "reports.appointments.set", "setting", SETTING_KEY, change)
        return saved


async def do_set_baseline(
    db: Database, actor: Actor, period: tuple[date, date] | None
) -> AppointmentSettings:
    """Set (or clear, with None) the baseline period; raises AppointmentSettingsInvalid."""
    if period is None:
        return await _save(db, actor, {"baseline_start": None, "baseline_end": None})
    start, end = check_baseline(*period)
    return await _save(
        db, actor, {"baseline_start": start.isoformat(), "baseline_end": end.isoformat()}
    )


async def do_set_late_cancel_hours(db: Database, actor: Actor, hours: int) -> AppointmentSettings:
    """How many hours before the start a cancellation still counts as late."""
    return await _save(db, actor, {"late_cancel_hours": check_late_cancel_hours(hours)})
