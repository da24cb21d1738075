"""inbox reports from a day rollup: figures per clinic-local day and month

The Response times and Volume reports read one row per conversation in the period (0.9 s
and 8.5 s for 30 and 365 days at a million conversations). They now read
``report_inbox_day``: the counts and packed wait histograms of the conversations opened or
first resolved per clinic-local day and month, channel, team and assignee (and each of those
as "every"), kept by the tick from each fact's old and new share.

A fact now keeps the clinic-local day it was first resolved on (``resolved_day``), so its
share is taken out of the day it was counted in even after the clinic's zone changed. The
missed targets still waiting depend on now: a partial index finds those facts.

The rollup is filled here from the existing facts, one pass over them (the same arithmetic
as the tick, ``hub.reports.rollup``), written in bulk.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-07
"""

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

from hub.db import UTCDateTime
from hub.reports.rollup import shares
from hub.reports.rollup_queries import SHARE_COLUMNS, is_empty, row_values

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FACTS = "report_conversation_fact"
WAITING = "wait_end_at IS NULL AND due_at IS NOT NULL"
CHUNK = 1000


def _facts() -> sa.TableClause:
    """The facts as this revision knows them, typed so the arithmetic is the tick's own."""
    types: dict[str, sa.types.TypeEngine[Any]] = {
        "conversation_id": sa.Uuid(),
        "team_id": sa.Uuid(),
        "assignee_id": sa.Uuid(),
        "opened_day": sa.Date(),
        "resolved_day": sa.Date(),
        "resolved_at": UTCDateTime(),
        "due_at": UTCDateTime(),
        "wait_end_at": UTCDateTime(),
        "reopened": sa.Boolean(),
    }
    names = ("conversation_id", *SHARE_COLUMNS)
    return sa.table(FACTS, *[sa.column(c, types.get(c)) for c in names])


def _fill_resolved_day(bind: sa.Connection, zone: str) -> None:
    if bind.dialect.name == "postgresql":
        op.execute(
            sa.text(
                f"UPDATE {FACTS} SET resolved_day = (resolved_at AT TIME ZONE :zone)::date "  # noqa: S608
                "WHERE resolved_at IS NOT NULL"
            ).bindparams(zone=zone)
        )
        return
    # SQLite has no time zones: a single machine's facts, converted here.
    tz = ZoneInfo(zone)
    facts = _facts()
    rows = bind.execute(
        sa.select(facts.c.conversation_id, facts.c.resolved_at).where(
            facts.c.resolved_at.is_not(None)
        )
    ).all()
    changes = [{"cid": cid, "day": at.astimezone(tz).date()} for cid, at in rows]
    if changes:
        bind.execute(
            facts.update()
            .where(facts.c.conversation_id == sa.bindparam("cid"))
            .values(resolved_day=sa.bindparam("day")),
            changes,
        )


def upgrade() -> None:
    op.add_column(FACTS, sa.Column("resolved_day", sa.Date(), nullable=True))
    op.create_index(
        "ix_report_conversation_fact_waiting",
        FACTS,
        ["due_at"],
        postgresql_include=["opened_at", "channel", "team_id", "assignee_id"],
        postgresql_where=sa.text(WAITING),
        sqlite_where=sa.text(WAITING),
    )
    day = op.create_table(
        "report_inbox_day",
        sa.Column("grain", sa.String(1), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("team_id", sa.Uuid(), primary_key=True),
        sa.Column("assignee_id", sa.Uuid(), primary_key=True),
        *[
            sa.Column(name, sa.Integer(), nullable=False)
            for name in (
                "opened",
                "measured",
                "unanswered_open",
                "closed_unanswered",
                "with_due",
                "settled_breaches",
                "resolved",
                "reopened",
            )
        ],
        *[
            sa.Column(name, sa.LargeBinary(), nullable=False)
            for name in ("first_response", "first_response_bh", "resolution", "resolution_bh")
        ],
    )
    op.create_index(
        "ix_report_inbox_day_key",
        "report_inbox_day",
        ["channel", "team_id", "assignee_id", "grain", "day"],
    )
    bind = op.get_bind()
    zone = bind.execute(sa.text("SELECT time_zone FROM report_fact_state WHERE id = 1")).scalar()
    if zone is None:
        return  # never built: the first refresh counts everything
    _fill_resolved_day(bind, zone)
    facts = _facts()
    typed = sa.select(*[facts.c[c] for c in SHARE_COLUMNS])
    acc = shares(dict(r._mapping) for r in bind.execute(typed))
    rows = [row_values(k, c, None) for k, c in acc.items()]
    rows = [r for r in rows if not is_empty(r)]
    for i in range(0, len(rows), CHUNK):
        op.bulk_insert(day, rows[i : i + CHUNK])


def downgrade() -> None:
    op.drop_index("ix_report_inbox_day_key", table_name="report_inbox_day")
    op.drop_table("report_inbox_day")
    op.drop_index("ix_report_conversation_fact_waiting", table_name=FACTS)
    with op.batch_alter_table(FACTS) as batch:
        batch.drop_column("resolved_day")
