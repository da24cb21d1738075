"""Set-based SQL of the report rollups' full rebuilds on PostgreSQL, giving the rows the tick's
refresh reaches batch by batch in Python: the delivery rollup's message facts and day and month
counts (``delivery_rollup_actions``), and the journeys' and appointments' day and month counts
from their facts (``outcome_rollup``). Migration 0033 filled them the same way and keeps its
own copy, as a migration must not change later.

At ten million messages the delivery batches took over an hour and a half (a round trip per
batch, each fact built in Python); these take minutes.
"""

from __future__ import annotations

from sqlalchemy import Integer, String, Uuid, bindparam, delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from hub.reports.models import NO_JOURNEY, NO_TEAM
from hub.reports.outcome_models import DeliveryDay, DeliveryDirty, DeliveryMonth, MessageFact
from hub.reports.outcome_rollup import CANCELLED, FLAGS, UNDELIVERED

_UNDELIVERED = ", ".join(f"'{s}'" for s in UNDELIVERED)
MESSAGE_FACTS = text(
    "INSERT INTO report_message_fact "  # noqa: S608
    "(message_id, day, channel, provider, status, error_code, team_id, journey_id) "
    "SELECT m.id, CAST(m.created_at AT TIME ZONE :zone AS date), CAST(m.channel AS text), "
    "COALESCE(m.provider, a.provider, ''), CAST(m.status AS text), "
    f"CASE WHEN CAST(m.status AS text) IN ({_UNDELIVERED}) "
    "THEN COALESCE(m.error_code, '') ELSE '' END, "
    "COALESCE(c.team_id, CAST(:no_team AS uuid)), "
    "COALESCE(j.journey_id, CAST(:no_journey AS uuid)) "
    "FROM inbox_message m JOIN inbox_conversation c ON c.id = m.conversation_id "
    "LEFT JOIN inbox_delivery_attempt a "
    "ON a.message_id = m.id AND a.attempt = m.send_attempts "
    "LEFT JOIN (SELECT DISTINCT ON (r.message_id) r.message_id, e.journey_id "
    "FROM journey_step_run r JOIN journey_enrollment e ON e.id = r.enrollment_id "
    "WHERE r.message_id IS NOT NULL ORDER BY r.message_id, e.journey_id) AS j "
    "ON j.message_id = m.id "
    "WHERE m.direction = 'outbound'"
).bindparams(
    bindparam("no_team", NO_TEAM, type_=Uuid()),
    bindparam("no_journey", NO_JOURNEY, type_=Uuid()),
    bindparam("zone", type_=String()),
)
"""``outcome_rollup_queries.message_sources`` and ``message_fact`` over every outbound message:
the provider of its last attempt when it has none ((message, attempt) is unique), the first
journey of a step that sent it, the day in the clinic's zone (``:zone``)."""
_REST = "day, channel, team_id, provider, status, error_code"
DELIVERY_DAYS = text(
    f"INSERT INTO report_delivery_day (journey_id, {_REST}, count) "  # noqa: S608
    f"SELECT CAST(:no_journey AS uuid), {_REST}, COUNT(*) FROM report_message_fact "
    f"GROUP BY {_REST} UNION ALL SELECT journey_id, {_REST}, COUNT(*) "
    "FROM report_message_fact WHERE journey_id <> CAST(:no_journey AS uuid) "
    f"GROUP BY journey_id, {_REST}"
).bindparams(bindparam("no_journey", NO_JOURNEY, type_=Uuid()))
"""``outcome_rollup.delivery_counts`` over every message fact."""
_MONTH_REST = "channel, team_id, provider, status, error_code"
DELIVERY_MONTHS = text(
    f"INSERT INTO report_delivery_month (journey_id, month, {_MONTH_REST}, count) "  # noqa: S608
    f"SELECT journey_id, CAST(date_trunc('month', day) AS date) AS m, {_MONTH_REST}, "
    f"SUM(count) FROM report_delivery_day GROUP BY journey_id, m, {_MONTH_REST}"
)
"""``outcome_rollup.delivery_months`` over every day count."""


async def rebuild_delivery(session: AsyncSession, zone: str) -> int:
    """Empty the queue, the facts and the counts, and count every outbound message again in
    ``zone``; returns how many. The queue is emptied first, by its own statement: a change
    whose queue row it deletes committed before it ended, so the later statements read it;
    one committed after stays queued for the tick."""
    await session.execute(delete(DeliveryDirty))
    for model in (MessageFact, DeliveryDay, DeliveryMonth):
        await session.execute(delete(model))
    made = await session.execute(MESSAGE_FACTS, {"zone": zone})
    await session.execute(DELIVERY_DAYS)
    await session.execute(DELIVERY_MONTHS)
    return int(made.rowcount)  # type: ignore[attr-defined]


# The journeys' and appointments' day rollups, from the run and appointment facts.

_FLAGGED = " UNION ALL ".join(
    "SELECT enrollment_id, journey_id, step_id, channel, due_at, run_id, due_day, "  # noqa: S608
    f"'{f}' AS flag FROM report_run_fact WHERE {f}"
    for f in FLAGS
)
_SCOPED = " UNION ALL ".join(
    "SELECT enrollment_id, journey_id, due_day, due_at, run_id, flag, "  # noqa: S608
    f"{step} AS step, {channel} AS ch FROM flagged{where}"
    for step, channel, where in (
        ("step_id", "channel", " WHERE channel IS NOT NULL"),
        ("step_id", "'*'", ""),
        ("'*'", "channel", " WHERE channel IS NOT NULL"),
        ("'*'", "'*'", ""),
    )
)
RUN_DAYS = text(
    f"WITH flagged AS ({_FLAGGED}) "  # noqa: S608
    "INSERT INTO report_run_day (journey_id, channel, due_day, step_id, flag, prev_day, count) "
    "SELECT journey_id, ch, due_day, step, flag, COALESCE(prev, DATE '0001-01-01'), COUNT(*) "
    "FROM (SELECT journey_id, ch, due_day, step, flag, LAG(due_day) OVER ("
    "PARTITION BY enrollment_id, flag, step, ch ORDER BY due_at, run_id) AS prev "
    f"FROM ({_SCOPED}) AS s) AS w "
    "GROUP BY journey_id, ch, due_day, step, flag, COALESCE(prev, DATE '0001-01-01')"
)
"""``outcome_rollup.run_day_counts`` over every run fact: each flagged run in each step and
channel scope, keyed by the due day of the previous run flagged alike (``ALL`` is '*',
``NO_PREVIOUS`` the first of year 1)."""
CONFIRM_WAITS = text(
    "INSERT INTO report_confirm_wait (journey_id, due_day, step_id, channel, wait_s, count) "
    "SELECT journey_id, due_day, step_id, ch, CASE WHEN s < 60 THEN s "
    "WHEN s < 86400 THEN s - s % 60 ELSE s - s % 3600 END AS b, COUNT(*) FROM ("
    "SELECT journey_id, due_day, step_id, COALESCE(channel, '') AS ch, "
    "CAST(floor(GREATEST(COALESCE(confirm_s, 0), 0)) AS integer) AS s "
    "FROM report_run_fact WHERE confirmed) AS c "
    "GROUP BY journey_id, due_day, step_id, ch, b"
)
"""``outcome_rollup.confirm_counts`` (``wait_bucket``) over every run fact."""
_RUN_MONTH = "CAST(date_trunc('month', due_day) AS date)"
RUN_MONTHS = text(
    "INSERT INTO report_run_month "  # noqa: S608
    "(journey_id, channel, month, step_id, flag, prev_day, count) "
    "SELECT journey_id, channel, m, step_id, flag, p, SUM(count) FROM ("
    f"SELECT journey_id, channel, {_RUN_MONTH} AS m, step_id, flag, count, "
    f"LEAST(prev_day, {_RUN_MONTH}) AS p "
    "FROM report_run_day) AS d GROUP BY journey_id, channel, m, step_id, flag, p"
)
"""``outcome_rollup.run_months``."""
CONFIRM_MONTHS = text(
    "INSERT INTO report_confirm_month "  # noqa: S608
    "(journey_id, month, step_id, channel, wait_s, count) "
    f"SELECT journey_id, {_RUN_MONTH} AS m, step_id, channel, wait_s, SUM(count) "
    "FROM report_confirm_wait GROUP BY journey_id, m, step_id, channel, wait_s"
)
"""``outcome_rollup.wait_months``."""
APPOINTMENT_DAYS = text(
    "INSERT INTO report_appointment_day "  # noqa: S608
    "(journey_id, start_day, status, reminder_group, cancel, count) "
    "SELECT journey_id, CAST(start_at AT TIME ZONE :zone AS date) AS d, status, "
    f"reminder_group, CASE WHEN status <> '{CANCELLED}' THEN '' "
    "WHEN cancelled_at IS NULL THEN 'unknown' "
    "WHEN start_at - cancelled_at < make_interval(hours => :hours) THEN 'late' "
    "ELSE 'in_time' END AS c, COUNT(*) "
    "FROM report_appointment_fact GROUP BY journey_id, d, status, reminder_group, c"
).bindparams(bindparam("zone", type_=String()), bindparam("hours", type_=Integer()))
"""``outcome_rollup.appointment_counts`` (``cancel_timing``) over every appointment fact."""


async def count_run_days(session: AsyncSession) -> None:
    """Count the (emptied) run and confirmation day and month rollups from all the facts."""
    for statement in (RUN_DAYS, CONFIRM_WAITS, RUN_MONTHS, CONFIRM_MONTHS):
        await session.execute(statement)


async def count_appointment_days(session: AsyncSession, zone: str, hours: int) -> None:
    """Count the (emptied) appointment day rollup from all the facts, in ``zone`` and with
    ``hours`` for late cancellations."""
    await session.execute(APPOINTMENT_DAYS, {"zone": zone, "hours": hours})
