"""The csat rollup's triggers (migration 0034) queue a survey exactly when something the
report reads of it changes: a delivery receipt or another message's status queues nothing, a
question leaving the hub queues its survey; and they never get in the way of the writes they
watch (deleting the team or the person of a queued survey)."""

# ruff: noqa: F811  (pytest passes the imported fixture by its name)
from __future__ import annotations

from sqlalchemy import delete, select, update

from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus
from hub.inbox.models import Conversation, Message, StaffUser, Team
from hub.journeys.csat_models import CsatSurvey
from hub.reports.csat import build
from hub.reports.csat_models import CsatDirty
from tests.test_csat_report import HISTORY, World, filters, world  # noqa: F401
from tests.test_csat_rollup import ZONE, agree, refresh, set_zone


async def queue_of(db: Database) -> list[tuple[object, int]]:
    async with db.reader() as session:
        return [
            (r[0], r[1])
            for r in await session.execute(select(CsatDirty.item_id, CsatDirty.version))
        ]


async def test_only_what_the_report_reads_queues_a_survey(
    db: Database, ring: KeyRing, world: World
) -> None:
    await set_zone(db, ZONE)
    await refresh(db)
    assert await queue_of(db) == []
    held, read = HISTORY[5], HISTORY[8]
    async with db.transaction() as session:
        question = await session.scalar(
            select(Message.id).where(Message.conversation_id == world.conversations[read])
        )
        await session.execute(
            update(Message).where(Message.id == question).values(status=MessageStatus.DELIVERED)
        )
        # A message that is no survey's question, sent and delivered.
        other = Message(
            conversation_id=world.conversations[held],
            direction=Direction.OUTBOUND,
            channel=Channel.SMS,
            status=MessageStatus.QUEUED,
        )
        other.seal(ring, "body", "Your appointment is tomorrow at 9")
        session.add(other)
        await session.flush()
        for status in (MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.DELIVERED):
            other.status = status
            await session.flush()
    assert await queue_of(db) == []
    async with db.transaction() as session:
        survey = await session.scalar(
            select(CsatSurvey.id).where(CsatSurvey.conversation_id == world.conversations[held])
        )
        await session.execute(
            update(Message)
            .where(Message.conversation_id == world.conversations[held], Message.id != other.id)
            .values(status=MessageStatus.SENDING)
        )
    assert [s for s, _v in await queue_of(db)] == [survey]
    await agree(db, world)
    await refresh(db)
    assert await queue_of(db) == []


async def test_deleting_the_team_or_person_of_a_survey_succeeds(
    db: Database, ring: KeyRing, world: World
) -> None:
    await set_zone(db, ZONE)
    await refresh(db)
    ben, south = world.staff["ben"].staff_id, world.teams["South"]
    async with db.transaction() as session:
        await session.execute(delete(StaffUser).where(StaffUser.id == ben))
    async with db.transaction() as session:
        await session.execute(delete(Team).where(Team.id == south))
    async with db.reader() as session:
        touched = set(
            await session.scalars(
                select(CsatSurvey.id).where(
                    (CsatSurvey.agent_id.is_(None)) | (CsatSurvey.team_id.is_(None))
                )
            )
        )
        resolved = await session.scalar(
            select(Conversation.status).where(Conversation.id == world.conversations[HISTORY[4]])
        )
    assert resolved is ConversationStatus.RESOLVED
    assert touched and {s for s, _v in await queue_of(db)} == touched  # each queued once
    report = await build(db, filters(), world.staff["admin"], ring=ring)
    await refresh(db)
    assert await queue_of(db) == []
    assert (await build(db, filters(), world.staff["admin"], ring=ring)).figures == report.figures
    by_agent = {row[1] for row in report.tables[1].rows}
    assert "(no longer on staff)" in by_agent
