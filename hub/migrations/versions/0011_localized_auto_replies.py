"""teams' after-hours replies per language, with a switch

A team had one after-hours text, sent in that language to every patient. Now a team keeps a
text per language (``after_hours_replies``: {"en": ..., "es": ...}) and a switch
(``after_hours_enabled``); a patient whose language has no custom text gets the seeded
``after_hours`` template in their language. An existing text becomes the team's text for the
clinic's default language (en), and the switch is on where a text was set.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_LOCALE = "en"

team = sa.table(
    "inbox_team",
    sa.column("id", sa.Uuid()),
    sa.column("after_hours_reply", sa.Text()),
    sa.column("after_hours_replies", sa.JSON()),
    sa.column("after_hours_enabled", sa.Boolean()),
)


def upgrade() -> None:
    with op.batch_alter_table("inbox_team") as batch:
        batch.add_column(
            sa.Column("after_hours_replies", sa.JSON(), nullable=False, server_default="{}")
        )
        batch.add_column(
            sa.Column(
                "after_hours_enabled", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(team.c.id, team.c.after_hours_reply).where(team.c.after_hours_reply.is_not(None))
    ).all()
    for team_id, text in rows:
        conn.execute(
            team.update()
            .where(team.c.id == team_id)
            .values(after_hours_replies={DEFAULT_LOCALE: text}, after_hours_enabled=True)
        )
    with op.batch_alter_table("inbox_team") as batch:
        batch.drop_column("after_hours_reply")


def downgrade() -> None:
    with op.batch_alter_table("inbox_team") as batch:
        batch.add_column(sa.Column("after_hours_reply", sa.Text(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(team.c.id, team.c.after_hours_replies, team.c.after_hours_enabled)
    ).all()
    for team_id, texts, enabled in rows:
        texts = json.loads(texts) if isinstance(texts, str) else (texts or {})
        text = texts.get(DEFAULT_LOCALE) or next(iter(texts.values()), None)
        if enabled and text:
            conn.execute(team.update().where(team.c.id == team_id).values(after_hours_reply=text))
    with op.batch_alter_table("inbox_team") as batch:
        batch.drop_column("after_hours_replies")
        batch.drop_column("after_hours_enabled")
