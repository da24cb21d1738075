"""The patient page: the profile (read and edited, both audited), every conversation the viewer
may open, the journeys enrolled with "cancel this enrollment", and the list of patients.

Who sees what: any staff member may find a patient and open their page (a clinic's front desk
starts conversations with patients who never wrote to its team), but phone and email are
shown whole only to admins and to staff who share a conversation with the patient, the rule
that already lets them open that conversation. Editing follows the same rule."""

from __future__ import annotations

import dataclasses
import uuid
import zoneinfo
from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import record
from hub.contact import InvalidContact
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import RECEIVE_ONLY, Channel, Role
from hub.inbox import search_queries
from hub.inbox.access import StaffContext
from hub.inbox.actions.conversations import DEFAULT_CONNECTED, patient_card, visible_patient
from hub.inbox.actions.patient_index import external_id_row, index_name_in
from hub.inbox.actions.tags import set_patient_tags_in
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Patient
from hub.inbox.search_terms import external_id_term, normalize_external_id
from hub.journeys import lifecycle
from hub.journeys.cohort import read_contacts
from hub.journeys.models import EnrollmentStatus
from hub.patients import queries
from hub.patients.exceptions import NotAllowed, PatientConflict
from hub.patients.schemas import (
    EnrollmentLine,
    ExternalId,
    MergeLine,
    PatientChanges,
    PatientHit,
    PatientProfile,
)
from hub.patients.search import contact_of, hits_for, line_of, shared_patients

PAGE_CONVERSATIONS = 100
"""Conversations listed on a patient's page, newest first."""
DEFAULT_LIST_LIMIT = 50
"""Patients on the list page without a query (newest first)."""
MAX_EXTERNAL_IDS = 20
"""Record numbers one patient may hold (one per system a clinic feeds from, in practice)."""


async def _patient(session: AsyncSession, patient_id: uuid.UUID) -> Patient:
    patient = await session.get(Patient, patient_id)
    if patient is None:
        raise NotFound("no such patient")
    return patient


async def may_edit(session: AsyncSession, ctx: StaffContext, patient_id: uuid.UUID) -> bool:
    return patient_id in await shared_patients(session, ctx, [patient_id])


async def do_read_profile(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    patient_id: uuid.UUID,
    connected: Collection[Channel] = DEFAULT_CONNECTED,
) -> PatientProfile:
    async with db.transaction() as session:
        patient = await _patient(session, patient_id)
        editable = await may_edit(session, ctx, patient_id)
        card = await patient_card(session, ring, patient, connected)
        phone, email = contact_of(ring, patient, not editable)
        conversations = await search_queries.conversations_of_patient(
            session, patient_id, ctx.visible_filter(), PAGE_CONVERSATIONS
        )
        teams = await search_queries.team_names(session, {c.team_id for c in conversations})
        ids = await search_queries.external_ids_of(session, [patient_id])
        profile = PatientProfile(
            card=dataclasses.replace(card, phone=phone, email=email),
            contact_masked=not editable,
            may_edit=editable,
            external_ids=[ExternalId(x.system, x.unseal(ring, "value") or "") for x in ids],
            conversations=[
                line_of(c, teams.get(c.team_id) if c.team_id else None) for c in conversations
            ],
            enrollments=await _enrollments(session, patient_id),
            merges=[
                MergeLine(m.id, m.source_id, m.created_at, _counts(m.moved), m.undone_at)
                for m in await queries.merges_of(session, patient_id)
            ],
            merged_into=patient.merged_into_id,
        )
        await record(
            session,
            ctx.actor,
            "patient.read",
            "patient",
            patient_id,
            {"conversations": len(profile.conversations), "masked": not editable},
        )
    return profile


def _counts(moved: dict[str, list[str]]) -> dict[str, int]:
    return {name: len(ids) for name, ids in moved.items()}


async def _enrollments(session: AsyncSession, patient_id: uuid.UUID) -> list[EnrollmentLine]:
    return [
        EnrollmentLine(eid, name, status, start, confirmed is not None, due, pending)
        for eid, name, status, start, confirmed, due, pending in await queries.enrollments_of(
            session, patient_id
        )
    ]


async def do_list_patients(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    *,
    verified: bool | None = None,
    limit: int = DEFAULT_LIST_LIMIT,
    before: uuid.UUID | None = None,
) -> list[PatientHit]:
    """The newest patients (all, known or unknown numbers only), older than ``before`` when
    given (the next page), audited as a search."""
    async with db.transaction() as session:
        patients = await search_queries.recent_patients(
            session, verified=verified, limit=limit, before=before
        )
        hits = await hits_for(session, ring, ctx, patients)
        await record(
            session,
            ctx.actor,
            "patient.search",
            "patient",
            "list",
            {"by": ["recent"], "matches": [str(h.id) for h in hits]},
        )
    return hits


def _zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidContact(
            f"time zone {name!r} is not a zone name; use one like America/New_York"
        ) from None
    return name


def _channel_order(names: list[str]) -> list[str]:
    known = {c.value for c in Channel if c not in RECEIVE_ONLY}
    order = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    unknown = [n for n in order if n not in known]
    if unknown:
        raise InvalidContact(
            f"channel order names {', '.join(unknown)}, which the hub cannot send on; "
            f"use {', '.join(sorted(known))}"
        )
    if not order:
        raise InvalidContact("channel order needs at least one channel")
    return order


async def _set_contact(
    session: AsyncSession, ring: KeyRing, patient: Patient, kind: str, value: str | None
) -> None:
    """Phone or email set (or cleared); refused when another patient has it already: the
    intake would not know whose a message is (merge them instead)."""
    bidx = ring.blind_index("phone" if kind == "phone" else "email", value) if value else None
    if bidx is not None:
        found = await search_queries.patients_by_contact(
            session,
            phone_bidx=bidx if kind == "phone" else None,
            email_bidx=bidx if kind == "email" else None,
        )
        if any(other.id != patient.id for other in found):
            raise PatientConflict(
                f"another patient has this {kind}; open that patient, or merge the two"
            )
    patient.seal(ring, kind, value)
    setattr(patient, f"{kind}_bidx", bidx)


async def _set_external_ids(
    session: AsyncSession, ring: KeyRing, patient: Patient, pairs: list[tuple[str, str]]
) -> None:
    if len(pairs) > MAX_EXTERNAL_IDS:
        raise InvalidContact(f"a patient can hold at most {MAX_EXTERNAL_IDS} record numbers")
    await search_queries.delete_external_ids(session, patient.id)
    await session.flush()
    seen: set[tuple[str, str]] = set()
    for system, value in pairs:
        system, value = system.strip(), normalize_external_id(value)
        if not system or not value:
            raise InvalidContact("a record number needs both its system (e.g. MRN) and a value")
        if len(system) > 200 or len(value) > 64:
            raise InvalidContact("a record number's system or value is too long")
        if (system, value) in seen:
            continue
        seen.add((system, value))
        bidx = external_id_term(ring, value)
        owner = await search_queries.external_id_owner(session, system, bidx)
        if owner is not None and owner != patient.id:
            raise PatientConflict(
                f"another patient holds this {system} number; open that patient, or merge the two"
            )
        session.add(external_id_row(ring, patient.id, system, value))
    await session.flush()


async def do_update_patient(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    patient_id: uuid.UUID,
    changes: PatientChanges,
    *,
    region: str,
) -> list[str]:
    """Apply ``changes`` (validated as the cohort import validates: the phone read in the
    patient's country, else the clinic's; BCP-47 languages; IANA zones), keep the search index
    in step, audit which fields changed. Returns their names. The workspace calls it to name an
    unknown number in place (``PatientChanges(name=...)``)."""
    raw = {"country": changes.country or "", "phone": changes.phone or ""}
    raw |= {"email": changes.email or "", "language": changes.language or ""}
    phone, email, language = read_contacts(raw, region)
    async with db.transaction() as session:
        patient = await _patient(session, patient_id)
        if not await may_edit(session, ctx, patient_id):
            raise NotAllowed(
                "only an admin, or staff with one of this patient's conversations in their team, "
                "may edit this patient"
            )
        if patient.merged_into_id is not None:
            raise PatientConflict("this record was merged into another patient: edit that one")
        if changes.name is not None:
            name = " ".join(changes.name.split()) or None
            if name is not None and len(name) > 200:
                raise InvalidContact("a name can be at most 200 characters")
            patient.seal(ring, "name", name)
            await index_name_in(session, ring, patient.id, name)
        if changes.phone is not None:
            await _set_contact(session, ring, patient, "phone", phone)
        if changes.email is not None:
            await _set_contact(session, ring, patient, "email", email)
        if changes.language is not None:
            patient.language = language
        if changes.time_zone is not None:
            patient.time_zone = _zone(changes.time_zone.strip())
        if changes.channel_order is not None:
            patient.channel_order = _channel_order(changes.channel_order)
        if changes.tags is not None:
            await set_patient_tags_in(session, ring, patient.id, changes.tags)
        if changes.external_ids is not None:
            await _set_external_ids(session, ring, patient, changes.external_ids)
        if changes.verified is not None:
            patient.verified = changes.verified
        patient.updated_at = utcnow()
        fields = changes.fields()
        await record(
            session, ctx.actor, "patient.update", "patient", patient_id, {"fields": fields}
        )
    return fields


async def do_cancel_enrollment(
    db: Database, ctx: StaffContext, patient_id: uuid.UUID, enrollment_id: uuid.UUID
) -> int:
    """Cancel one of the patient's journey enrollments and its steps not yet sent (the patient
    asked the desk to stop the reminders), through the journeys' own cancel
    (``hub.journeys.lifecycle.do_cancel_enrollment``, audited there) once the caller may:
    coordinators and admins for anyone, agents for a patient they share a conversation with.
    How many steps were cancelled."""
    async with db.reader() as session:
        if ctx.role not in (Role.ADMIN, Role.COORDINATOR):
            await visible_patient(session, ctx, patient_id)
        found = await queries.enrollment_with_key(session, enrollment_id)
    if found is None or found[0].patient_id != patient_id:
        raise NotFound("no such enrollment for this patient")
    enrollment, key = found
    if enrollment.status is not EnrollmentStatus.ACTIVE:
        raise PatientConflict(
            f"this enrollment is {enrollment.status.value} already: nothing to cancel"
        )
    return await lifecycle.do_cancel_enrollment(db, ctx.actor, key, enrollment_id)
