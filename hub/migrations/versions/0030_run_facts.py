"""outcome report rollups: per-run and per-appointment facts, kept current by the tick

``report_run_fact`` (one row per journey step run: its funnel flags) and
``report_appointment_fact`` (one row per appointment, and per journey that enrolled it: its
status and reminder group) are what the ``journeys``, ``appointments`` and ``delivery``
reports read. ``report_rollup_dirty`` is filled by the triggers below in the changing
transaction (an enrollment, a patient, an appointment) and drained by the tick
(``hub.reports.run_facts_actions``). The first refresh queues every enrollment and appointment
(no state row yet), so the existing history is built by the first ticks.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RUN_CHANGED = (
    "OLD.status {ne} NEW.status OR OLD.due_at {ne} NEW.due_at "
    "OR OLD.message_id {ne} NEW.message_id OR OLD.reason {ne} NEW.reason "
    "OR OLD.step_id {ne} NEW.step_id OR OLD.enrollment_id {ne} NEW.enrollment_id"
)
_MESSAGE_CHANGED = (
    "OLD.status {ne} NEW.status OR OLD.error_code {ne} NEW.error_code "
    "OR OLD.created_at {ne} NEW.created_at OR OLD.channel {ne} NEW.channel "
    "OR OLD.purpose {ne} NEW.purpose"
)
_ENROLLMENT_CHANGED = (
    "OLD.confirmed_at {ne} NEW.confirmed_at OR OLD.cancelled_at {ne} NEW.cancelled_at "
    "OR OLD.appointment_id {ne} NEW.appointment_id OR OLD.patient_id {ne} NEW.patient_id "
    "OR OLD.journey_id {ne} NEW.journey_id OR OLD.version {ne} NEW.version"
)
_APPOINTMENT_CHANGED = (
    "OLD.status {ne} NEW.status OR OLD.start_at {ne} NEW.start_at "
    "OR OLD.cancelled_at {ne} NEW.cancelled_at"
)
_INBOUND = "{r}.direction = 'inbound'"
_REVOKED = "NEW.state = 'revoked'"


def _pg_function(name: str, body: str) -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {body} RETURN NULL; END $$"
    )


def _pg_queue(kind: str, ids: str) -> str:
    """Queue (or bump) the ids of the SELECT ``ids`` as ``kind``."""
    return (
        "INSERT INTO report_rollup_dirty (kind, item_id, version) "  # noqa: S608
        f"SELECT '{kind}', x.id, 1 FROM ({ids}) AS x(id) WHERE x.id IS NOT NULL "
        "ON CONFLICT (kind, item_id) DO UPDATE SET version = report_rollup_dirty.version + 1;"
    )


def _one(value: str) -> str:
    return f"SELECT {value}"


_OF_MESSAGE = "SELECT enrollment_id FROM journey_step_run WHERE message_id = {r}.id"
_PATIENT_OF = "SELECT patient_id FROM inbox_conversation WHERE id = {r}.conversation_id"

PG_FUNCTIONS = [
    _pg_function(
        "report_rollup_mark_run",
        "IF TG_OP <> 'INSERT' THEN "
        + _pg_queue("enrollment", _one("OLD.enrollment_id"))
        + " END IF; IF TG_OP <> 'DELETE' THEN "
        + _pg_queue("enrollment", _one("NEW.enrollment_id"))
        + " END IF;",
    ),
    _pg_function(
        "report_rollup_mark_message",
        "IF TG_OP = 'UPDATE' THEN "
        + _pg_queue("enrollment", _OF_MESSAGE.format(r="NEW"))
        + " ELSIF TG_OP = 'INSERT' THEN "
        + _pg_queue("patient", _PATIENT_OF.format(r="NEW"))
        + " ELSE "
        + _pg_queue("patient", _PATIENT_OF.format(r="OLD"))
        + " END IF;",
    ),
    _pg_function(
        "report_rollup_mark_conversation",
        _pg_queue("patient", _one("OLD.patient_id")) + _pg_queue("patient", _one("NEW.patient_id")),
    ),
    _pg_function("report_rollup_mark_consent", _pg_queue("patient", _one("NEW.patient_id"))),
    _pg_function(
        "report_rollup_mark_enrollment",
        "IF TG_OP <> 'INSERT' THEN "
        + _pg_queue("enrollment", _one("OLD.id"))
        + _pg_queue("appointment", _one("OLD.appointment_id"))
        + " END IF; IF TG_OP <> 'DELETE' THEN "
        + _pg_queue("enrollment", _one("NEW.id"))
        + _pg_queue("appointment", _one("NEW.appointment_id"))
        + " END IF;",
    ),
    _pg_function(
        "report_rollup_mark_appointment",
        "IF TG_OP = 'DELETE' THEN "
        + _pg_queue("appointment", _one("OLD.id"))
        + " ELSE "
        + _pg_queue("appointment", _one("NEW.id"))
        + " END IF;",
    ),
]

TRIGGERS = [
    # (name, table, event, condition with {ne} and {r} to fill, PostgreSQL function)
    ("report_rollup_run_insert", "journey_step_run", "INSERT", None, "run"),
    ("report_rollup_run_update", "journey_step_run", "UPDATE", _RUN_CHANGED, "run"),
    ("report_rollup_run_delete", "journey_step_run", "DELETE", None, "run"),
    ("report_rollup_message_update", "inbox_message", "UPDATE", _MESSAGE_CHANGED, "message"),
    ("report_rollup_message_insert", "inbox_message", "INSERT", _INBOUND, "message"),
    ("report_rollup_message_delete", "inbox_message", "DELETE", _INBOUND, "message"),
    (
        "report_rollup_conversation_patient",
        "inbox_conversation",
        "UPDATE",
        "OLD.patient_id {ne} NEW.patient_id",
        "conversation",
    ),
    ("report_rollup_consent_insert", "consent_record", "INSERT", _REVOKED, "consent"),
    ("report_rollup_enrollment_insert", "journey_enrollment", "INSERT", None, "enrollment"),
    (
        "report_rollup_enrollment_update",
        "journey_enrollment",
        "UPDATE",
        _ENROLLMENT_CHANGED,
        "enrollment",
    ),
    ("report_rollup_enrollment_delete", "journey_enrollment", "DELETE", None, "enrollment"),
    ("report_rollup_appointment_insert", "journey_appointment", "INSERT", None, "appointment"),
    (
        "report_rollup_appointment_update",
        "journey_appointment",
        "UPDATE",
        _APPOINTMENT_CHANGED,
        "appointment",
    ),
    ("report_rollup_appointment_delete", "journey_appointment", "DELETE", None, "appointment"),
]


def _row(event: str) -> str:
    return "OLD" if event == "DELETE" else "NEW"


def _pg_trigger(name: str, table: str, event: str, condition: str | None, fn: str) -> str:
    when = f"WHEN ({condition.format(ne='IS DISTINCT FROM', r=_row(event))}) " if condition else ""
    return (
        f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {when}"
        f"EXECUTE FUNCTION report_rollup_mark_{fn}()"
    )


def _sqlite_queue(kind: str, ids: str) -> str:
    # Names and values are this module's constants.
    # Not "INSERT OR IGNORE": inside a foreign key's ON DELETE action SQLite applies the
    # action's ABORT to the trigger's statements, and a second queueing would fail.
    insert = (
        "INSERT INTO report_rollup_dirty (kind, item_id, version) "  # noqa: S608
        f"SELECT '{kind}', x.id, 0 FROM ({ids}) AS x WHERE x.id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM report_rollup_dirty d "
        f"WHERE d.kind = '{kind}' AND d.item_id = x.id);"
    )
    bump = (
        "UPDATE report_rollup_dirty SET version = version + 1 "  # noqa: S608
        f"WHERE kind = '{kind}' AND item_id IN (SELECT x.id FROM ({ids}) AS x);"
    )
    return f"{insert} {bump}"


def _sqlite_ids(value: str) -> str:
    return f"SELECT {value} AS id"


def _sqlite_body(table: str, event: str) -> str:
    r = _row(event)
    if table == "journey_step_run":
        rows = ["OLD", "NEW"] if event == "UPDATE" else [r]
        return " ".join(
            _sqlite_queue("enrollment", _sqlite_ids(f"{x}.enrollment_id")) for x in rows
        )
    if table == "inbox_message":
        if event == "UPDATE":
            of_message = _OF_MESSAGE.format(r="NEW").replace(
                "SELECT enrollment_id", "SELECT enrollment_id AS id"
            )
            return _sqlite_queue("enrollment", of_message)
        patient = _PATIENT_OF.format(r=r).replace("SELECT patient_id", "SELECT patient_id AS id")
        return _sqlite_queue("patient", patient)
    if table == "inbox_conversation":
        return (
            _sqlite_queue("patient", _sqlite_ids("OLD.patient_id"))
            + " "
            + _sqlite_queue("patient", _sqlite_ids("NEW.patient_id"))
        )
    if table == "consent_record":
        return _sqlite_queue("patient", _sqlite_ids("NEW.patient_id"))
    if table == "journey_enrollment":
        rows = ["OLD", "NEW"] if event == "UPDATE" else [r]
        return " ".join(
            _sqlite_queue("enrollment", _sqlite_ids(f"{x}.id"))
            + " "
            + _sqlite_queue("appointment", _sqlite_ids(f"{x}.appointment_id"))
            for x in rows
        )
    return _sqlite_queue("appointment", _sqlite_ids(f"{r}.id"))


def _sqlite_trigger(name: str, table: str, event: str, condition: str | None) -> str:
    when = f"WHEN {condition.format(ne='IS NOT', r=_row(event))} " if condition else ""
    return (
        f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {when}"
        f"BEGIN {_sqlite_body(table, event)} END"
    )


def upgrade() -> None:
    op.create_table(
        "report_run_fact",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("enrollment_id", sa.Uuid(), nullable=False),
        sa.Column("journey_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("step_id", sa.String(length=80), nullable=False),
        sa.Column("appointment_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        *[
            sa.Column(flag, sa.Boolean(), nullable=False)
            for flag in (
                "sent",
                "delivered",
                "replied",
                "confirmed",
                "cancelled",
                "opted_out",
                "failed",
            )
        ],
        sa.Column("confirm_s", sa.Float(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_report_run_fact")),
    )
    op.create_index("ix_report_run_fact_journey_due", "report_run_fact", ["journey_id", "due_at"])
    op.create_index("ix_report_run_fact_enrollment", "report_run_fact", ["enrollment_id"])
    op.create_table(
        "report_appointment_fact",
        sa.Column("appointment_id", sa.Uuid(), nullable=False),
        sa.Column("journey_id", sa.Uuid(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminder_group", sa.String(length=16), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "appointment_id", "journey_id", name=op.f("pk_report_appointment_fact")
        ),
    )
    op.create_index(
        "ix_report_appointment_fact_journey_start",
        "report_appointment_fact",
        ["journey_id", "start_at"],
    )
    op.create_table(
        "report_rollup_dirty",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "item_id", name=op.f("pk_report_rollup_dirty")),
    )
    op.create_index("ix_journey_step_run_message", "journey_step_run", ["message_id"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in PG_FUNCTIONS:
            op.execute(statement)
        for name, table, event, condition, fn in TRIGGERS:
            op.execute(_pg_trigger(name, table, event, condition, fn))
    else:
        for name, table, event, condition, _fn in TRIGGERS:
            op.execute(_sqlite_trigger(name, table, event, condition))


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, *_ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgres else ""))
    if postgres:
        for fn in ("run", "message", "conversation", "consent", "enrollment", "appointment"):
            op.execute(f"DROP FUNCTION IF EXISTS report_rollup_mark_{fn}()")
    op.drop_index("ix_journey_step_run_message", table_name="journey_step_run")
    for table in ("report_rollup_dirty", "report_appointment_fact", "report_run_fact"):
        op.drop_table(table)
