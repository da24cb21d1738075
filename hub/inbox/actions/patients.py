"""Inbox actions: each opens one transaction, writes, audits PHI access, and commits."""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import Sequence
from datetime import date, timedelta

from hub.audit import Actor, record
from hub.contact import InvalidContact, normalize_email, normalize_language, normalize_phone
from hub.crypto import BlindIndexKind, KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, ConversationStatus, Direction, MessageStatus, Priority
from hub.inbox import queries
from hub.inbox.actions.patient_index import index_name_in
from hub.inbox.actions.tags import set_patient_tags_in, tags_of_patient_in
from hub.inbox.exceptions import NotFound, StaffUserExists
from hub.inbox.models import Conversation, Message, Patient, StaffUser, Team
from hub.inbox.password_policy import check_new_password
from hub.inbox.passwords import hash_password
from hub.inbox.schemas import MessageView, NewPatient, NewStaffUser, PatientView

FIRST_RESPONSE_TARGETS = {
    Priority.URGENT: timedelta(minutes=15),
    Priority.HIGH: timedelta(hours=1),
    Priority.NORMAL: timedelta(hours=4),
    Priority.LOW: timedelta(hours=24),
}
"""Default first-response due time per priority (routing may override per team)."""


def _check_time_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidContact(f"unknown time zone {name!r}; expected an IANA name") from None
    return name


def view_patient(ring: KeyRing, patient: Patient, tags: Sequence[str] = ()) -> PatientView:
    """``tags``: the patient's, read by the caller where a person sees the view (a message
    template has no use for them, and they are rows of their own)."""
    return PatientView(
        id=patient.id,
        name=patient.unseal(ring, "name"),
        phone=patient.unseal(ring, "phone"),
        email=patient.unseal(ring, "email"),
        language=patient.language,
        time_zone=patient.time_zone,
        channel_order=list(patient.channel_order),
        tags=list(tags),
        verified=patient.verified,
    )


def read_birth_date(value: str | None) -> str | None:
    """An ISO date of birth, checked ("1984-03-07"); None for none. Raises ValueError saying
    what is wrong."""
    if not value or not value.strip():
        return None
    try:
        born = date.fromisoformat(value.strip())
    except ValueError:
        # The value itself is PHI: the message names the column only.
        raise ValueError("birth_date is not a date like 1984-03-07") from None
    if born > date.today():
        raise ValueError("birth_date is in the future")
    return born.isoformat()


def build_patient(ring: KeyRing, new: NewPatient, region: str) -> Patient:
    """A new patient row; ``new.tags`` are not on it (they are rows of their own, stored by
    ``do_create_patient``)."""
    patient = Patient(
        language=normalize_language(new.language),
        time_zone=_check_time_zone(new.time_zone),
        channel_order=list(new.channel_order),
        verified=new.verified,
    )
    patient.seal(ring, "name", new.name)
    patient.seal(ring, "birth_date", read_birth_date(new.birth_date))
    if new.phone is not None:
        phone = normalize_phone(new.phone, region)
        patient.seal(ring, "phone", phone)
        patient.phone_bidx = ring.blind_index("phone", phone)
    if new.email is not None:
        email = normalize_email(new.email)
        patient.seal(ring, "email", email)
        patient.email_bidx = ring.blind_index("email", email)
    return patient


async def do_create_patient(
    db: Database, ring: KeyRing, actor: Actor, new: NewPatient, *, region: str
) -> uuid.UUID:
    patient = build_patient(ring, new, region)
    async with db.transaction() as session:
        session.add(patient)
        await session.flush()
        await set_patient_tags_in(session, ring, patient.id, new.tags)
        await index_name_in(session, ring, patient.id, new.name)
        await record(session, actor, "patient.create", "patient", patient.id)
    return patient.id


async def do_read_patient(
    db: Database, ring: KeyRing, actor: Actor, patient_id: uuid.UUID
) -> PatientView:
    async with db.transaction() as session:
        patient = await queries.get_patient(session, patient_id)
        if patient is None:
            raise NotFound(f"no patient with id {patient_id}")
        view = view_patient(ring, patient, await tags_of_patient_in(session, ring, patient.id))
        await record(session, actor, "patient.read", "patient", patient_id)
    return view


async def _find_by_index(
    db: Database, ring: KeyRing, actor: Actor, kind: BlindIndexKind, normalized: str
) -> list[PatientView]:
    bidx = ring.blind_index(kind, normalized)
    lookup = queries.patients_by_phone_index if kind == "phone" else queries.patients_by_email_index
    async with db.transaction() as session:
        found = [
            view_patient(ring, p, await tags_of_patient_in(session, ring, p.id))
            for p in await lookup(session, bidx)
        ]
        await record(
            session,
            actor,
            "patient.search",
            "patient",
            kind,
            {"matches": [str(p.id) for p in found]},
        )
    return found


async def do_find_patients_by_phone(
    db: Database, ring: KeyRing, actor: Actor, raw_phone: str, *, region: str
) -> list[PatientView]:
    """Exact lookup by any spelling of a number, through the blind index."""
    return await _find_by_index(db, ring, actor, "phone", normalize_phone(raw_phone, region))


async def do_find_patients_by_email(
    db: Database, ring: KeyRing, actor: Actor, raw_email: str
) -> list[PatientView]:
    return await _find_by_index(db, ring, actor, "email", normalize_email(raw_email))


async def do_record_inbound(
    db: Database,
    ring: KeyRing,
    patient_id: uuid.UUID,
    channel: Channel,
    body: str,
    *,
    provider: str | None = None,
    provider_message_id: str | None = None,
) -> uuid.UUID:
    """Append a patient's message to their open conversation, or start one."""
    async with db.transaction() as session:
        now = utcnow()
        conversation = await queries.open_conversation_of(session, patient_id)
        if conversation is None:
            conversation = Conversation(
                patient_id=patient_id,
                channel=channel,
                status=ConversationStatus.OPEN,
                priority=Priority.NORMAL,
                created_at=now,
                first_response_due_at=now + FIRST_RESPONSE_TARGETS[Priority.NORMAL],
            )
            session.add(conversation)
        elif conversation.status != ConversationStatus.OPEN:
            conversation.status = ConversationStatus.OPEN
            conversation.snoozed_until = None
        conversation.last_activity_at = now
        await session.flush()
        message = Message(
            conversation_id=conversation.id,
            direction=Direction.INBOUND,
            channel=channel,
            provider=provider,
            provider_message_id=provider_message_id,
            status=MessageStatus.RECEIVED,
            created_at=now,
        )
        message.seal(ring, "body", body)
        session.add(message)
    return message.id


async def do_read_conversation(
    db: Database, ring: KeyRing, actor: Actor, conversation_id: uuid.UUID
) -> list[MessageView]:
    async with db.transaction() as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            raise NotFound(f"no conversation with id {conversation_id}")
        views = [
            MessageView(
                id=m.id,
                conversation_id=m.conversation_id,
                direction=m.direction,
                channel=m.channel,
                body=m.unseal(ring, "body"),
                status=m.status,
                created_at=m.created_at,
            )
            for m in await queries.messages_of(session, conversation_id)
        ]
        await record(
            session,
            actor,
            "conversation.read",
            "conversation",
            conversation_id,
            {"messages": len(views)},
        )
    return views


async def do_add_staff_user(db: Database, actor: Actor, new: NewStaffUser) -> uuid.UUID:
    email = normalize_email(new.email)
    if not new.must_change_password:
        # A password the person keeps (``hub user add --password-stdin``) meets the policy; a
        # one-time one the hub generated is replaced at first sign-in by one that does.
        check_new_password(new.password, user_inputs=(email, new.display_name))
    password_hash = hash_password(new.password)
    async with db.transaction() as session:
        if await queries.staff_by_email(session, email) is not None:
            raise StaffUserExists(f"a staff user with email {email} already exists")
        teams = list(await queries.teams_named(session, new.teams))
        missing = set(new.teams) - {t.name for t in teams}
        if missing:
            raise NotFound(f"no team named {', '.join(sorted(missing))}")
        user = StaffUser(
            email=email,
            display_name=new.display_name,
            password_hash=password_hash,
            role=new.role,
            must_change_password=new.must_change_password,
            teams=teams,
            time_zone=await queries.clinic_time_zone(session),
        )
        session.add(user)
        await session.flush()
        await record(session, actor, "staff.create", "staff", user.id, {"role": str(new.role)})
    return user.id


async def do_ensure_team(
    db: Database, actor: Actor, name: str, time_zone: str = "UTC"
) -> uuid.UUID:
    async with db.transaction() as session:
        team = await queries.team_named(session, name)
        if team is None:
            team = Team(name=name, time_zone=_check_time_zone(time_zone))
            session.add(team)
            await session.flush()
            await record(session, actor, "team.create", "team", team.id)
        return team.id
