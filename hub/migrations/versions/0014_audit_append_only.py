"""audit rows cannot be edited or cut from the tail on PostgreSQL

Without this, a role that can write the tables could delete the newest audit rows and rewind
``audit_head`` to the last one kept, and ``hub audit verify`` would find a consistent chain.
Triggers refuse UPDATE, DELETE and TRUNCATE on ``audit_event``, and let ``audit_head`` move
only forward, one row at a time (each append). Triggers fire for every role, the owner and
superusers included; getting past them takes a deliberate step (``ALTER TABLE ... DISABLE
TRIGGER`` as the table owner, or ``session_replication_role = replica`` as a superuser),
which is why the head is also anchored off the machine (``hub audit anchor``).

SQLite has no roles: whoever can write the file can drop any trigger, so nothing is installed
there and the external anchor is the protection.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    """
    CREATE FUNCTION audit_event_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
            USING HINT = 'audit rows can be added, never changed or removed';
    END
    $$
    """,
    """
    CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change()
    """,
    """
    CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change()
    """,
    # The head moves by exactly one per append (hub.audit.record flushes each event), so a
    # rewind, a jump or a removal is never the hub's own doing.
    """
    CREATE FUNCTION audit_head_advance_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            IF NEW.id = OLD.id AND NEW.seq = OLD.seq + 1 THEN
                RETURN NEW;
            END IF;
        END IF;
        RAISE EXCEPTION 'audit_head only moves forward one row at a time: % refused', TG_OP
            USING HINT = 'the head follows appended audit rows and is never rewound';
    END
    $$
    """,
    """
    CREATE TRIGGER audit_head_advance_only BEFORE UPDATE OR DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_head_advance_only()
    """,
    """
    CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_head_advance_only()
    """,
]

DOWNGRADE = [
    "DROP TRIGGER audit_head_no_truncate ON audit_head",
    "DROP TRIGGER audit_head_advance_only ON audit_head",
    "DROP FUNCTION audit_head_advance_only()",
    "DROP TRIGGER audit_event_no_truncate ON audit_event",
    "DROP TRIGGER audit_event_append_only ON audit_event",
    "DROP FUNCTION audit_event_refuse_change()",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in DOWNGRADE:
        op.execute(statement)
