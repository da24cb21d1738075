"""The weekly summary mail to admins: the headline figures of the last 7 whole days beside the
7 before, figures only (no patient, no message, no staff name), once a week on Monday at 08:00
in the clinic's zone.

The worker's tick asks ``do_weekly_due`` (a cheap read) and a job sends; the week is claimed in
the database first (``do_claim_week``), so however many workers tick, one mail goes out per
week, and a worker that was down on Monday morning sends it when it comes back that week.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError

from hub.audit import Actor, record
from hub.db import Database, utcnow
from hub.inbox import queries as inbox_queries
from hub.inbox.access import StaffContext
from hub.reports import weekly_queries
from hub.reports.base import Report, ReportFilters
from hub.reports.facts_actions import do_refresh_facts
from hub.reports.registry import REPORTS
from hub.reports.run_facts_actions import do_refresh_run_facts
from hub.reports.words import headline
from hub.settings_store import put_setting_in, setting_value

ENABLED_KEY = "reports.weekly_summary.enabled"
SENT_KEY = "reports.weekly_summary.sent_week"
"""The Monday (ISO date) of the last week whose summary was claimed for sending."""
SINCE_KEY = "reports.weekly_summary.since"
"""The first clinic-local day (ISO date) a summary may cover: the day the hub first looked
whether one was due. A hub installed on a Wednesday does not mail its admins a week it
mostly did not exist in, with figures that look like a quiet week."""
SEND_WEEKDAY = 0
"""Monday."""
SEND_AT = time(8, 0)
"""Local time in the clinic's zone from which the week's mail is due."""
CATCH_UP_BATCHES = 40
"""Rollup batches the mail job may run to catch up before building (tens of thousands of
changed conversations); past that it sends what the rollups hold, as the page would show."""
SUMMARY_REPORTS = ("responses", "volume", "journeys", "appointments", "delivery")
"""The reports whose headline figures the mail carries, in this order (those registered)."""


@dataclass(frozen=True)
class Week:
    monday: date
    """The Monday the mail goes out on; its key in ``SENT_KEY``."""
    due_at: datetime
    filters: ReportFilters
    """The 7 days before that Monday (its ``previous()`` is the 7 before those)."""


def week_of(now: datetime, zone: str) -> Week:
    """The week ``now`` falls in, read in the clinic's zone."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz).date()
    monday = local - timedelta(days=(local.weekday() - SEND_WEEKDAY) % 7)
    return Week(
        monday=monday,
        due_at=datetime.combine(monday, SEND_AT, tzinfo=tz),
        filters=ReportFilters(
            start=monday - timedelta(days=7), end=monday - timedelta(days=1), time_zone=zone
        ),
    )


@dataclass(frozen=True)
class WeeklySettings:
    enabled: bool
    last_sent: str | None


async def do_weekly_settings(db: Database) -> WeeklySettings:
    async with db.reader() as session:
        enabled = await setting_value(session, ENABLED_KEY)
        sent = await setting_value(session, SENT_KEY)
    # On unless an admin switched it off: a new hub's admins hear about it without a set-up step.
    return WeeklySettings(enabled is not False, sent if isinstance(sent, str) else None)


async def do_set_weekly_enabled(db: Database, actor: Actor, enabled: bool) -> None:
    async with db.transaction() as session:
        await put_setting_in(session, ENABLED_KEY, bool(enabled))
        await record(
            session,
            actor,
            "reports.weekly_summary.set",
            "setting",
            ENABLED_KEY,
            {"enabled": bool(enabled)},
        )


async def do_weekly_due(db: Database, now: datetime | None = None) -> Week | None:
    """The week whose mail should go now, or None (switched off, too early, sent already)."""
    now = now or utcnow()
    async with db.reader() as session:
        if await setting_value(session, ENABLED_KEY) is False:
            return None
        zone = await inbox_queries.clinic_time_zone(session)
        sent = await setting_value(session, SENT_KEY)
        since = await setting_value(session, SINCE_KEY)
    if not isinstance(since, str):
        since = await _first_look(db, now.astimezone(ZoneInfo(zone)).date())
    week = week_of(now, zone)
    if now < week.due_at or sent == week.monday.isoformat():
        return None
    if week.filters.start < date.fromisoformat(since):
        return None
    return week


async def _first_look(db: Database, today: date) -> str:
    """Record ``today`` as the first day a summary may cover; another worker's record wins."""
    try:
        async with db.transaction() as session:
            found = await setting_value(session, SINCE_KEY)
            if isinstance(found, str):
                return found
            await put_setting_in(session, SINCE_KEY, today.isoformat())
    except IntegrityError:  # two workers' first looks at once: the other inserted the row
        async with db.reader() as session:
            found = await setting_value(session, SINCE_KEY)
        if isinstance(found, str):
            return found
    return today.isoformat()


@dataclass(frozen=True)
class Claim:
    won: bool
    """False: this week was claimed already (another worker sent it)."""
    before: str | None
    """The week claimed before, to give back with ``do_unclaim_week`` if nothing was sent."""


async def do_claim_week(db: Database, week: Week) -> Claim:
    """Mark ``week`` as sent before sending, so it goes at most once across workers."""
    key = week.monday.isoformat()
    try:
        async with db.transaction() as session:
            before = await setting_value(session, SENT_KEY)
            if before == key:
                return Claim(False, before)
            await put_setting_in(session, SENT_KEY, key)
    except IntegrityError:  # two first-ever claims at once: the other inserted the row
        return Claim(False, None)
    return Claim(True, before if isinstance(before, str) else None)


async def do_unclaim_week(db: Database, week: Week, before: str | None) -> None:
    """Give the week back after a failed send, so a later tick tries again."""
    async with db.transaction() as session:
        if await setting_value(session, SENT_KEY) == week.monday.isoformat():
            await put_setting_in(session, SENT_KEY, before)


@dataclass(frozen=True)
class Recipient:
    email: str
    ctx: StaffContext


async def do_weekly_recipients(db: Database) -> list[Recipient]:
    async with db.reader() as session:
        return [
            Recipient(s.email, StaffContext.of(s))
            for s in await weekly_queries.active_admins(session)
        ]


async def do_weekly_reports(db: Database, week: Week, viewer: StaffContext) -> list[Report]:
    """The summary's reports for the week, built as an admin reads them, from rollups brought
    up to date first (the tick keeps them a batch behind at most; a mail is read once)."""
    for _ in range(CATCH_UP_BATCHES):
        inbox = await do_refresh_facts(db)
        runs = await do_refresh_run_facts(db)
        if inbox.caught_up and runs.caught_up:
            break
    reports = []
    for name in SUMMARY_REPORTS:
        if name in REPORTS:
            _title, build = REPORTS[name]
            reports.append(await build(db, week.filters, viewer))
    return reports


def summary_text(reports: list[Report], week: Week, clinic: str, reports_url: str) -> str:
    """The mail's body: each report's headline figures with their trend, nothing else."""
    first, last = week.filters.start, week.filters.end
    lines = [
        f"{clinic}: the week of {first:%a %b} {first.day} to {last:%a %b} {last.day}, {last.year},"
        " beside the 7 days before.",
        "",
    ]
    for report in reports:
        lines.append(report.title)
        lines.append("-" * len(report.title))
        figures = headline(report)
        if not figures:
            lines.append("  Nothing to count this week.")
        for f in figures:
            if f.value is None and report.previous.get(f.key) is None:
                lines.append(f"  {f.label}: nothing to measure in either week")
                continue
            was = f" (was {f.before_text})" if f.before_text is not None else ""
            words = f"; {f.trend.words}" if f.trend is not None else ""
            lines.append(f"  {f.label}: {f.text}{was}{words}")
        lines.append("")
    lines += [
        f"The figures, their tables and charts: {reports_url}",
        "This summary holds counts only. An admin can switch it off on the Reports page.",
    ]
    return "\n".join(lines) + "\n"


def summary_subject(week: Week) -> str:
    first, last = week.filters.start, week.filters.end
    return f"Weekly summary: {first:%b} {first.day} to {last:%b} {last.day}"
