"""Calls into the inbox: voicemails (recording, then transcript) and keypresses.

A voicemail is one message per RecordingSid. Twilio reports it up to three times, in no fixed
order: the ``<Record>`` action (with the caller's number), the recording status callback (the
file can be fetched now), the transcription. Each is keyed in ``channel_inbound_event``, so a
repeat changes nothing and each finds what the others left. A keypress on a reminder call is
stored as a short message and goes through the journey reply handling like an SMS "1" or "2";
the step's answer is read out on the call instead of placing a second one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.channels.twilio_voice.events import (
    PROVIDER,
    RecordingEvent,
    TranscriptionEvent,
    parse_transcription,
)
from hub.consent import actions as consent
from hub.consent.models import ConsentSource
from hub.crypto import KeyRing, associated_data
from hub.db import Database, new_id, utcnow
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus, Priority
from hub.inbox import queries, voice_queries
from hub.inbox.actions.delivery import message_new_effect
from hub.inbox.actions.intake import REOPEN_WINDOW, patient_for_phone
from hub.inbox.actions.patients import FIRST_RESPONSE_TARGETS
from hub.inbox.actions.tags import add_conversation_tags_in
from hub.inbox.event_queries import record_status_change_in
from hub.inbox.models import (
    Attachment,
    AttachmentState,
    Conversation,
    InboundEvent,
    Message,
    Patient,
)
from hub.outbox import OutboxEvent, add_effect
from hub.routing import actions as routing
from hub.routing import queries as routing_queries
from hub.routing.hours import HoursInvalid, is_open
from hub.routing.triage import find_urgent_phrase

RECORDING_TYPE = "audio/mpeg"
"""Recordings are fetched as MP3 (see ``RecordingEvent.media_url``)."""
RECORDING_NAME = "voicemail.mp3"
AWAITING_TRANSCRIPT = "Voicemail ({seconds} s). The transcript follows when Twilio has it."
UNTRANSCRIBED = "Voicemail. Twilio could not transcribe it: listen to the recording."
SPOKEN_NOTE = "read out to the patient during their call"
MACHINE_NOTE = "answered by a machine: left the clinic's name and call-back number only"
OUTBOUND = Direction.OUTBOUND
KEYPRESS_DIGITS = {"1": "confirm", "2": "cancel", "9": "opt_out"}
"""Keys a reminder call or the appointment menu acts on (the prompts say which)."""


@dataclass(frozen=True)
class VoicemailResult:
    message_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    effect_ids: tuple[uuid.UUID, ...]
    created: bool = False
    assign_to_staff_id: uuid.UUID | None = None


@dataclass(frozen=True)
class KeypressResult:
    kind: str
    """"confirm", "cancel", "opt_out", or "noted" (stored for staff, no journey answered)."""
    spoken: str | None
    """The step's reply template, to read out on the call (None: the built-in sentence)."""
    language: str | None
    effect_ids: tuple[uuid.UUID, ...]
    duplicate: bool = False


@dataclass(frozen=True)
class CallScript:
    script: str
    automated: bool
    """Not written by a person now (a journey step): takes keys, offers the opt-out."""
    language: str | None


def _event_row(ring: KeyRing, key: str, raw: Mapping[str, str]) -> dict[str, object]:
    event_id = new_id()
    payload = json.dumps(dict(raw), sort_keys=True).encode()
    aad = associated_data(InboundEvent.__tablename__, "payload_enc", event_id)
    return {
        "id": event_id,
        "provider": PROVIDER,
        "provider_event_id": key,
        "payload_enc": ring.encrypt(payload, aad),
        "received_at": utcnow(),
    }


async def do_clinic_open(db: Database, at: datetime) -> bool:
    """Whether the default team is open, for the greeting. No team or unreadable hours count
    as open, as in routing: better no "we are closed" than a wrong one."""
    async with db.reader() as session:
        team = await routing_queries.default_team(session)
    if team is None:
        return True
    try:
        return is_open(team.business_hours, team.holidays, team.time_zone, at)
    except HoursInvalid:
        return True


async def _open_confirmation(
    session: AsyncSession, patient_id: uuid.UUID, now: datetime
) -> tuple[uuid.UUID, str] | None:
    """(enrollment, step) of the question a "1" or "2" from this patient would answer, when
    that question is a confirmation (a survey would read the key as a score)."""
    from hub.journeys.answers import open_ask

    ask = await open_ask(session, patient_id, now)
    if ask is None or ask.step.expecting != "confirmation":
        return None
    return ask.enrollment.id, ask.step.id


async def do_caller_has_open_confirmation(
    db: Database, ring: KeyRing, caller: str | None, now: datetime
) -> bool:
    if caller is None:
        return False
    async with db.reader() as session:
        matches = await queries.patients_by_phone_index(session, ring.blind_index("phone", caller))
        return bool(matches) and await _open_confirmation(session, matches[0].id, now) is not None


async def do_call_script(
    db: Database, ring: KeyRing, message_id: uuid.UUID, *, machine: bool
) -> CallScript | None:
    """The script of an outbound call's message; None for a message that is not a call."""
    async with db.transaction() as session:
        message = await session.get(Message, message_id)
        if message is None or (message.direction, message.channel) != (OUTBOUND, Channel.VOICE):
            return None
        conversation = await session.get(Conversation, message.conversation_id)
        assert conversation is not None
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None
        if machine and MACHINE_NOTE not in message.delivery_notes:
            message.delivery_notes = [*message.delivery_notes, MACHINE_NOTE]
        return CallScript(
            message.unseal(ring, "body") or "", message.author_id is None, patient.language
        )


async def _voice_conversation(
    session: AsyncSession, patient: Patient, to_address: str | None, now: datetime
) -> Conversation:
    """The patient's voice conversation to add a call's message to, reopened (as for texts)
    or new; marked open, with the inbound time."""
    conversation = await queries.latest_conversation_of(session, patient.id, Channel.VOICE)
    if (
        conversation is not None
        and conversation.status is ConversationStatus.RESOLVED
        and (conversation.resolved_at is None or now - conversation.resolved_at > REOPEN_WINDOW)
    ):
        conversation = None
    if conversation is None:
        conversation = Conversation(
            patient_id=patient.id,
            channel=Channel.VOICE,
            channel_address=to_address or None,
            status=ConversationStatus.OPEN,
            priority=Priority.NORMAL,
            created_at=now,
            first_response_due_at=now + FIRST_RESPONSE_TARGETS[Priority.NORMAL],
        )
        session.add(conversation)
    _reopen(session, conversation, now)
    if to_address:
        conversation.channel_address = to_address
    await session.flush()
    return conversation


def _reopen(session: AsyncSession, conversation: Conversation, now: datetime) -> None:
    if conversation.status is not ConversationStatus.OPEN:
        before = conversation.status
        conversation.status = ConversationStatus.OPEN
        conversation.snoozed_until = None
        conversation.resolved_at = None
        record_status_change_in(session, conversation, before, now)
    conversation.last_activity_at = now
    conversation.last_inbound_at = now


def _inbound(
    ring: KeyRing, conversation: Conversation, key: str, body: str, now: datetime
) -> Message:
    message = Message(
        conversation_id=conversation.id,
        direction=Direction.INBOUND,
        channel=Channel.VOICE,
        provider=PROVIDER,
        provider_message_id=key,
        status=MessageStatus.RECEIVED,
        created_at=now,
    )
    message.seal(ring, "body", body)
    return message


async def do_keypress(
    db: Database,
    ring: KeyRing,
    *,
    call_sid: str,
    digit: str,
    raw: Mapping[str, str],
    message_id: uuid.UUID | None,
    caller: str | None,
    to_address: str | None,
    clinic: Mapping[str, Any],
) -> KeypressResult:
    """A key (``KEYPRESS_DIGITS``) pressed on the reminder call of ``message_id``, or on the
    inbound appointment menu by ``caller``. Stored once per call and key."""
    kind = KEYPRESS_DIGITS[digit]
    key = f"{call_sid}/press/{digit}"
    async with db.transaction() as session:
        now = utcnow()
        row = _event_row(ring, key, raw)
        if not await queries.insert_inbound_event(session, row):
            # Said again without acting again; "noted" is true whatever the first press did.
            return KeypressResult("noted", None, None, (), duplicate=True)
        found = await _keypress_target(session, ring, message_id, caller, to_address, now)
        if found is None:
            return KeypressResult("noted", None, None, ())
        patient, conversation, run_ref, where = found
        message = _inbound(ring, conversation, key, f"Pressed {digit} on {where}.", now)
        session.add(message)
        await session.flush()
        event = await session.get(InboundEvent, row["id"])
        assert event is not None
        event.message_id = message.id
        if conversation.team_id is None:
            team = await routing_queries.default_team(session)
            conversation.team_id = team.id if team else None
        effects = [message_new_effect(session, message, conversation)]
        spoken: str | None = None
        if kind == "opt_out":
            who, evidence = f"patient:{patient.id}", f"pressed 9 on {where}"
            change = consent.ConsentChange(ConsentSource.VOICE_KEYPRESS, who, evidence, message.id)
            await consent.revoke_channel(session, patient.id, Channel.VOICE, change)
        else:
            kind, spoken, more = await _answer_journey(
                session, ring, patient, conversation, digit, message.id, run_ref, now, clinic
            )
            effects.extend(more)
        return KeypressResult(kind, spoken, patient.language, tuple(effects))


async def _keypress_target(
    session: AsyncSession,
    ring: KeyRing,
    message_id: uuid.UUID | None,
    caller: str | None,
    to_address: str | None,
    now: datetime,
) -> tuple[Patient, Conversation, tuple[uuid.UUID, str] | None, str] | None:
    """(patient, conversation, the (enrollment, step) the call asked about, where the key was
    pressed); None when the call cannot be tied to a patient."""
    if message_id is not None:
        from hub.journeys import queries as journey_queries

        call = await session.get(Message, message_id)
        if call is None or call.direction is not Direction.OUTBOUND:
            return None
        conversation = await session.get(Conversation, call.conversation_id)
        assert conversation is not None
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None
        _reopen(session, conversation, now)
        run = await journey_queries.run_of_message(session, message_id)
        ref = (run.enrollment_id, run.step_id) if run is not None else None
        return patient, conversation, ref, "the reminder call"
    bidx = ring.blind_index("phone", caller) if caller else None
    matches = await queries.patients_by_phone_index(session, bidx) if bidx else []
    if not matches:
        return None
    conversation = await _voice_conversation(session, matches[0], to_address, now)
    return matches[0], conversation, None, "the phone menu"


async def _answer_journey(
    session: AsyncSession,
    ring: KeyRing,
    patient: Patient,
    conversation: Conversation,
    digit: str,
    message_id: uuid.UUID,
    asked: tuple[uuid.UUID, str] | None,
    now: datetime,
    clinic: Mapping[str, Any],
) -> tuple[str, str | None, list[uuid.UUID]]:
    """Hand "1" or "2" to the journey reply handling, as an SMS reply would be, when the open
    question is a confirmation and (on a reminder call) the one this call asked. Text replies
    answer the newest question; a key on a call answers that call's, or nothing."""
    from hub.journeys.answers import handle_reply_in

    open_ask = await _open_confirmation(session, patient.id, now)
    if open_ask is None or (asked is not None and open_ask != asked):
        return "noted", None, []
    reply = (session, ring, patient, conversation, digit, Channel.VOICE, message_id, now)
    outcome = await handle_reply_in(*reply, clinic=clinic)
    if outcome is None:
        return "noted", None, []
    spoken, effects = await _speak_instead_of_calling(session, ring, outcome.effect_ids, now)
    return outcome.reply.kind, spoken, effects


async def _speak_instead_of_calling(
    session: AsyncSession, ring: KeyRing, effect_ids: Iterable[uuid.UUID], now: datetime
) -> tuple[str | None, list[uuid.UUID]]:
    """The reply handling queued its answer on the conversation's channel: a second call. The
    patient is still on the line, so the answer is read out there: the message is kept,
    marked delivered, and its send job (written in this transaction) is removed."""
    spoken: str | None = None
    kept: list[uuid.UUID] = []
    for effect_id in effect_ids:
        event = await session.get(OutboxEvent, effect_id)
        if event is not None and event.topic == "job:send_message":
            reply = await session.get(Message, uuid.UUID(str(event.payload["message_id"])))
            if (
                reply is not None
                and reply.channel is Channel.VOICE
                and reply.status is MessageStatus.QUEUED
            ):
                spoken = reply.unseal(ring, "body")
                reply.status = MessageStatus.DELIVERED
                reply.sent_at = reply.delivered_at = now
                reply.delivery_notes = [*reply.delivery_notes, SPOKEN_NOTE]
                await session.delete(event)
                continue
        kept.append(effect_id)
    return spoken, kept


async def do_record_voicemail(
    db: Database,
    ring: KeyRing,
    event: RecordingEvent,
    raw: Mapping[str, str],
    *,
    clinic_name: str,
) -> VoicemailResult:
    """The ``<Record>`` action (``event.status`` None) or the recording status callback.
    Empty recordings store nothing at all."""
    if event.empty or (event.status is not None and not event.available):
        return VoicemailResult(None, None, ())
    async with db.transaction() as session:
        now = utcnow()
        sid = event.recording_sid
        inserted = await queries.insert_inbound_event(session, _event_row(ring, sid, raw))
        row = await voice_queries.inbound_event_for_update(session, PROVIDER, sid)
        assert row is not None
        if event.status is not None:
            # The file is ready. Before the action, the row just says so (the action fetches).
            if inserted or row.message_id is None:
                return VoicemailResult(None, None, ())
            return VoicemailResult(row.message_id, None, tuple(await _fetch(session, row)))
        if row.message_id is not None:
            return VoicemailResult(row.message_id, None, ())  # a repeated action
        ready = not inserted  # the status callback came first and left the row
        return await _new_voicemail(session, ring, event, row, ready, clinic_name, now)


async def _fetch(session: AsyncSession, row: InboundEvent) -> list[uuid.UUID]:
    assert row.message_id is not None
    found = await queries.attachments_of(session, [row.message_id])
    return [
        add_effect(session, "job:fetch_media", {"attachment_id": str(att.id)}).id
        for att in found.get(row.message_id, [])
        if att.state is AttachmentState.PENDING
    ]


async def _new_voicemail(
    session: AsyncSession,
    ring: KeyRing,
    event: RecordingEvent,
    row: InboundEvent,
    ready: bool,
    clinic_name: str,
    now: datetime,
) -> VoicemailResult:
    if event.from_address is not None:
        patient, new_patient = await patient_for_phone(session, ring, event.from_address)
    else:
        # A withheld number: the message still reaches staff, from an unknown caller.
        patient = Patient(verified=False)
        session.add(patient)
        await session.flush()
        new_patient = True
    conversation = await _voice_conversation(session, patient, event.to_address, now)
    # The caller heard the after-hours greeting on the call; a call back saying it again
    # would only be noise.
    conversation.after_hours_replied_at = conversation.after_hours_replied_at or now
    body = AWAITING_TRANSCRIPT.format(seconds=event.duration_s)
    message = _inbound(ring, conversation, event.recording_sid, body, now)
    session.add(message)
    await session.flush()
    row.message_id = message.id
    attachment = Attachment(
        message_id=message.id,
        state=AttachmentState.PENDING,
        source_url=event.media_url,
        content_type=RECORDING_TYPE,
        size_bytes=0,
        created_at=now,
    )
    attachment.seal(ring, "filename", RECORDING_NAME)
    session.add(attachment)
    await session.flush()
    effects = await _fetch(session, row) if ready else []
    transcript = await queries.inbound_event(session, PROVIDER, f"{event.recording_sid}/transcript")
    if transcript is not None:
        raw = json.loads(transcript.unseal_bytes(ring, "payload") or b"{}")
        early = parse_transcription(raw, account_sid=None)
        effects += await _apply_transcript(session, ring, message, conversation, early, now)
    routed = await routing.apply_routing(
        session,
        ring,
        patient=patient,
        conversation=conversation,
        message_body="",
        channel=Channel.VOICE,
        is_new_patient=new_patient,
        clinic_name=clinic_name,
        now=now,
    )
    effects += routed.effect_ids
    effects.append(message_new_effect(session, message, conversation))
    assign = routed.assign_to_staff_id
    return VoicemailResult(message.id, conversation.id, tuple(effects), True, assign)


async def do_record_transcription(
    db: Database, ring: KeyRing, event: TranscriptionEvent, raw: Mapping[str, str]
) -> tuple[uuid.UUID, ...]:
    """The transcript becomes the voicemail's text (encrypted). Before the voicemail exists it
    waits in its event row, and the voicemail applies it when it is made."""
    async with db.transaction() as session:
        key = f"{event.recording_sid}/transcript"
        if not await queries.insert_inbound_event(session, _event_row(ring, key, raw)):
            return ()
        row = await voice_queries.inbound_event_for_update(session, PROVIDER, event.recording_sid)
        if row is None or row.message_id is None:
            return ()
        message = await session.get(Message, row.message_id)
        assert message is not None
        conversation = await session.get(Conversation, message.conversation_id)
        assert conversation is not None
        return tuple(await _apply_transcript(session, ring, message, conversation, event, utcnow()))


async def _apply_transcript(
    session: AsyncSession,
    ring: KeyRing,
    message: Message,
    conversation: Conversation,
    event: TranscriptionEvent,
    now: datetime,
) -> list[uuid.UUID]:
    text = event.text if event.status == "completed" and event.text else None
    message.seal(ring, "body", text or UNTRANSCRIBED)
    ids = {"message_id": str(message.id), "conversation_id": str(conversation.id)}
    effects = [add_effect(session, "notify:message:updated", ids).id]
    phrases = await routing_queries.triage_phrases(session, enabled_only=True)
    if text is not None and find_urgent_phrase(text, [p.phrase for p in phrases]):
        # Triage as for a text, but no emergency reply: the menu the caller went through
        # already told them to hang up and dial the emergency number, and a reply here
        # would be another call.
        conversation.priority = Priority.URGENT
        due = now + FIRST_RESPONSE_TARGETS[Priority.URGENT]
        current = conversation.first_response_due_at
        if conversation.first_responded_at is not None or current is None or due < current:
            conversation.first_response_due_at = due
        added = await add_conversation_tags_in(session, ring, conversation.id, [routing.URGENT_TAG])
        conversation.last_activity_at = now
        payload = {
            "conversation_id": str(conversation.id),
            "team_id": str(conversation.team_id) if conversation.team_id else None,
            "priority": conversation.priority.value,
            "tags_changed": bool(added),
        }
        effects.append(add_effect(session, "notify:conversation:updated", payload).id)
    return effects
