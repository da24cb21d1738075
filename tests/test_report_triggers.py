"""The rollups' queue triggers never get in the way of the writes they watch: deleting a team
or a staff member sets their conversations' team or assignee to NULL through the foreign key,
which fires the conversation trigger for a conversation that may already be queued."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus
from hub.inbox.models import Conversation, Message, StaffUser, Team
from hub.reports.models import FactDirty
from tests.conftest import make_staff
from tests.test_routing import make_patient, make_team


async def test_deleting_a_team_or_a_person_of_a_queued_conversation_succeeds(
    db: Database, ring: KeyRing
) -> None:
    async with db.transaction() as session:
        team = await make_team(session, "Short-lived team")
    staff = await make_staff(
        db, "leaving.agent@demo-clinic.example.org", role="agent", teams=(team.name,)
    )
    async with db.transaction() as session:
        patient = await make_patient(session, ring, name="Trigger Sample")
        conversation = Conversation(
            patient_id=patient.id,
            channel=Channel.SMS,
            status=ConversationStatus.OPEN,
            team_id=team.id,
            assignee_id=staff.staff_id,
        )
        session.add(conversation)
        await session.flush()
        message = Message(
            conversation_id=conversation.id,
            direction=Direction.INBOUND,
            channel=Channel.SMS,
            status=MessageStatus.RECEIVED,
        )
        message.seal(ring, "body", "hello")
        session.add(message)
    async with db.reader() as session:
        queued = select(func.count()).where(FactDirty.conversation_id == conversation.id)
        assert await session.scalar(queued) == 1  # the message queued it
    async with db.transaction() as session:
        await session.execute(delete(StaffUser).where(StaffUser.id == staff.staff_id))
    async with db.transaction() as session:
        await session.execute(delete(Team).where(Team.id == team.id))
    async with db.reader() as session:
        found = await session.get(Conversation, conversation.id)
        assert found is not None and found.team_id is None and found.assignee_id is None
        assert await session.scalar(queued) == 1  # still queued once, not twice
