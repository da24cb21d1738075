"""Merging an unverified patient (an unknown number or address) into a known one, and an
admin's undo.

What moves: the source's conversations (their messages, notes and attachments with them), its
consent history, journey enrollments, appointments and record numbers. The target keeps its
own phone, email and name; one it lacks is taken from the source. An opt-out recorded on the
source applies to the target's channel afterwards: the safe direction, never a message sent
against a choice someone made. The source row stays, hidden from search and the intake (its
blind indexes cleared), so an undo can put back exactly the rows that moved: rows that arrived
later (a new conversation with the target) stay with the target.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import record
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.inbox.access import StaffContext
from hub.inbox.actions.patient_index import index_name_in
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, Patient
from hub.inbox.patient_models import PatientMerge
from hub.outbox import add_effect
from hub.patients import queries
from hub.patients.exceptions import NotAllowed, PatientConflict
from hub.patients.profile import may_edit

CONTACT_FIELDS = ("phone", "email")
"""Fields with a blind index the intake finds a patient by."""


@dataclass(frozen=True)
class MergeResult:
    merge_id: uuid.UUID
    moved: dict[str, int]
    copied: tuple[str, ...]
    effect_ids: tuple[uuid.UUID, ...]


async def _locked(session: AsyncSession, patient_id: uuid.UUID) -> Patient:
    patient = await session.get(Patient, patient_id, with_for_update=True)
    if patient is None:
        raise NotFound("no such patient")
    return patient


def _refresh_effects(
    session: AsyncSession, conversation_ids: list[str], teams: dict[str, str | None]
) -> list[uuid.UUID]:
    """Screens showing these conversations learn their patient changed (ids only)."""
    return [
        add_effect(
            session,
            "notify:conversation:updated",
            {"conversation_id": cid, "team_id": teams.get(cid), "patient_changed": True},
        ).id
        for cid in conversation_ids
    ]


async def _teams(session: AsyncSession, ids: list[str]) -> dict[str, str | None]:
    found = {}
    for cid in ids:
        conversation = await session.get(Conversation, uuid.UUID(cid))
        if conversation is not None:
            found[cid] = str(conversation.team_id) if conversation.team_id else None
    return found


async def do_merge_patients(
    db: Database, ring: KeyRing, ctx: StaffContext, target_id: uuid.UUID, source_id: uuid.UUID
) -> MergeResult:
    """Fold the unverified patient ``source_id`` into ``target_id``; audited on both."""
    if source_id == target_id:
        raise PatientConflict("a patient cannot be merged into themselves")
    async with db.transaction() as session:
        # Locked in id order: two merges of the same pair cannot deadlock.
        first, second = sorted((source_id, target_id))
        locked = {first: await _locked(session, first), second: await _locked(session, second)}
        source, target = locked[source_id], locked[target_id]
        both = await may_edit(session, ctx, source_id) and await may_edit(session, ctx, target_id)
        if not both:
            raise NotAllowed(
                "only an admin, or staff with conversations of both patients in their teams, "
                "may merge them"
            )
        if source.verified:
            raise PatientConflict(
                "only a patient from an unknown number or address can be merged into another; "
                "this one is a known patient: edit their profile instead"
            )
        if source.merged_into_id is not None or target.merged_into_id is not None:
            raise PatientConflict("one of these records was merged already: undo that first")
        moved = {
            name: await queries.ids_of_patient(session, model, source_id)
            for name, model in queries.MOVED_BY_PATIENT.items()
        }
        for name, model in queries.MOVED_BY_PATIENT.items():
            await queries.move_rows(session, model, moved[name], target_id)
        index = {
            f: getattr(source, f"{f}_bidx").hex()
            for f in CONTACT_FIELDS
            if getattr(source, f"{f}_bidx") is not None
        }
        copied = []
        for field in (*CONTACT_FIELDS, "name"):
            value = source.unseal(ring, field)
            if value and target.unseal(ring, field) is None:
                target.seal(ring, field, value)
                if field in CONTACT_FIELDS:
                    setattr(target, f"{field}_bidx", bytes.fromhex(index[field]))
                copied.append(field)
        for field in CONTACT_FIELDS:
            setattr(source, f"{field}_bidx", None)
        source.merged_into_id = target.id
        await session.flush()
        await index_name_in(session, ring, source.id, None)
        if "name" in copied:
            await index_name_in(session, ring, target.id, target.unseal(ring, "name"))
        merge = PatientMerge(
            source_id=source_id,
            target_id=target_id,
            actor=str(ctx.actor),
            moved=moved,
            copied=copied,
            source_index=index,
            created_at=utcnow(),
        )
        session.add(merge)
        await session.flush()
        counts = {name: len(ids) for name, ids in moved.items()}
        detail = {"merge": str(merge.id), "moved": counts, "copied": copied}
        into, out = {"source": str(source_id)} | detail, {"into": str(target_id)} | detail
        await record(session, ctx.actor, "patient.merge", "patient", target_id, into)
        await record(session, ctx.actor, "patient.merged", "patient", source_id, out)
        conversations = moved["conversations"]
        effects = _refresh_effects(session, conversations, await _teams(session, conversations))
    return MergeResult(merge.id, counts, tuple(copied), tuple(effects))


async def do_undo_merge(
    db: Database, ring: KeyRing, ctx: StaffContext, merge_id: uuid.UUID
) -> MergeResult:
    """Put back what the merge moved and took; admins only."""
    if not ctx.is_admin:
        raise NotAllowed("only an admin may undo a merge")
    async with db.transaction() as session:
        merge = await queries.merge_for_update(session, merge_id)
        if merge is None:
            raise NotFound("no such merge")
        if merge.undone_at is not None:
            raise PatientConflict("this merge was undone already")
        first, second = sorted((merge.source_id, merge.target_id))
        locked = {first: await _locked(session, first), second: await _locked(session, second)}
        source, target = locked[merge.source_id], locked[merge.target_id]
        for name, model in queries.MOVED_BY_PATIENT.items():
            await queries.move_rows(session, model, merge.moved.get(name, []), source.id)
        for field in merge.copied:
            if field in CONTACT_FIELDS:
                # Taken from the source and still the same: it goes back with the source.
                if getattr(target, f"{field}_bidx") == bytes.fromhex(merge.source_index[field]):
                    target.seal(ring, field, None)
                    setattr(target, f"{field}_bidx", None)
            elif target.unseal(ring, field) == source.unseal(ring, field):
                target.seal(ring, field, None)
                await index_name_in(session, ring, target.id, None)
        for field, hexed in merge.source_index.items():
            setattr(source, f"{field}_bidx", bytes.fromhex(hexed))
        source.merged_into_id = None
        await session.flush()
        await index_name_in(session, ring, source.id, source.unseal(ring, "name"))
        merge.undone_at, merge.undone_by = utcnow(), str(ctx.actor)
        counts = {name: len(ids) for name, ids in merge.moved.items()}
        detail = {"merge": str(merge.id), "moved": counts}
        detail["source"] = str(source.id)
        await record(session, ctx.actor, "patient.merge.undo", "patient", target.id, detail)
        conversations = list(merge.moved.get("conversations", []))
        effects = _refresh_effects(session, conversations, await _teams(session, conversations))
    return MergeResult(merge.id, counts, tuple(merge.copied), tuple(effects))
