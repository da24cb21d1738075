"""Outbound messages: queue behind a consent Decision, claim exactly once, record the outcome,
and move delivery status forward only."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from hub.audit import record
from hub.channels.base import (
    FailureClass,
    FailureEffect,
    Outbound,
    SendReceipt,
    StatusUpdate,
)
from hub.consent import actions as consent
from hub.consent.exceptions import ConsentRefused
from hub.consent.models import ConsentSource, Purpose
from hub.consent.schemas import Decision, Outcome
from hub.crypto import KeyRing
from hub.db import Database, update_by_id, utcnow
from hub.enums import FAILED_STATUSES, Channel, Direction, MessageStatus, can_advance
from hub.inbox import queries
from hub.inbox.access import StaffContext
from hub.inbox.actions.email_out import email_extras
from hub.inbox.actions.outgoing import OutgoingFile, attach_in, check_reply, media_extras
from hub.inbox.models import Conversation, DeliveryAttempt, Message, Patient
from hub.outbox import add_effect

MAX_SEND_ATTEMPTS = 4
"""Hand-overs to the provider per message before a transient failure becomes final."""
RETRY_BACKOFF_FACTOR = 4
"""Each retry waits this many times longer than the one before."""
EARLY_RUN_TOLERANCE = timedelta(seconds=1)
"""RQ's scheduler keeps due times in whole seconds, so a delayed job may start up to a second
before the retry time the database holds; that counts as on time."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueuedMessage:
    message_id: uuid.UUID
    effect_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class SendTask:
    outbound: Outbound
    decision: Decision
    provider: str


@dataclass(frozen=True)
class ClaimResult:
    task: SendTask | None
    effect_ids: tuple[uuid.UUID, ...] = ()
    skipped: str | None = None
    """Why nothing is to be sent: "already claimed", "refused: ...", "not found"."""


def message_new_effect(
    session: AsyncSession, message: Message, conversation: Conversation
) -> uuid.UUID:
    """``message:new`` for the conversation's team room, after commit."""
    return add_effect(
        session,
        "notify:message:new",
        {
            "message_id": str(message.id),
            "conversation_id": str(conversation.id),
            "team_id": str(conversation.team_id) if conversation.team_id else None,
        },
    ).id


def send_job_effect(
    session: AsyncSession, message_id: uuid.UUID, *, queue: str = "default", delay_s: float = 0
) -> uuid.UUID:
    """The job that sends ``message_id``, released after commit (delayed when ``delay_s``)."""
    payload: dict[str, object] = {"message_id": str(message_id), "queue": queue}
    if delay_s > 0:
        payload["delay_s"] = delay_s
    return add_effect(session, "job:send_message", payload).id


def _status_effect(
    session: AsyncSession, message: Message, conversation: Conversation
) -> uuid.UUID:
    """``message:status`` for the conversation's team room (agents' screens show delivery)."""
    return add_effect(
        session,
        "notify:message:status",
        {
            "message_id": str(message.id),
            "conversation_id": str(conversation.id),
            "team_id": str(conversation.team_id) if conversation.team_id else None,
            "status": message.status.value,
        },
    ).id


async def queue_outbound(
    session: AsyncSession,
    ring: KeyRing,
    conversation: Conversation,
    body: str,
    decision: Decision,
    *,
    author_id: uuid.UUID | None,
    purpose: Purpose,
    urgent: bool = False,
    channel: Channel | None = None,
) -> tuple[Message, list[uuid.UUID]]:
    """Write a queued outbound message and its send job, inside the caller's transaction.
    ``channel``: another channel than the conversation's (staff answer an SMS thread by email);
    the answer comes back into this conversation by the email's reply token."""
    channel = channel or conversation.channel
    if not decision.covers(conversation.patient_id, channel):
        raise ConsentRefused(decision.reason, code=decision.code)
    now = utcnow()
    message = Message(
        conversation_id=conversation.id,
        direction=Direction.OUTBOUND,
        channel=channel,
        author_id=author_id,
        status=MessageStatus.QUEUED,
        purpose=purpose.value,
        created_at=now,
    )
    message.seal(ring, "body", body)
    session.add(message)
    conversation.last_activity_at = now
    await session.flush()
    effects = [
        send_job_effect(session, message.id, queue="urgent" if urgent else "default"),
        message_new_effect(session, message, conversation),
    ]
    return message, effects


async def do_reply(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    conversation_id: uuid.UUID,
    body: str,
    *,
    purpose: Purpose = Purpose.CARE,
    channel: Channel | None = None,
    files: Sequence[OutgoingFile] = (),
) -> QueuedMessage:
    """A staff reply, on ``channel`` when staff chose one, else on the channel the patient last
    wrote on here, else the conversation's. Refused, with the reason, when consent does not
    allow that channel: never moved to another channel by itself. Too long for the channel,
    or with files it cannot carry: refused with the reason, nothing stored."""
    from hub.inbox.actions.conversations import visible_conversation

    body = body.strip()
    check_reply(body, files, channel)
    async with db.transaction() as session:
        conversation = await visible_conversation(session, ctx, conversation_id, lock=True)
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None
        if channel is None:
            last = await queries.last_inbound_channel(session, conversation.id)
            channel = last or conversation.channel
            check_reply(body, files, channel)
        decision = await consent.may_send(session, patient, channel, purpose)
        if not decision.allowed:
            raise ConsentRefused(decision.reason, code=decision.code)
        message, effects = await queue_outbound(
            session,
            ring,
            conversation,
            body,
            decision,
            author_id=ctx.staff_id,
            purpose=purpose,
            urgent=True,
            channel=channel,
        )
        attach_in(session, ring, message, files)
        if conversation.first_responded_at is None:
            conversation.first_responded_at = message.created_at
        await record(
            session,
            ctx.actor,
            "message.create",
            "message",
            message.id,
            {"conversation": str(conversation_id)},
        )
    return QueuedMessage(message.id, tuple(effects))


async def do_claim_send(
    db: Database,
    ring: KeyRing,
    message_id: uuid.UUID,
    *,
    provider: str | Mapping[Channel, str],
    public_url: str,
    reply_domain: str | None = None,
    now: datetime | None = None,
) -> ClaimResult:
    """Take the next attempt of a queued message. Only one caller can win an attempt: the
    (message, attempt) row is unique, and the message leaves ``queued`` in the same commit."""
    try:
        async with db.transaction() as session:
            message = await queries.message_for_update(session, message_id)
            if message is None or message.direction is not Direction.OUTBOUND:
                return ClaimResult(None, skipped="not found")
            if message.status is not MessageStatus.QUEUED:
                return ClaimResult(None, skipped=f"already {message.status.value}")
            now = now or utcnow()
            if message.next_attempt_at is not None and (
                message.next_attempt_at - now > EARLY_RUN_TOLERANCE
            ):
                # Ran too early (or a duplicate): put the job back for when it is due, so the
                # message can never be left queued with nothing left to send it.
                wait = (message.next_attempt_at - now).total_seconds()
                retry = send_job_effect(session, message.id, delay_s=wait)
                return ClaimResult(None, (retry,), skipped="not due yet")
            conversation = await session.get(Conversation, message.conversation_id)
            assert conversation is not None
            patient = await session.get(Patient, conversation.patient_id)
            assert patient is not None
            # Consent may have changed since the message was queued (a STOP in between).
            decision = await consent.may_send(
                session,
                patient,
                message.channel,
                Purpose(message.purpose),
                now,
                exclude_message_id=message.id,
            )
            if decision.deferred and decision.not_before is not None:
                # Quiet hours or a frequency cap: the message waits, it is never dropped.
                message.next_attempt_at = decision.not_before
                message.error_reason = f"waiting: {decision.reason}"
                wait = (decision.not_before - now).total_seconds()
                later = send_job_effect(session, message.id, delay_s=wait)
                return ClaimResult(None, (later,), skipped=f"deferred: {decision.reason}")
            if not decision.allowed:
                message.status = MessageStatus.FAILED
                message.error_code = decision.code
                message.error_reason = decision.reason
                effect = _status_effect(session, message, conversation)
                return ClaimResult(None, (effect,), skipped=f"refused: {decision.reason}")
            if not isinstance(provider, str):
                if message.channel not in provider:
                    message.status = MessageStatus.FAILED
                    message.error_code = "channel_unavailable"
                    message.error_reason = (
                        f"the {message.channel.value} channel is not connected on this hub"
                    )
                    effect = _status_effect(session, message, conversation)
                    return ClaimResult(None, (effect,), skipped=message.error_reason)
                provider = provider[message.channel]
            attempt_no = message.send_attempts + 1
            session.add(
                DeliveryAttempt(
                    message_id=message.id,
                    attempt=attempt_no,
                    provider=provider,
                    status=MessageStatus.SENDING,
                    created_at=now,
                )
            )
            message.send_attempts = attempt_no
            message.status = MessageStatus.SENDING
            message.next_attempt_at = None
            await session.flush()
            to_address = address_of(ring, patient, message.channel)
            assert to_address is not None  # the gate refused a channel without an address
            extras = await email_extras(
                session,
                ring,
                message,
                conversation,
                reply_domain=reply_domain,
                public_url=public_url,
                now=now,
            )
            outbound = Outbound(
                message_id=message.id,
                attempt=attempt_no,
                channel=message.channel,
                to_address=to_address,
                body=message.unseal(ring, "body") or "",
                from_address=conversation.channel_address,
                status_callback_url=(
                    f"{public_url}/webhooks/twilio/status?m={message.id}&a={attempt_no}"
                    if message.channel is Channel.SMS
                    else None
                ),
                **extras,
                **await media_extras(session, ring, message, public_url=public_url, now=now),
            )
            effect = _status_effect(session, message, conversation)
    except IntegrityError:
        return ClaimResult(None, skipped="already claimed")
    return ClaimResult(SendTask(outbound, decision, provider), (effect,))


async def do_record_sent(
    db: Database, task: SendTask, receipt: SendReceipt
) -> tuple[uuid.UUID, ...]:
    return await do_record_outcomes(db, [SendOutcome(task, receipt=receipt)], retry_base_s=0)


@dataclass(frozen=True)
class SendOutcome:
    """What the provider said to one send: a receipt, or a classified failure."""

    task: SendTask
    receipt: SendReceipt | None = None
    failure: FailureClass | None = None


async def do_record_outcomes(
    db: Database, outcomes: Sequence[SendOutcome], *, retry_base_s: float
) -> tuple[uuid.UUID, ...]:
    """Record the answers to many sends in one transaction (a dispatch batch)."""
    # A lost answer is not an answer: the attempt stays claimed, and the stuck-send check asks
    # the provider before anything is sent again.
    outcomes = [o for o in outcomes if o.failure is None or not o.failure.answer_lost]
    if not outcomes:
        return ()
    ids = [o.task.outbound.message_id for o in outcomes]
    effects: list[uuid.UUID] = []
    async with db.transaction() as session:
        # Attempts before messages, each in id order: the order status callbacks lock in, so
        # a callback and a batch never wait on each other in a cycle.
        attempts = await queries.attempts_for_update(session, ids)
        messages = await queries.messages_for_update(session, ids)
        written: dict[uuid.UUID, tuple[Message | DeliveryAttempt, tuple[str, ...]]] = {}
        for outcome in outcomes:
            out = outcome.task.outbound
            message, attempt = messages[out.message_id], attempts[(out.message_id, out.attempt)]
            if outcome.receipt is not None:
                before = message.status
                _apply_receipt(message, attempt, outcome.receipt, written, utcnow())
                if message.status is not before:
                    # Staff screens showed "sending" from the claim; they follow the provider.
                    conversation = await session.get(Conversation, message.conversation_id)
                    assert conversation is not None
                    effects.append(_status_effect(session, message, conversation))
            else:
                assert outcome.failure is not None
                effects += await fail_or_retry_in(
                    session, message, attempt, outcome.failure, MessageStatus.FAILED, retry_base_s
                )
        # Receipts (nearly every outcome) go out as one UPDATE per table instead of the
        # session's per-object flush. Rows are read off the objects now, so a row that a
        # failure also changed (flushed then, or at commit) ends as the objects say.
        for model in (DeliveryAttempt, Message):
            # One UPDATE per set of columns: a message whose status moved writes more of them.
            by_columns: dict[tuple[str, ...], list[dict[str, object]]] = {}
            for obj, keys in written.values():
                if isinstance(obj, model):
                    row = {"row_id": obj.id, **{k: getattr(obj, k) for k in keys}}
                    by_columns.setdefault(keys, []).append(row)
            for rows in by_columns.values():
                await update_by_id(session, model, rows)
    return tuple(effects)


def _apply_receipt(
    message: Message,
    attempt: DeliveryAttempt,
    receipt: SendReceipt,
    written: dict[uuid.UUID, tuple[Message | DeliveryAttempt, tuple[str, ...]]],
    now: datetime,
) -> None:
    """Apply a provider's answer to the loaded objects without making them dirty, noting in
    ``written`` each object that changed and the columns to write for it in bulk (an object
    nothing changes is not written: a flush would skip it too, leaving its updated_at alone).

    The message takes the receipt's status, forward only: an SMTP relay that accepted a mail
    says "sent" and nothing else will (no callbacks; only a later bounce can fail it), so a
    message left at the claim's "sending" would stay there for ever."""

    def note(obj: Message | DeliveryAttempt, values: dict[str, object]) -> None:
        changed = False
        for key, value in values.items():
            if getattr(obj, key) != value:
                set_committed_value(obj, key, value)
                changed = True
        if changed:
            written[obj.id] = (obj, tuple(values))

    status = receipt.status if can_advance(attempt.status, receipt.status) else attempt.status
    note(attempt, {"provider_message_id": receipt.provider_message_id, "status": status})
    if message.send_attempts == attempt.attempt:
        values: dict[str, object] = {
            "provider": receipt.provider,
            "provider_message_id": receipt.provider_message_id,
            "error_code": message.error_code,
            "error_reason": message.error_reason,
        }
        if message.status is MessageStatus.SENDING:
            # A previous attempt's failure note no longer applies; but if a callback got
            # here first (delivered, or failed and rescheduled), its outcome stands.
            values["error_code"] = values["error_reason"] = None
        # A callback that failed this attempt and queued the next one got here first: the
        # message belongs to the retry now.
        rescheduled = message.status is MessageStatus.QUEUED
        if not rescheduled and can_advance(message.status, receipt.status):
            values["status"] = receipt.status
            if receipt.status is not MessageStatus.SENDING:
                values["sent_at"] = message.sent_at or now
            if receipt.status in (MessageStatus.DELIVERED, MessageStatus.READ):
                values["delivered_at"] = message.delivered_at or now
        note(message, values)


async def do_record_send_failure(
    db: Database, task: SendTask, failure: FailureClass, *, retry_base_s: float
) -> tuple[uuid.UUID, ...]:
    if failure.answer_lost:
        # The provider may have it: left claimed for the stuck-send check, which asks first.
        log.warning(
            "send answer lost; the stuck-send check will ask the provider",
            extra={"message_id": str(task.outbound.message_id), "code": failure.code},
        )
        return ()
    async with db.transaction() as session:
        attempt = await queries.attempt_of(session, task.outbound.message_id, task.outbound.attempt)
        message = await queries.message_for_update(session, task.outbound.message_id)
        assert attempt is not None and message is not None
        return tuple(
            await fail_or_retry_in(
                session, message, attempt, failure, MessageStatus.FAILED, retry_base_s
            )
        )


async def fail_or_retry_in(
    session: AsyncSession,
    message: Message,
    attempt: DeliveryAttempt,
    failure: FailureClass,
    status: MessageStatus,
    retry_base_s: float,
) -> list[uuid.UUID]:
    attempt.status = status
    attempt.error_code, attempt.error_reason = failure.code, failure.reason
    conversation = await session.get(Conversation, message.conversation_id)
    assert conversation is not None
    if failure.effect is FailureEffect.REVOKE_CONSENT:
        change = consent.ConsentChange(
            ConsentSource.PROVIDER,
            f"provider:{attempt.provider}",
            f"error {failure.code}",
            message.id,
        )
        await consent.revoke_channel(session, conversation.patient_id, message.channel, change)
    elif failure.effect is FailureEffect.UNREACHABLE:
        patient = await session.get(Patient, conversation.patient_id)
        assert patient is not None
        patient.unreachable = {
            **patient.unreachable,
            message.channel.value: failure.unreachable_reason or "unknown",
        }
    effects: list[uuid.UUID] = []
    message.error_code = failure.code
    if failure.transient and message.send_attempts < MAX_SEND_ATTEMPTS:
        delay = retry_base_s * RETRY_BACKOFF_FACTOR ** (message.send_attempts - 1)
        message.status = MessageStatus.QUEUED
        message.next_attempt_at = utcnow() + timedelta(seconds=delay)
        message.error_reason = (
            f"attempt {message.send_attempts} failed ({failure.reason}); retrying in {delay:g} s"
        )
        effects.append(send_job_effect(session, message.id, delay_s=delay))
    else:
        message.status = status
        message.error_reason = failure.reason + (
            f" (after {message.send_attempts} attempts)" if failure.transient else ""
        )
        if message.purpose != Purpose.CARE.value and message.author_id is None:
            # A journey step's message: its step may go on by the next channel. Imported here
            # because journeys send through this package.
            from hub.journeys.fallback import fall_back_in

            await fall_back_in(session, message.id, message.channel, failure.reason, utcnow())
    effects.append(_status_effect(session, message, conversation))
    return effects


async def do_apply_status(
    db: Database,
    update: StatusUpdate,
    classify_error: Callable[[str | None], FailureClass],
    *,
    retry_base_s: float,
) -> tuple[uuid.UUID, ...]:
    """Apply a provider's status callback. Returns outbox effect ids (empty when it changed
    nothing: repeated, late, or for a message we do not know)."""
    async with db.transaction() as session:
        attempt = await queries.attempt_by_provider_id(
            session, update.provider, update.provider_message_id
        )
        if attempt is None and update.hub_message_id is not None and update.attempt is not None:
            attempt = await queries.attempt_of(session, update.hub_message_id, update.attempt)
            if attempt is not None and attempt.provider_message_id is None:
                attempt.provider_message_id = update.provider_message_id
        if attempt is None or not can_advance(attempt.status, update.status):
            return ()
        message = await queries.message_for_update(session, attempt.message_id)
        assert message is not None
        if message.send_attempts != attempt.attempt:
            attempt.status = update.status  # an older attempt's late news: history only
            return ()
        if message.provider_message_id is None:
            # The callback beat the worker's record of Twilio's answer.
            message.provider = attempt.provider
            message.provider_message_id = attempt.provider_message_id
        if update.status in FAILED_STATUSES:
            return tuple(
                await fail_or_retry_in(
                    session,
                    message,
                    attempt,
                    classify_error(update.error_code),
                    update.status,
                    retry_base_s,
                )
            )
        attempt.status = update.status
        if not can_advance(message.status, update.status):
            return ()
        message.status = update.status
        now = utcnow()
        if update.status is MessageStatus.SENT and message.sent_at is None:
            message.sent_at = now
        if update.status in (MessageStatus.DELIVERED, MessageStatus.READ):
            message.sent_at = message.sent_at or now
            message.delivered_at = message.delivered_at or now
        conversation = await session.get(Conversation, message.conversation_id)
        assert conversation is not None
        return (_status_effect(session, message, conversation),)


STALLED_AFTER = timedelta(minutes=5)
"""A queued message still waiting this long past its send time has lost its job."""


async def do_requeue_stalled(
    db: Database, *, now: datetime | None = None, limit: int = 500
) -> tuple[uuid.UUID, ...]:
    """Give stalled queued messages a new send job (the claim makes duplicates harmless)."""
    now = now or utcnow()
    async with db.transaction() as session:
        stalled = await queries.stalled_outbound(session, now - STALLED_AFTER, limit)
        for message in stalled:
            # Move the clock on so the next sweep leaves it alone while this job is pending.
            message.next_attempt_at = now
        return tuple(send_job_effect(session, m.id) for m in stalled)


STUCK_SENDING_AFTER = timedelta(minutes=2)
"""A send claimed this long ago without the provider's answer recorded: its sender died.
Longer than the provider call's own timeout, so a live sender has always answered by then."""


@dataclass(frozen=True)
class StuckSend:
    """A send whose sender died between the claim and recording the provider's answer."""

    task: SendTask
    claimed_at: datetime


async def do_find_stuck_sends(
    db: Database,
    ring: KeyRing,
    *,
    now: datetime | None = None,
    after: timedelta = STUCK_SENDING_AFTER,
    limit: int = 200,
) -> list[StuckSend]:
    """Sends to ask the provider about (see ``do_resolve_stuck_send``). Their claim time is
    moved on so the next sweep leaves them alone while this one asks."""
    now = now or utcnow()
    found: list[StuckSend] = []
    async with db.transaction() as session:
        for message, attempt in await queries.stuck_sending(session, now - after, limit):
            conversation = await session.get(Conversation, message.conversation_id)
            assert conversation is not None
            patient = await session.get(Patient, conversation.patient_id)
            assert patient is not None
            address = address_of(ring, patient, message.channel)
            if address is None:
                continue
            claimed_at = attempt.created_at
            attempt.created_at = now
            outbound = Outbound(
                message_id=message.id,
                attempt=attempt.attempt,
                channel=message.channel,
                to_address=address,
                body=message.unseal(ring, "body") or "",
                from_address=conversation.channel_address,
            )
            decision = Decision(
                Outcome.ALLOWED,
                patient.id,
                message.channel,
                Purpose(message.purpose),
                now,
                "ok",
                "re-checked at send time",
            )
            found.append(StuckSend(SendTask(outbound, decision, attempt.provider), claimed_at))
    return found


async def do_resolve_stuck_send(
    db: Database,
    stuck: StuckSend,
    receipt: SendReceipt | None,
    *,
    classify_error: Callable[[str | None], FailureClass] | None = None,
    retry_base_s: float = 0,
) -> tuple[uuid.UUID, ...]:
    """The provider's answer about a stuck send: it has the message (record it as sent, never
    send again), or it does not (back to ``queued``, due now: the caller sends it again
    through ``do_claim_send`` and the gate; if the caller dies too, the stalled-send sweep
    gives it a job)."""
    if receipt is not None:
        effects: tuple[uuid.UUID, ...] = ()
        if classify_error is not None and receipt.status not in (
            MessageStatus.QUEUED,
            MessageStatus.SENDING,
        ):
            # The provider's status as of now, applied like the callback that may never come
            # (callbacks sent while nobody knew the id are not sent again): forward only.
            out = stuck.task.outbound
            update = StatusUpdate(
                receipt.provider,
                receipt.provider_message_id,
                receipt.status,
                hub_message_id=out.message_id,
                attempt=out.attempt,
            )
            effects = await do_apply_status(db, update, classify_error, retry_base_s=retry_base_s)
        return effects + await do_record_sent(db, stuck.task, receipt)
    async with db.transaction() as session:
        out = stuck.task.outbound
        message = await queries.message_for_update(session, out.message_id)
        attempt = await queries.attempt_of(session, out.message_id, out.attempt)
        if message is None or attempt is None or message.status is not MessageStatus.SENDING:
            return ()
        if attempt.provider_message_id is not None:
            return ()  # a status callback told us meanwhile
        attempt.status = MessageStatus.FAILED
        attempt.error_code, attempt.error_reason = "lost", "the sender stopped before the call"
        message.status, message.next_attempt_at = MessageStatus.QUEUED, utcnow()
        return ()


def address_of(ring: KeyRing, patient: Patient, channel: Channel) -> str | None:
    """Where a message on ``channel`` goes: the email address, the phone number, or for web
    chat the patient's own chat room (named by the patient id)."""
    if channel is Channel.CHAT:
        return str(patient.id)
    return patient.unseal(ring, "email" if channel is Channel.EMAIL else "phone")
