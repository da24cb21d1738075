"""outcome report day rollups: journeys' funnel, time to confirm, appointments, delivery

``report_run_day`` and ``report_confirm_wait`` (from the run facts), ``report_appointment_day``
(from the appointment facts) and ``report_delivery_day`` (from ``report_message_fact``, one
narrow row per outbound message) are what the ``journeys``, ``appointments`` and ``delivery``
reports read (``hub.reports.outcome_models``). The run and appointment rollups are kept by the
run facts refresh in its own transaction; ``report_delivery_dirty`` is filled by the triggers
below and drained by the tick (``hub.reports.delivery_rollup_actions``).

Filled here, set-based: the run rollups from the run facts (both engines); on PostgreSQL also
the appointment rollup from the appointment facts and the message facts and delivery counts
from the messages (in the clinic's zone). On SQLite (no zones in its SQL) the first tick counts
those two: no late-cancellation hours and no delivery state are recorded yet.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-07
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NO_ID = "00000000-0000-0000-0000-000000000000"
FLAGS = ("sent", "delivered", "replied", "confirmed", "cancelled", "opted_out", "failed")
_OUTBOUND = "{r}.direction = 'outbound'"
_MESSAGE_CHANGED = (
    "(OLD.direction = 'outbound' OR NEW.direction = 'outbound') AND ("
    "OLD.status {ne} NEW.status OR OLD.error_code {ne} NEW.error_code "
    "OR OLD.provider {ne} NEW.provider OR OLD.send_attempts {ne} NEW.send_attempts "
    "OR OLD.created_at {ne} NEW.created_at OR OLD.channel {ne} NEW.channel "
    "OR OLD.conversation_id {ne} NEW.conversation_id OR OLD.direction {ne} NEW.direction)"
)
_ATTEMPT_CHANGED = (
    "OLD.provider {ne} NEW.provider OR OLD.attempt {ne} NEW.attempt "
    "OR OLD.message_id {ne} NEW.message_id"
)
_RUN_CHANGED = "OLD.message_id {ne} NEW.message_id OR OLD.enrollment_id {ne} NEW.enrollment_id"
_RUNS_OF = "journey_step_run WHERE enrollment_id = NEW.id AND message_id IS NOT NULL"

Queued = list[tuple[str, str, str | None]]
"""(kind, id expression, FROM clause or None) of what a trigger queues."""
# (name, table, event, condition with {ne} and {r} to fill, what it queues)
TRIGGERS: list[tuple[str, str, str, str | None, Queued]] = [
    ("report_delivery_message_insert", "inbox_message", "INSERT", _OUTBOUND,
     [("message", "NEW.id", None)]),
    ("report_delivery_message_update", "inbox_message", "UPDATE", _MESSAGE_CHANGED,
     [("message", "NEW.id", None)]),
    ("report_delivery_message_delete", "inbox_message", "DELETE", _OUTBOUND,
     [("message", "OLD.id", None)]),
    ("report_delivery_conversation_team", "inbox_conversation", "UPDATE",
     "OLD.team_id {ne} NEW.team_id", [("conversation", "NEW.id", None)]),
    ("report_delivery_attempt_insert", "inbox_delivery_attempt", "INSERT", None,
     [("message", "NEW.message_id", None)]),
    ("report_delivery_attempt_update", "inbox_delivery_attempt", "UPDATE", _ATTEMPT_CHANGED,
     [("message", "OLD.message_id", None), ("message", "NEW.message_id", None)]),
    ("report_delivery_attempt_delete", "inbox_delivery_attempt", "DELETE", None,
     [("message", "OLD.message_id", None)]),
    ("report_delivery_run_insert", "journey_step_run", "INSERT", "NEW.message_id IS NOT NULL",
     [("message", "NEW.message_id", None)]),
    ("report_delivery_run_update", "journey_step_run", "UPDATE", _RUN_CHANGED,
     [("message", "OLD.message_id", None), ("message", "NEW.message_id", None)]),
    ("report_delivery_run_delete", "journey_step_run", "DELETE", "OLD.message_id IS NOT NULL",
     [("message", "OLD.message_id", None)]),
    ("report_delivery_enrollment_journey", "journey_enrollment", "UPDATE",
     "OLD.journey_id {ne} NEW.journey_id", [("message", "message_id", _RUNS_OF)]),
]  # fmt: skip


def _ids(expression: str, source: str | None) -> str:
    return f"SELECT {expression} AS id" + (f" FROM {source}" if source else "")  # noqa: S608


def _pg_queue(kind: str, ids: str) -> str:
    return (
        "INSERT INTO report_delivery_dirty (kind, item_id, version) "  # noqa: S608
        f"SELECT '{kind}', x.id, 1 FROM ({ids}) AS x WHERE x.id IS NOT NULL "
        "ON CONFLICT (kind, item_id) DO UPDATE SET version = report_delivery_dirty.version + 1;"
    )


def _sqlite_queue(kind: str, ids: str) -> str:
    # As in 0030: not "INSERT OR IGNORE", whose conflict clause a foreign key's ON DELETE
    # action would turn into ABORT.
    insert = (
        "INSERT INTO report_delivery_dirty (kind, item_id, version) "  # noqa: S608
        f"SELECT '{kind}', x.id, 0 FROM ({ids}) AS x WHERE x.id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM report_delivery_dirty d "
        f"WHERE d.kind = '{kind}' AND d.item_id = x.id);"
    )
    bump = (
        "UPDATE report_delivery_dirty SET version = version + 1 "  # noqa: S608
        f"WHERE kind = '{kind}' AND item_id IN (SELECT x.id FROM ({ids}) AS x);"
    )
    return f"{insert} {bump}"


def _row(event: str) -> str:
    return "OLD" if event == "DELETE" else "NEW"


def _when(condition: str | None, event: str, ne: str) -> str:
    return condition.format(ne=ne, r=_row(event)) if condition else ""


def _create_triggers(postgres: bool) -> None:
    for name, table, event, condition, queued in TRIGGERS:
        if postgres:
            body = " ".join(_pg_queue(kind, _ids(e, src)) for kind, e, src in queued)
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN {body} RETURN NULL; END $$"
            )
            when = _when(condition, event, "IS DISTINCT FROM")
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW "
                + (f"WHEN ({when}) " if when else "")
                + f"EXECUTE FUNCTION {name}()"
            )
        else:
            body = " ".join(_sqlite_queue(kind, _ids(e, src)) for kind, e, src in queued)
            when = _when(condition, event, "IS NOT")
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW "
                + (f"WHEN {when} " if when else "")
                + f"BEGIN {body} END"
            )


_TYPES: dict[str, Any] = {
    "journey_id": sa.Uuid(),
    "team_id": sa.Uuid(),
    "message_id": sa.Uuid(),
    "item_id": sa.Uuid(),
    "month": sa.Date(),
    "day": sa.Date(),
    "due_day": sa.Date(),
    "start_day": sa.Date(),
    "prev_day": sa.Date(),
    "step_id": sa.String(length=80),
    "kind": sa.String(length=16),
    "flag": sa.String(length=16),
    "channel": sa.String(length=16),
    "provider": sa.String(length=32),
    "status": sa.String(length=16),
    "error_code": sa.String(length=32),
    "reminder_group": sa.String(length=16),
    "cancel": sa.String(length=8),
    "wait_s": sa.Integer(),
    "count": sa.Integer(),
    "version": sa.Integer(),
    "id": sa.Integer(),
    "late_cancel_hours": sa.Integer(),
}
_RUN = ("journey_id", "channel", "{d}", "step_id", "flag", "prev_day")
_WAIT = ("journey_id", "{d}", "step_id", "channel", "wait_s")
_DELIVERY = ("journey_id", "{d}", "channel", "team_id", "provider", "status", "error_code")
TABLES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    # (table, primary key, other columns): hub.reports.outcome_models
    ("report_run_day", tuple(c.format(d="due_day") for c in _RUN), ("count",)),
    ("report_run_month", tuple(c.format(d="month") for c in _RUN), ("count",)),
    ("report_confirm_wait", tuple(c.format(d="due_day") for c in _WAIT), ("count",)),
    ("report_confirm_month", tuple(c.format(d="month") for c in _WAIT), ("count",)),
    (
        "report_appointment_day",
        ("journey_id", "start_day", "status", "reminder_group", "cancel"),
        ("count",),
    ),
    ("report_delivery_day", tuple(c.format(d="day") for c in _DELIVERY), ("count",)),
    ("report_delivery_month", tuple(c.format(d="month") for c in _DELIVERY), ("count",)),
    (
        "report_message_fact",
        ("message_id",),
        ("day", "channel", "provider", "status", "error_code", "team_id", "journey_id"),
    ),
    ("report_delivery_dirty", ("kind", "item_id"), ("version",)),
    ("report_outcome_state", ("id",), ("late_cancel_hours",)),
]


_LONG = ("report_appointment_day", "status")
_APPOINTMENT_STATUS = sa.String(length=24)


def _create_tables() -> None:
    for table, key, rest in TABLES:
        op.create_table(
            table,
            *[
                # An appointment's status is the longer kind (``journey_appointment.status``).
                sa.Column(
                    name,
                    _APPOINTMENT_STATUS if (table, name) == _LONG else _TYPES[name],
                    nullable=False,
                )
                for name in (*key, *rest)
            ],
            sa.PrimaryKeyConstraint(*key, name=op.f(f"pk_{table}")),
        )


def _month(postgres: bool, day: str) -> str:
    return (
        f"CAST(date_trunc('month', {day}) AS date)"
        if postgres
        else f"date({day}, 'start of month')"
    )


def month_fill(postgres: bool, *, delivery: bool) -> list[str]:
    """The month rows summed from the day rows (``outcome_rollup.run_months`` and the rest)."""
    if delivery:
        rest = "channel, team_id, provider, status, error_code"
        return [
            f"INSERT INTO report_delivery_month (journey_id, month, {rest}, count) "  # noqa: S608
            f"SELECT journey_id, m, {rest}, SUM(count) FROM (SELECT *, {_month(postgres, 'day')} "
            f"AS m FROM report_delivery_day) AS d GROUP BY journey_id, m, {rest}"
        ]
    run_month = _month(postgres, "due_day")
    return [
        "INSERT INTO report_run_month "  # noqa: S608
        "(journey_id, channel, month, step_id, flag, prev_day, count) "
        "SELECT journey_id, channel, m, step_id, flag, p, SUM(count) FROM ("
        f"SELECT journey_id, channel, {run_month} AS m, step_id, flag, count, "
        f"CASE WHEN prev_day < {run_month} THEN prev_day ELSE {run_month} END AS p "
        "FROM report_run_day) AS d GROUP BY journey_id, channel, m, step_id, flag, p",
        "INSERT INTO report_confirm_month "  # noqa: S608
        "(journey_id, month, step_id, channel, wait_s, count) "
        f"SELECT journey_id, {run_month} AS m, step_id, channel, wait_s, SUM(count) "
        "FROM report_confirm_wait GROUP BY journey_id, m, step_id, channel, wait_s",
    ]


def run_day_fill(postgres: bool) -> list[str]:
    """``outcome_rollup.run_day_counts`` and ``confirm_counts`` over every run fact, as SQL
    (bench/outcome_rollup.py builds its rollups with the same statements)."""
    columns = "enrollment_id, journey_id, step_id, channel, due_at, run_id, due_day"
    flagged = " UNION ALL ".join(
        f"SELECT {columns}, '{f}' AS flag FROM report_run_fact WHERE {f}"  # noqa: S608
        for f in FLAGS
    )
    keep = "enrollment_id, journey_id, due_day, due_at, run_id, flag"
    scoped = " UNION ALL ".join(
        f"SELECT {keep}, {step} AS step, {channel} AS ch FROM flagged{where}"  # noqa: S608
        for step, channel, where in (
            ("step_id", "channel", " WHERE channel IS NOT NULL"),
            ("step_id", "'*'", ""),
            ("'*'", "channel", " WHERE channel IS NOT NULL"),
            ("'*'", "'*'", ""),
        )
    )
    none = "DATE '0001-01-01'" if postgres else "'0001-01-01'"
    run_days = (
        f"WITH flagged AS ({flagged}) "  # noqa: S608
        "INSERT INTO report_run_day "
        "(journey_id, channel, due_day, step_id, flag, prev_day, count) "
        f"SELECT journey_id, ch, due_day, step, flag, COALESCE(prev, {none}), COUNT(*) FROM ("
        "SELECT journey_id, ch, due_day, step, flag, LAG(due_day) OVER ("
        "PARTITION BY enrollment_id, flag, step, ch ORDER BY due_at, run_id) AS prev "
        f"FROM ({scoped}) AS s) AS w "
        f"GROUP BY journey_id, ch, due_day, step, flag, COALESCE(prev, {none})"
    )
    seconds = (
        "CAST(floor(GREATEST(COALESCE(confirm_s, 0), 0)) AS integer)"
        if postgres
        else "CAST(MAX(COALESCE(confirm_s, 0), 0) AS INTEGER)"
    )
    waits = (
        "INSERT INTO report_confirm_wait (journey_id, due_day, step_id, channel, wait_s, count) "  # noqa: S608
        "SELECT journey_id, due_day, step_id, ch, CASE WHEN s < 60 THEN s "
        "WHEN s < 86400 THEN s - s % 60 ELSE s - s % 3600 END AS b, COUNT(*) FROM ("
        f"SELECT journey_id, due_day, step_id, COALESCE(channel, '') AS ch, {seconds} AS s "
        "FROM report_run_fact WHERE confirmed) AS c "
        "GROUP BY journey_id, due_day, step_id, ch, b"
    )
    return [run_days, waits]


_REST = "day, channel, team_id, provider, status, error_code"
DELIVERY_DAY_FILL = (
    f"INSERT INTO report_delivery_day (journey_id, {_REST}, count) "  # noqa: S608
    f"SELECT '{NO_ID}', {_REST}, COUNT(*) FROM report_message_fact GROUP BY {_REST} "
    f"UNION ALL SELECT journey_id, {_REST}, COUNT(*) FROM report_message_fact "
    f"WHERE journey_id <> '{NO_ID}' GROUP BY journey_id, {_REST}"
)
"""``outcome_rollup.delivery_counts`` over every message fact."""


def _fill_delivery_pg() -> None:
    """``delivery_rollup_actions`` over every outbound message, in the clinic's zone (the
    default team's, else the first team's by name, else UTC: ``clinic_time_zone``)."""
    zone = (
        "COALESCE((SELECT time_zone FROM inbox_team ORDER BY is_default DESC, name LIMIT 1), 'UTC')"
    )
    op.execute(
        "INSERT INTO report_message_fact "  # noqa: S608
        "(message_id, day, channel, provider, status, error_code, team_id, journey_id) "
        f"SELECT m.id, CAST(m.created_at AT TIME ZONE {zone} AS date), m.channel::text, "
        "COALESCE(m.provider, (SELECT a.provider FROM inbox_delivery_attempt a "
        "WHERE a.message_id = m.id AND a.attempt = m.send_attempts LIMIT 1), ''), "
        "m.status::text, CASE WHEN m.status IN ('failed', 'undelivered') "
        "THEN COALESCE(m.error_code, '') ELSE '' END, "
        f"COALESCE(c.team_id, '{NO_ID}'), "
        "COALESCE((SELECT e.journey_id FROM journey_step_run r JOIN journey_enrollment e "
        "ON e.id = r.enrollment_id WHERE r.message_id = m.id ORDER BY e.journey_id LIMIT 1), "
        f"'{NO_ID}') "
        "FROM inbox_message m JOIN inbox_conversation c ON c.id = m.conversation_id "
        "WHERE m.direction = 'outbound'"
    )
    op.execute(DELIVERY_DAY_FILL)
    op.execute(
        "INSERT INTO report_fact_state (id, time_zone, as_of) "  # noqa: S608
        f"VALUES (3, {zone}, now()) "
        "ON CONFLICT (id) DO UPDATE SET time_zone = EXCLUDED.time_zone, as_of = EXCLUDED.as_of"
    )


_HOURS = (
    "SELECT COALESCE((SELECT CAST(value->>'late_cancel_hours' AS integer) FROM hub_setting "
    "WHERE key = 'reports.appointments' AND value->>'late_cancel_hours' ~ '^[1-9][0-9]{0,3}$'), "
    "24) AS h"
)
"""``appointment_settings.late_cancel_hours`` (a value it would not read gives the default;
the tick recounts if it reads another: ``outcome_rollup_actions.late_cancel_hours_in``)."""


def _fill_appointment_days_pg() -> None:
    """``outcome_rollup.appointment_counts`` over every appointment fact, in the zone the facts
    were counted in (none yet: nothing to count)."""
    op.execute(
        "INSERT INTO report_appointment_day "  # noqa: S608
        "(journey_id, start_day, status, reminder_group, cancel, count) "
        "SELECT f.journey_id, CAST(f.start_at AT TIME ZONE s.time_zone AS date) AS d, f.status, "
        "f.reminder_group, CASE WHEN f.status <> 'cancelled' THEN '' "
        "WHEN f.cancelled_at IS NULL THEN 'unknown' "
        "WHEN f.start_at - f.cancelled_at < make_interval(hours => h.h) THEN 'late' "
        "ELSE 'in_time' END AS c, COUNT(*) "
        f"FROM report_appointment_fact f, report_fact_state s, ({_HOURS}) h WHERE s.id = 2 "
        "GROUP BY f.journey_id, d, f.status, f.reminder_group, c"
    )
    op.execute(
        "INSERT INTO report_outcome_state (id, late_cancel_hours) "  # noqa: S608
        f"SELECT 1, h.h FROM ({_HOURS}) h WHERE EXISTS "
        "(SELECT 1 FROM report_fact_state WHERE id = 2)"
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    _create_tables()
    _create_triggers(postgres)
    for statement in [*run_day_fill(postgres), *month_fill(postgres, delivery=False)]:
        op.execute(statement)
    if postgres:
        _fill_appointment_days_pg()
        _fill_delivery_pg()
        for statement in month_fill(postgres, delivery=True):
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, *_ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.execute("DELETE FROM report_fact_state WHERE id = 3")
    for table, _key, _rest in reversed(TABLES):
        op.drop_table(table)
