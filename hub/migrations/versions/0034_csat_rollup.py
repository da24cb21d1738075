"""csat report rollup: a fact per survey, day and month counts, its queue and triggers

``report_csat_fact``, ``report_csat_day`` and ``report_csat_month`` are what the ``csat`` report
reads (``hub.reports.csat_models``); ``report_csat_dirty`` is filled by the triggers below and
drained by the tick (``hub.reports.csat_rollup_actions``). Each trigger queues the survey of
what changed, found by the enrollment (``csat_survey.enrollment_id`` is unique) or, for a
message, by the step run that sent it (``ix_journey_step_run_message``); a message queues only
when its status crosses into or out of "left the hub", so delivery receipts queue nothing.

Also an index for the report's comments: the scored answers with words, newest first.

Filled here on PostgreSQL, set-based, in the clinic's zone. On SQLite (no zones in its SQL)
the first tick counts it; until then the report reads the surveys themselves.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-07
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0034"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NO_ID = "00000000-0000-0000-0000-000000000000"
STATE_ID = 4
_OUT = "('sending', 'sent', 'delivered', 'read')"
"""``csat_queries.OUT_STATUSES``."""

_SURVEY_CHANGED = (
    "OLD.team_id {ne} NEW.team_id OR OLD.agent_id {ne} NEW.agent_id "
    "OR OLD.channel {ne} NEW.channel OR OLD.resolved_at {ne} NEW.resolved_at "
    "OR OLD.enrollment_id {ne} NEW.enrollment_id"
)
_RUN_CHANGED = "OLD.message_id {ne} NEW.message_id OR OLD.enrollment_id {ne} NEW.enrollment_id"
_ANSWER_CHANGED = (
    "OLD.score {ne} NEW.score OR OLD.enrollment_id {ne} NEW.enrollment_id "
    "OR OLD.created_at {ne} NEW.created_at"
)
_CROSSED = f"(OLD.status IN {_OUT}) {{ne}} (NEW.status IN {_OUT})"


def _of_enrollment(row: str) -> tuple[str, str]:
    return "id", f"csat_survey WHERE enrollment_id = {row}.enrollment_id"


_OF_MESSAGE = (
    "s.id",
    "journey_step_run r JOIN csat_survey s ON s.enrollment_id = r.enrollment_id "
    "WHERE r.message_id = NEW.id",
)

Queued = list[tuple[str, str | None]]
"""(id expression, FROM clause or None) of the surveys a trigger queues."""
# (name, table, event, condition with {ne} to fill, what it queues)
TRIGGERS: list[tuple[str, str, str, str | None, Queued]] = [
    ("report_csat_survey_insert", "csat_survey", "INSERT", None, [("NEW.id", None)]),
    ("report_csat_survey_update", "csat_survey", "UPDATE", _SURVEY_CHANGED,
     [("NEW.id", None)]),
    ("report_csat_survey_delete", "csat_survey", "DELETE", None, [("OLD.id", None)]),
    ("report_csat_run_insert", "journey_step_run", "INSERT", "NEW.message_id IS NOT NULL",
     [_of_enrollment("NEW")]),
    ("report_csat_run_update", "journey_step_run", "UPDATE", _RUN_CHANGED,
     [_of_enrollment("OLD"), _of_enrollment("NEW")]),
    ("report_csat_run_delete", "journey_step_run", "DELETE", "OLD.message_id IS NOT NULL",
     [_of_enrollment("OLD")]),
    ("report_csat_message_status", "inbox_message", "UPDATE", _CROSSED, [_OF_MESSAGE]),
    ("report_csat_answer_insert", "journey_survey_answer", "INSERT", None,
     [_of_enrollment("NEW")]),
    ("report_csat_answer_update", "journey_survey_answer", "UPDATE", _ANSWER_CHANGED,
     [_of_enrollment("OLD"), _of_enrollment("NEW")]),
    ("report_csat_answer_delete", "journey_survey_answer", "DELETE", None,
     [_of_enrollment("OLD")]),
]  # fmt: skip


def _ids(expression: str, source: str | None) -> str:
    return f"SELECT {expression} AS id" + (f" FROM {source}" if source else "")  # noqa: S608


def _pg_queue(ids: str) -> str:
    return (
        "INSERT INTO report_csat_dirty (kind, item_id, version) "  # noqa: S608
        f"SELECT 'survey', x.id, 1 FROM ({ids}) AS x WHERE x.id IS NOT NULL "
        "ON CONFLICT (kind, item_id) DO UPDATE SET version = report_csat_dirty.version + 1;"
    )


def _sqlite_queue(ids: str) -> str:
    # As in 0030: not "INSERT OR IGNORE", whose conflict clause a foreign key's ON DELETE
    # action would turn into ABORT.
    insert = (
        "INSERT INTO report_csat_dirty (kind, item_id, version) "  # noqa: S608
        f"SELECT 'survey', x.id, 0 FROM ({ids}) AS x WHERE x.id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM report_csat_dirty d "
        "WHERE d.kind = 'survey' AND d.item_id = x.id);"
    )
    bump = (
        "UPDATE report_csat_dirty SET version = version + 1 "  # noqa: S608
        f"WHERE kind = 'survey' AND item_id IN (SELECT x.id FROM ({ids}) AS x);"
    )
    return f"{insert} {bump}"


def _create_triggers(postgres: bool) -> None:
    for name, table, event, condition, queued in TRIGGERS:
        if postgres:
            body = " ".join(_pg_queue(_ids(e, src)) for e, src in queued)
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN {body} RETURN NULL; END $$"
            )
            when = condition.format(ne="IS DISTINCT FROM") if condition else ""
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW "
                + (f"WHEN ({when}) " if when else "")
                + f"EXECUTE FUNCTION {name}()"
            )
        else:
            body = " ".join(_sqlite_queue(_ids(e, src)) for e, src in queued)
            when = condition.format(ne="IS NOT") if condition else ""
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW "
                + (f"WHEN {when} " if when else "")
                + f"BEGIN {body} END"
            )


_KEY = ("team_id", "agent_id", "channel", "out", "score")


def _columns(*names: str) -> list[sa.Column[Any]]:
    types: dict[str, Any] = {
        "survey_id": sa.Uuid(),
        "item_id": sa.Uuid(),
        "team_id": sa.Uuid(),
        "agent_id": sa.Uuid(),
        "day": sa.Date(),
        "month": sa.Date(),
        "channel": sa.String(length=16),
        "kind": sa.String(length=16),
        "out": sa.Boolean(),
        "score": sa.SmallInteger(),
        "count": sa.Integer(),
        "version": sa.Integer(),
    }
    return [sa.Column(n, types[n], nullable=False) for n in names]


def _create_tables() -> None:
    op.create_table(
        "report_csat_fact",
        *_columns("survey_id", "day", *_KEY),
        sa.PrimaryKeyConstraint("survey_id", name=op.f("pk_report_csat_fact")),
    )
    for table, first in (("report_csat_day", "day"), ("report_csat_month", "month")):
        op.create_table(
            table,
            *_columns(first, *_KEY, "count"),
            sa.PrimaryKeyConstraint(first, *_KEY, name=op.f(f"pk_{table}")),
        )
    op.create_table(
        "report_csat_dirty",
        *_columns("kind", "item_id", "version"),
        sa.PrimaryKeyConstraint("kind", "item_id", name=op.f("pk_report_csat_dirty")),
    )
    comments = sa.text("text_enc IS NOT NULL AND score IS NOT NULL")
    op.create_index(
        "ix_journey_survey_answer_comment",
        "journey_survey_answer",
        ["created_at"],
        postgresql_where=comments,
        sqlite_where=comments,
    )


ZONE = "COALESCE((SELECT time_zone FROM inbox_team ORDER BY is_default DESC, name LIMIT 1), 'UTC')"
"""The clinic's zone: the default team's, else the first team's by name, else UTC
(``clinic_time_zone``)."""


def fill_pg(zone: str = ZONE) -> list[str]:
    """``csat_rollup_actions`` over every survey, in ``zone`` (an SQL expression), set-based
    (bench/csat_rollup.py fills its rollup with the same statements)."""
    key = ", ".join(_KEY)
    return [
        "INSERT INTO report_csat_fact "  # noqa: S608
        "(survey_id, day, team_id, agent_id, channel, out, score) "
        f"SELECT s.id, CAST(s.resolved_at AT TIME ZONE {zone} AS date), "
        f"COALESCE(s.team_id, '{NO_ID}'), COALESCE(s.agent_id, '{NO_ID}'), s.channel, "
        "EXISTS (SELECT 1 FROM journey_step_run r JOIN inbox_message m ON m.id = r.message_id "
        f"WHERE r.enrollment_id = s.enrollment_id AND m.status IN {_OUT}), "
        "COALESCE((SELECT a.score FROM journey_survey_answer a "
        "WHERE a.enrollment_id = s.enrollment_id AND a.score IS NOT NULL "
        "ORDER BY a.created_at, a.id LIMIT 1), 0) "
        "FROM csat_survey s",
        f"INSERT INTO report_csat_day (day, {key}, count) "  # noqa: S608
        f"SELECT day, {key}, COUNT(*) FROM report_csat_fact GROUP BY day, {key}",
        f"INSERT INTO report_csat_month (month, {key}, count) "  # noqa: S608
        f"SELECT CAST(date_trunc('month', day) AS date) AS m, {key}, SUM(count) "
        f"FROM report_csat_day GROUP BY m, {key}",
        "INSERT INTO report_fact_state (id, time_zone, as_of) "  # noqa: S608
        f"VALUES ({STATE_ID}, {zone}, now()) "
        "ON CONFLICT (id) DO UPDATE SET time_zone = EXCLUDED.time_zone, as_of = EXCLUDED.as_of",
    ]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    _create_tables()
    _create_triggers(postgres)
    if postgres:
        for statement in fill_pg():
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, *_ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.execute(f"DELETE FROM report_fact_state WHERE id = {STATE_ID}")  # noqa: S608
    op.drop_index("ix_journey_survey_answer_comment", table_name="journey_survey_answer")
    for table in ("report_csat_dirty", "report_csat_month", "report_csat_day", "report_csat_fact"):
        op.drop_table(table)
