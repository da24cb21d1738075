"""What staff do to a conversation: open it, write notes, change status, priority and tags.
Every action checks ``StaffContext.can_see`` and answers NotFound otherwise."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import record
from hub.consent import actions as consent
from hub.consent import queries as consent_queries
from hub.consent.models import RECORDED_PURPOSES, ConsentRecord, ConsentState, Purpose
from hub.consent.policy import decide
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import RECEIVE_ONLY, Channel, ConversationStatus, Direction, Priority
from hub.inbox import queries
from hub.inbox.access import StaffContext
from hub.inbox.actions import mentions
from hub.inbox.actions.tags import (
    set_conversation_tags_in,
    tags_of_conversation_in,
    tags_of_patient_in,
)
from hub.inbox.denials import note_denied
from hub.inbox.event_queries import record_status_change_in
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, Message, Note, Patient
from hub.inbox.schemas import (
    AttachmentView,
    ChannelOption,
    ConversationView,
    JourneyLine,
    MessageView,
    NoteView,
    PatientCard,
)
from hub.outbox import add_effect

DEFAULT_MAX_NOTE_CHARS = 10_000
"""Longest internal note: a few pages of handover text. Without a cap one paste could store
megabytes that every later view of the conversation decrypts and sends."""
DEFAULT_CONNECTED = frozenset({Channel.SMS})
"""Channels offered when the caller does not say (the web app passes what is configured)."""
CHANNEL_NOT_CONNECTED = {
    Channel.EMAIL: "email is not set up on this hub (HUB_SMTP_URL, HUB_EMAIL_FROM)",
    Channel.VOICE: "voice calls are not connected yet",
    Channel.CHAT: "web chat is not connected yet",
    **RECEIVE_ONLY,
}


def reply_channel_of(conversation: Conversation, messages: Sequence[Message]) -> Channel:
    """Where a reply goes unless staff pick another channel: the one the patient last wrote on
    in this conversation (a chat that continues a texted thread is answered in the chat),
    else the conversation's own. Never a channel the hub chose for lack of consent."""
    for message in reversed(messages):
        if message.direction is Direction.INBOUND:
            return message.channel
    return conversation.channel


async def visible_conversation(
    session: AsyncSession, ctx: StaffContext, conversation_id: uuid.UUID, *, lock: bool = False
) -> Conversation:
    stmt = select(Conversation).where(Conversation.id == conversation_id)
    if lock:
        stmt = stmt.with_for_update()
    conversation = (await session.scalars(stmt)).first()
    if conversation is None or not ctx.can_see(conversation):
        if conversation is not None:
            note_denied(ctx.actor, "conversation", conversation_id)
        raise NotFound("no such conversation")
    return conversation


def _event(conversation: Conversation, **extra: object) -> dict[str, object]:
    return {
        "conversation_id": str(conversation.id),
        "team_id": str(conversation.team_id) if conversation.team_id else None,
        **extra,
    }


async def channel_options(
    session: AsyncSession,
    patient: Patient,
    connected: Collection[Channel],
    latest: dict[Channel, dict[Purpose, ConsentRecord]] | None = None,
) -> list[ChannelOption]:
    """Whether staff can answer on each channel now (the consent gate's answer for care)."""
    policy = await consent.load_policy(session)
    if latest is None:
        latest = await _latest_by_channel(session, patient)
    now = utcnow()
    options = []
    for channel in Channel:
        if channel not in connected:
            options.append(ChannelOption(channel, False, CHANNEL_NOT_CONNECTED[channel]))
            continue
        if Purpose.CARE in policy.automated_purposes:  # caps would apply: the full gate
            decision = await consent.may_send(
                session, patient, channel, Purpose.CARE, now, policy=policy
            )
        else:  # the same pure rules over the records already loaded
            decision = decide(patient, channel, Purpose.CARE, now, latest.get(channel, {}), policy)
        # Allowed with a warning (outside the patient's send window) shows the warning.
        reason = "; ".join(decision.warnings) if decision.allowed else decision.reason
        options.append(ChannelOption(channel, decision.allowed, reason or None))
    return options


async def _latest_by_channel(
    session: AsyncSession, patient: Patient
) -> dict[Channel, dict[Purpose, ConsentRecord]]:
    """The newest consent record per channel and purpose, in one query (the card and the
    channel options both need them on every conversation opened)."""
    found = await consent_queries.latest_records_of(session, [patient.id])
    return {channel: found.get((patient.id, channel), {}) for channel in Channel}


async def patient_card(
    session: AsyncSession,
    ring: KeyRing,
    patient: Patient,
    connected: Collection[Channel] = DEFAULT_CONNECTED,
) -> PatientCard:
    latest = await _latest_by_channel(session, patient)
    consent_states = {
        channel.value: {
            p.value: (records[p].state.value if p in records else ConsentState.UNKNOWN.value)
            for p in RECORDED_PURPOSES
        }
        for channel, records in latest.items()
    }
    return PatientCard(
        id=patient.id,
        name=patient.unseal(ring, "name"),
        phone=patient.unseal(ring, "phone"),
        email=patient.unseal(ring, "email"),
        language=patient.language,
        time_zone=patient.time_zone,
        channel_order=list(patient.channel_order),
        tags=await tags_of_patient_in(session, ring, patient.id),
        verified=patient.verified,
        unreachable=dict(patient.unreachable),
        consent=consent_states,
        channels=await channel_options(session, patient, connected, latest),
        journeys=await _journey_lines(session, patient.id),
    )


async def _journey_lines(session: AsyncSession, patient_id: uuid.UUID) -> list[JourneyLine]:
    # Imported here: journeys send through the inbox package, so it cannot import them first.
    from hub.journeys.queries import patient_enrollments

    return [
        JourneyLine(name, status, start, confirmed is not None, due)
        for name, status, start, confirmed, due in await patient_enrollments(session, patient_id)
    ]


async def do_open_conversation(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    conversation_id: uuid.UUID,
    connected: Collection[Channel] = DEFAULT_CONNECTED,
) -> ConversationView:
    """The whole thread, notes and patient card; audited, and marks it read for this person."""
    async with db.transaction() as session:
        conversation = await visible_conversation(session, ctx, conversation_id)
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None
        messages = await queries.messages_of(session, conversation_id)
        attachments = await queries.attachments_of(session, [m.id for m in messages])
        notes = await queries.notes_of(session, conversation_id)
        authors = await queries.staff_names(
            session, {n.author_id for n in notes} | {m.author_id for m in messages}
        )
        view = ConversationView(
            id=conversation.id,
            status=conversation.status,
            priority=conversation.priority,
            channel=conversation.channel,
            team_id=conversation.team_id,
            assignee_id=conversation.assignee_id,
            tags=await tags_of_conversation_in(session, ring, conversation.id),
            created_at=conversation.created_at,
            last_activity_at=conversation.last_activity_at,
            first_response_due_at=conversation.first_response_due_at,
            first_responded_at=conversation.first_responded_at,
            snoozed_until=conversation.snoozed_until,
            reply_channel=reply_channel_of(conversation, messages),
            messages=[
                MessageView.of(
                    ring,
                    m,
                    authors.get(m.author_id),
                    [AttachmentView.of(ring, a) for a in attachments.get(m.id, [])],
                )
                for m in messages
            ],
            notes=[
                NoteView(n.id, n.unseal(ring, "body") or "", authors.get(n.author_id), n.created_at)
                for n in notes
            ],
            patient=await patient_card(session, ring, patient, connected),
        )
        now = utcnow()
        await queries.mark_read(session, ctx.staff_id, conversation_id, now)
        await mentions.mark_conversation_mentions_read_in(
            session, ctx.staff_id, conversation_id, now
        )
        await record(
            session,
            ctx.actor,
            "conversation.read",
            "conversation",
            conversation_id,
            {"messages": len(view.messages), "notes": len(view.notes)},
        )
    return view


@dataclass(frozen=True)
class NoteResult:
    note_id: uuid.UUID
    mentioned: tuple[uuid.UUID, ...]
    effect_ids: tuple[uuid.UUID, ...]


async def do_add_note(
    db: Database, ring: KeyRing, ctx: StaffContext, conversation_id: uuid.UUID, body: str
) -> NoteResult:
    body = body.strip()
    if not body:
        raise ValueError("a note needs some text")
    if len(body) > DEFAULT_MAX_NOTE_CHARS:
        raise ValueError(
            f"a note can be at most {DEFAULT_MAX_NOTE_CHARS:,} characters; this one has "
            f"{len(body):,}: shorten it or split it into several notes"
        )
    async with db.transaction() as session:
        conversation = await visible_conversation(session, ctx, conversation_id)
        note = Note(conversation_id=conversation.id, author_id=ctx.staff_id, created_at=utcnow())
        note.seal(ring, "body", body)
        session.add(note)
        await session.flush()
        effects = [
            add_effect(session, "notify:note:new", _event(conversation, note_id=str(note.id))).id
        ]
        effects += await mentions.record_mentions_in(session, ctx, conversation, note, body)
        mentioned = [uuid.UUID(i) for i in note.mentions]
        await record(
            session,
            ctx.actor,
            "note.create",
            "conversation",
            conversation_id,
            {"note": str(note.id), "mentions": len(mentioned)},
        )
    return NoteResult(note.id, tuple(mentioned), tuple(effects))


async def do_set_status(
    db: Database,
    ctx: StaffContext,
    conversation_id: uuid.UUID,
    status: ConversationStatus,
    *,
    snoozed_until: datetime | None = None,
) -> tuple[uuid.UUID, ...]:
    now = utcnow()
    if status is ConversationStatus.SNOOZED and (snoozed_until is None or snoozed_until <= now):
        raise ValueError("snooze needs a time in the future")
    async with db.transaction() as session:
        conversation = await visible_conversation(session, ctx, conversation_id, lock=True)
        before = conversation.status
        conversation.status = status
        conversation.snoozed_until = snoozed_until if status is ConversationStatus.SNOOZED else None
        conversation.resolved_at = now if status is ConversationStatus.RESOLVED else None
        record_status_change_in(session, conversation, before, now, ctx.staff_id)
        # Imported here as _journey_lines does: journeys send through this package.
        from hub.journeys.csat import status_changed_in

        await status_changed_in(session, conversation, before, ctx.staff_id, now)
        effect = add_effect(
            session, "notify:conversation:updated", _event(conversation, status=status.value)
        )
        await record(
            session, ctx.actor, f"conversation.{status.value}", "conversation", conversation_id
        )
    return (effect.id,)


async def do_set_priority(
    db: Database, ctx: StaffContext, conversation_id: uuid.UUID, priority: Priority
) -> tuple[uuid.UUID, ...]:
    from hub.inbox.actions.patients import FIRST_RESPONSE_TARGETS

    async with db.transaction() as session:
        conversation = await visible_conversation(session, ctx, conversation_id, lock=True)
        conversation.priority = priority
        if conversation.first_responded_at is None:
            conversation.first_response_due_at = (
                conversation.created_at + FIRST_RESPONSE_TARGETS[priority]
            )
        effect = add_effect(
            session, "notify:conversation:updated", _event(conversation, priority=priority.value)
        )
        await record(
            session,
            ctx.actor,
            "conversation.priority",
            "conversation",
            conversation_id,
            {"priority": priority.value},
        )
    return (effect.id,)


async def do_set_tags(
    db: Database, ring: KeyRing, ctx: StaffContext, conversation_id: uuid.UUID, tags: list[str]
) -> tuple[uuid.UUID, ...]:
    async with db.transaction() as session:
        conversation = await visible_conversation(session, ctx, conversation_id, lock=True)
        await set_conversation_tags_in(session, ring, conversation.id, tags)
        # The event says only that tags changed: outbox rows are stored, and tags are PHI.
        effect = add_effect(
            session, "notify:conversation:updated", _event(conversation, tags_changed=True)
        )
        await record(session, ctx.actor, "conversation.tags", "conversation", conversation_id)
    return (effect.id,)


async def do_wake_snoozed(db: Database, now: datetime | None = None) -> tuple[uuid.UUID, ...]:
    """Snoozed conversations whose time has come go back to open (run by the worker's tick)."""
    now = now or utcnow()
    effects = []
    async with db.transaction() as session:
        for conversation in await queries.due_snoozed(session, now):
            conversation.status = ConversationStatus.OPEN
            conversation.snoozed_until = None
            effects.append(
                add_effect(
                    session,
                    "notify:conversation:updated",
                    _event(conversation, status="open", woke=True),
                ).id
            )
    return tuple(effects)


async def visible_patient(
    session: AsyncSession, ctx: StaffContext, patient_id: uuid.UUID
) -> Patient:
    """A patient is visible to whoever can see one of their conversations (admins: anyone)."""
    patient = await session.get(Patient, patient_id)
    if patient is None or not (
        ctx.is_admin
        or await queries.patient_has_conversation_in(session, patient_id, ctx.visible_filter())
    ):
        if patient is not None:
            note_denied(ctx.actor, "patient", patient_id)
        raise NotFound("no such patient")
    return patient


async def do_view_message(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
) -> MessageView:
    """One message of a conversation the person may see (live updates fetch these): audited
    as a read of that message, without decrypting the rest of the thread."""
    async with db.transaction() as session:
        await visible_conversation(session, ctx, conversation_id)
        message = await session.get(Message, message_id)
        if message is None or message.conversation_id != conversation_id:
            raise NotFound("no such message")
        attachments = await queries.attachments_of(session, [message.id])
        authors = await queries.staff_names(session, {message.author_id})
        view = MessageView.of(
            ring,
            message,
            authors.get(message.author_id),
            [AttachmentView.of(ring, a) for a in attachments.get(message.id, [])],
        )
        await record(
            session,
            ctx.actor,
            "message.read",
            "message",
            message_id,
            {"conversation": str(conversation_id)},
        )
    return view


async def do_view_note(
    db: Database, ring: KeyRing, ctx: StaffContext, conversation_id: uuid.UUID, note_id: uuid.UUID
) -> NoteView:
    async with db.transaction() as session:
        await visible_conversation(session, ctx, conversation_id)
        note = await session.get(Note, note_id)
        if note is None or note.conversation_id != conversation_id:
            raise NotFound("no such note")
        authors = await queries.staff_names(session, {note.author_id})
        view = NoteView(
            note.id, note.unseal(ring, "body") or "", authors.get(note.author_id), note.created_at
        )
        await record(
            session, ctx.actor, "note.read", "note", note_id, {"conversation": str(conversation_id)}
        )
    return view
