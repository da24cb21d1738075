"""inbox report facts: status history, per-conversation facts, hourly incoming counts

``inbox_conversation_event`` records each resolution and reopening (written beside the status
change); resolved conversations that a patient had written in get one "resolved" event at their
``resolved_at``, the only resolution known from before. ``report_conversation_fact`` and
``report_inbound_hour`` are the rollups the inbox reports read; ``report_fact_dirty`` and
``report_fact_team_dirty`` are filled by the triggers below in the changing transaction, and
drained by the tick. Every conversation is queued once here, so the first ticks build the
facts of the existing history.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A message matters to the facts when a patient sent it or a person did (automatic sends,
# the bulk of journey traffic, do not queue anything).
_MESSAGE_MATTERS = "{r}.direction = 'inbound' OR {r}.author_id IS NOT NULL"
_CONVERSATION_CHANGED = (
    "OLD.team_id {ne} NEW.team_id OR OLD.assignee_id {ne} NEW.assignee_id "
    "OR OLD.channel {ne} NEW.channel OR OLD.status {ne} NEW.status "
    "OR OLD.first_response_due_at {ne} NEW.first_response_due_at"
)

PG_TRIGGERS = [
    """
    CREATE FUNCTION report_mark_message() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        changed uuid;
    BEGIN
        IF TG_OP = 'DELETE' THEN
            changed := OLD.conversation_id;
        ELSE
            changed := NEW.conversation_id;
        END IF;
        INSERT INTO report_fact_dirty (conversation_id, version) VALUES (changed, 1)
        ON CONFLICT (conversation_id) DO UPDATE SET version = report_fact_dirty.version + 1;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION report_mark_conversation() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        changed uuid;
    BEGIN
        IF TG_OP = 'DELETE' THEN
            changed := OLD.id;
        ELSE
            changed := NEW.id;
        END IF;
        INSERT INTO report_fact_dirty (conversation_id, version) VALUES (changed, 1)
        ON CONFLICT (conversation_id) DO UPDATE SET version = report_fact_dirty.version + 1;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION report_mark_team() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO report_fact_team_dirty (team_id, version) VALUES (NEW.id, 1)
        ON CONFLICT (team_id) DO UPDATE SET version = report_fact_team_dirty.version + 1;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER report_message_insert AFTER INSERT ON inbox_message FOR EACH ROW "
    f"WHEN ({_MESSAGE_MATTERS.format(r='NEW')}) EXECUTE FUNCTION report_mark_message()",
    "CREATE TRIGGER report_message_delete AFTER DELETE ON inbox_message FOR EACH ROW "
    f"WHEN ({_MESSAGE_MATTERS.format(r='OLD')}) EXECUTE FUNCTION report_mark_message()",
    "CREATE TRIGGER report_conversation_update AFTER UPDATE ON inbox_conversation FOR EACH ROW "
    f"WHEN ({_CONVERSATION_CHANGED.format(ne='IS DISTINCT FROM')}) "
    "EXECUTE FUNCTION report_mark_conversation()",
    "CREATE TRIGGER report_conversation_delete AFTER DELETE ON inbox_conversation FOR EACH ROW "
    "EXECUTE FUNCTION report_mark_conversation()",
    # json has no equality operator: compare the stored text.
    "CREATE TRIGGER report_team_hours AFTER UPDATE ON inbox_team FOR EACH ROW "
    "WHEN (OLD.business_hours::text IS DISTINCT FROM NEW.business_hours::text "
    "OR OLD.holidays::text IS DISTINCT FROM NEW.holidays::text "
    "OR OLD.time_zone IS DISTINCT FROM NEW.time_zone) EXECUTE FUNCTION report_mark_team()",
]


def _sqlite_mark(table: str, value: str) -> str:
    key = "team_id" if table == "report_fact_team_dirty" else "conversation_id"
    # Names and values are this module's constants. Not INSERT OR IGNORE: inside a trigger
    # fired by a foreign key's ON DELETE SET NULL (a team or staff member deleted), SQLite
    # applies the outer statement's conflict rule, and a conversation already queued failed
    # the delete with a UNIQUE error.
    insert = (
        f"INSERT INTO {table} ({key}, version) SELECT {value}, 0 "  # noqa: S608
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {key} = {value});"
    )
    bump = f"UPDATE {table} SET version = version + 1 WHERE {key} = {value};"  # noqa: S608
    return f"{insert} {bump}"


SQLITE_TRIGGERS = [
    "CREATE TRIGGER report_message_insert AFTER INSERT ON inbox_message FOR EACH ROW "
    f"WHEN {_MESSAGE_MATTERS.format(r='NEW')} "
    f"BEGIN {_sqlite_mark('report_fact_dirty', 'NEW.conversation_id')} END",
    "CREATE TRIGGER report_message_delete AFTER DELETE ON inbox_message FOR EACH ROW "
    f"WHEN {_MESSAGE_MATTERS.format(r='OLD')} "
    f"BEGIN {_sqlite_mark('report_fact_dirty', 'OLD.conversation_id')} END",
    "CREATE TRIGGER report_conversation_update AFTER UPDATE ON inbox_conversation FOR EACH ROW "
    f"WHEN {_CONVERSATION_CHANGED.format(ne='IS NOT')} "
    f"BEGIN {_sqlite_mark('report_fact_dirty', 'NEW.id')} END",
    "CREATE TRIGGER report_conversation_delete AFTER DELETE ON inbox_conversation FOR EACH ROW "
    f"BEGIN {_sqlite_mark('report_fact_dirty', 'OLD.id')} END",
    "CREATE TRIGGER report_team_hours AFTER UPDATE ON inbox_team FOR EACH ROW "
    "WHEN OLD.business_hours IS NOT NEW.business_hours OR OLD.holidays IS NOT NEW.holidays "
    "OR OLD.time_zone IS NOT NEW.time_zone "
    f"BEGIN {_sqlite_mark('report_fact_team_dirty', 'NEW.id')} END",
]

TRIGGERS = [
    ("report_message_insert", "inbox_message"),
    ("report_message_delete", "inbox_message"),
    ("report_conversation_update", "inbox_conversation"),
    ("report_conversation_delete", "inbox_conversation"),
    ("report_team_hours", "inbox_team"),
]


def upgrade() -> None:
    op.create_table(
        "inbox_conversation_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "resolved",
                "reopened",
                name="status_event",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["inbox_conversation.id"],
            name=op.f("fk_inbox_conversation_event_conversation_id_inbox_conversation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["inbox_staff_user.id"],
            name=op.f("fk_inbox_conversation_event_staff_id_inbox_staff_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_conversation_event")),
    )
    op.create_index(
        "ix_inbox_conversation_event_conversation_at",
        "inbox_conversation_event",
        ["conversation_id", "at"],
    )
    op.create_table(
        "report_conversation_fact",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("assignee_id", sa.Uuid(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_day", sa.Date(), nullable=False),
        sa.Column("first_response_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_response_s", sa.Integer(), nullable=True),
        sa.Column("first_response_bh_s", sa.Integer(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution_s", sa.Integer(), nullable=True),
        sa.Column("resolution_bh_s", sa.Integer(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("wait_end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reopened", sa.Boolean(), nullable=False),
        sa.Column("inbound_hours", sa.JSON(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_report_conversation_fact")),
    )
    table = "report_conversation_fact"
    for name, columns in [
        ("ix_report_conversation_fact_opened", ["opened_at"]),
        ("ix_report_conversation_fact_team_opened", ["team_id", "opened_at"]),
        ("ix_report_conversation_fact_assignee_opened", ["assignee_id", "opened_at"]),
        ("ix_report_conversation_fact_resolved", ["resolved_at"]),
        ("ix_report_conversation_fact_team_resolved", ["team_id", "resolved_at"]),
        ("ix_report_conversation_fact_assignee_resolved", ["assignee_id", "resolved_at"]),
    ]:
        op.create_index(name, table, columns)
    op.create_table(
        "report_inbound_hour",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "hour", "team_id", "channel", name=op.f("pk_report_inbound_hour")
        ),
    )
    op.create_table(
        "report_fact_dirty",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_report_fact_dirty")),
    )
    op.create_table(
        "report_fact_team_dirty",
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", name=op.f("pk_report_fact_team_dirty")),
    )
    op.create_table(
        "report_fact_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_fact_state")),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    backfill = (
        "INSERT INTO inbox_conversation_event (id, conversation_id, kind, at) "
        "SELECT {new_id}, c.id, 'resolved', c.resolved_at FROM inbox_conversation c "
        "WHERE c.status = 'resolved' AND c.resolved_at IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM inbox_message m WHERE m.conversation_id = c.id "
        "AND m.direction = 'inbound' AND m.created_at <= c.resolved_at)"
    )
    new_id = "gen_random_uuid()" if postgres else "lower(hex(randomblob(16)))"
    op.execute(backfill.replace("{new_id}", new_id))
    op.execute(
        "INSERT INTO report_fact_dirty (conversation_id, version) "
        "SELECT DISTINCT conversation_id, 1 FROM inbox_message WHERE direction = 'inbound'"
    )
    for statement in PG_TRIGGERS if postgres else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgres else ""))
    if postgres:
        for function in ("report_mark_message", "report_mark_conversation", "report_mark_team"):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    for table in (
        "report_fact_state",
        "report_fact_team_dirty",
        "report_fact_dirty",
        "report_inbound_hour",
        "report_conversation_fact",
        "inbox_conversation_event",
    ):
        op.drop_table(table)
