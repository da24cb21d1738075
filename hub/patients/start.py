"""Staff start a conversation with a patient (from the patient's page or a search result):
through the consent gate for care, on a channel the reply box would offer, in the starter's
team and assigned to them, waiting on the patient."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass

from hub.audit import record
from hub.consent import actions as consent
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import Purpose
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, ConversationStatus, Priority
from hub.inbox import search_queries
from hub.inbox.access import StaffContext
from hub.inbox.actions.conversations import CHANNEL_NOT_CONNECTED
from hub.inbox.actions.delivery import queue_outbound
from hub.inbox.actions.intake import REOPEN_WINDOW
from hub.inbox.event_queries import record_status_change_in
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, Patient
from hub.patients.exceptions import NotAllowed, PatientConflict

MAX_FIRST_MESSAGE_CHARS = 1600
"""Longest first message: what one SMS body may carry (Twilio splits it into segments); the
reply box's own per-channel check applies to the answers that follow."""


@dataclass(frozen=True)
class Started:
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    continued: bool
    """An unresolved (or recently resolved) conversation on that channel took the message."""
    effect_ids: tuple[uuid.UUID, ...]


async def do_start_conversation(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    patient_id: uuid.UUID,
    channel: Channel,
    body: str,
    *,
    connected: Collection[Channel],
) -> Started:
    """Queue ``body`` to the patient on ``channel``. Refused with the gate's reason
    (ConsentRefused) before anything is written when consent does not allow it; ValueError for
    an empty or too long text or a channel the hub has no connection for."""
    body = body.strip()
    if not body:
        raise ValueError("a message needs some text")
    if len(body) > MAX_FIRST_MESSAGE_CHARS:
        raise ValueError(f"a message can be at most {MAX_FIRST_MESSAGE_CHARS} characters")
    if channel not in connected:
        raise ValueError(CHANNEL_NOT_CONNECTED.get(channel, f"{channel.value} is not set up"))
    async with db.transaction() as session:
        patient = await session.get(Patient, patient_id)
        if patient is None:
            raise NotFound("no such patient")
        if patient.merged_into_id is not None:
            raise PatientConflict(
                "this record was merged into another patient: write from that patient's page"
            )
        team = await search_queries.starting_team(session, () if ctx.is_admin else ctx.team_ids)
        if team is None and not ctx.is_admin:
            raise NotAllowed(
                "you are in no team, so a conversation you start would have no one to see it: "
                "ask an admin to add you to a team"
            )
        decision = await consent.may_send(session, patient, channel, Purpose.CARE)
        if not decision.allowed:
            raise ConsentRefused(decision.reason, code=decision.code)
        now = utcnow()
        conversation = await search_queries.latest_conversation_on(
            session, patient.id, channel, ctx.visible_filter()
        )
        if (
            conversation is not None
            and conversation.status is ConversationStatus.RESOLVED
            and (conversation.resolved_at is None or now - conversation.resolved_at > REOPEN_WINDOW)
        ):
            conversation = None  # the intake's rule: an old thread is not reopened
        continued = conversation is not None
        if conversation is None:
            conversation = Conversation(
                patient_id=patient.id,
                channel=channel,
                team_id=team.id if team else None,
                priority=Priority.NORMAL,
                created_at=now,
            )
            session.add(conversation)
        if conversation.status is not ConversationStatus.OPEN:
            # Staff wrote first: the conversation waits on the patient, with the starter.
            before = conversation.status
            conversation.status = ConversationStatus.PENDING
            conversation.snoozed_until = conversation.resolved_at = None
            record_status_change_in(session, conversation, before, now, ctx.staff_id)
        if conversation.assignee_id is None:
            conversation.assignee_id, conversation.assigned_at = ctx.staff_id, now
        conversation.first_responded_at = conversation.first_responded_at or now
        await session.flush()
        message, effects = await queue_outbound(
            session,
            ring,
            conversation,
            body,
            decision,
            author_id=ctx.staff_id,
            purpose=Purpose.CARE,
            urgent=True,
            channel=channel,
        )
        await record(
            session,
            ctx.actor,
            "conversation.start" if not continued else "message.create",
            "conversation",
            conversation.id,
            {"patient": str(patient.id), "message": str(message.id), "channel": channel.value},
        )
    return Started(conversation.id, message.id, continued, tuple(effects))
