"""Writes the status history (``event_models``) beside each status change."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from hub.enums import ConversationStatus
from hub.inbox.event_models import ConversationEvent, StatusEvent
from hub.inbox.models import Conversation


def record_status_change_in(
    session: AsyncSession,
    conversation: Conversation,
    before: ConversationStatus,
    at: datetime,
    staff_id: uuid.UUID | None = None,
) -> None:
    """Call after setting ``conversation.status``: a move into or out of "resolved" is
    recorded; any other move (open, pending, snoozed) is not history the reports need."""
    after = conversation.status
    if before is after:
        return
    if after is ConversationStatus.RESOLVED:
        kind = StatusEvent.RESOLVED
    elif before is ConversationStatus.RESOLVED:
        kind = StatusEvent.REOPENED
    else:
        return
    session.add(
        ConversationEvent(conversation_id=conversation.id, kind=kind, at=at, staff_id=staff_id)
    )
