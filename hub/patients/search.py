"""Finding patients (by name word or prefix, phone, email, record number) through blind
indexes, and text within one patient's messages (decrypted, bounded). Every search by a person
is audited with what it was read as and the ids it returned, never the query."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import record
from hub.crypto import KeyRing
from hub.db import Database
from hub.inbox import search_queries
from hub.inbox.access import StaffContext
from hub.inbox.actions.conversations import visible_patient
from hub.inbox.models import Conversation, Patient
from hub.inbox.search_terms import (
    MAX_PREFIX,
    external_id_term,
    fold,
    matches_name,
    query_key,
    read_query,
)
from hub.journeys.reporting import mask_email, mask_phone
from hub.patients.schemas import (
    ConversationLine,
    MessageHit,
    MessageSearch,
    PatientHit,
    SearchResult,
)

DEFAULT_SEARCH_LIMIT = 20
"""Patients one search shows; more says "narrow the search" rather than paging."""
RECENT_CONVERSATIONS = 3
"""Conversations shown under each patient found."""
LONG_WORD_CANDIDATES = 200
"""Patients read for a query word longer than the stored prefixes, whose names are then
decrypted and checked: bounds the work of "Alexandrina" among many "Alexan..."."""
DEFAULT_MESSAGE_SCAN = 500
"""Newest messages of one patient decrypted by a text search of their conversations: a few
months of a busy patient's thread, about 10 ms of decryption; older ones are not read."""
SNIPPET_CHARS = 60
"""Characters of context shown either side of a match in a message."""


def contact_of(ring: KeyRing, patient: Patient, masked: bool) -> tuple[str | None, str | None]:
    phone, email = patient.unseal(ring, "phone"), patient.unseal(ring, "email")
    if masked:
        return (mask_phone(phone) if phone else None, mask_email(email) if email else None)
    return phone, email


async def shared_patients(
    session: AsyncSession, ctx: StaffContext, patient_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Patients whose contact details the viewer sees whole: all for admins, else those with
    a conversation in one of the viewer's teams (the rule that lets them open the thread)."""
    if ctx.is_admin:
        return set(patient_ids)
    return await search_queries.visible_patient_ids(session, patient_ids, ctx.visible_filter())


def line_of(conversation: Conversation, team: str | None) -> ConversationLine:
    return ConversationLine(
        conversation.id,
        conversation.channel,
        conversation.status,
        team,
        conversation.last_activity_at,
    )


async def hits_for(
    session: AsyncSession, ring: KeyRing, ctx: StaffContext, patients: Sequence[Patient]
) -> list[PatientHit]:
    """What a result shows, in one query past the patients themselves: their latest visible
    conversations, which also say whose contact the viewer sees whole (a patient with one is
    shared: the rule of ``shared_patients``)."""
    recent = await search_queries.recent_conversations(
        session, [p.id for p in patients], ctx.visible_filter(), RECENT_CONVERSATIONS
    )
    hits = []
    for patient in patients:
        masked = not (ctx.is_admin or patient.id in recent)
        phone, email = contact_of(ring, patient, masked)
        hits.append(
            PatientHit(
                patient.id,
                patient.unseal(ring, "name"),
                phone,
                email,
                masked,
                patient.verified,
                [line_of(c, team) for c, team in recent.get(patient.id, [])],
            )
        )
    return hits


async def do_search_patients(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    raw: str,
    *,
    region: str,
    limit: int = DEFAULT_SEARCH_LIMIT,
) -> SearchResult:
    """Patients matching ``raw``: every name word as a prefix (3+ letters; shorter words
    whole), or a phone number in any spelling, an email address, a record number."""
    query = read_query(raw, region)
    if query.empty:
        return SearchResult([], [], False)
    async with db.transaction() as session:
        found: list[Patient] = []
        if query.email:
            bidx = ring.blind_index("email", query.email)
            found += await search_queries.patients_by_contact(session, email_bidx=bidx)
        if query.phone:
            bidx = ring.blind_index("phone", query.phone)
            found += await search_queries.patients_by_contact(session, phone_bidx=bidx)
        if query.external_id:
            bidx = external_id_term(ring, query.external_id)
            found += await search_queries.patients_by_external_id(session, bidx)
        long_words = [w for w in query.words if len(w) > MAX_PREFIX]
        if query.words:
            terms = [ring.blind_index("name", query_key(w)) for w in query.words]
            wanted = LONG_WORD_CANDIDATES if long_words else limit + 1
            found += await search_queries.patients_with_terms(session, terms, wanted)
        patients = list({p.id: p for p in found}.values())
        if long_words:
            # The index holds prefixes up to MAX_PREFIX letters: the rest is checked here.
            # (A query with name words is read as nothing else: every patient here came by name.)
            patients = [p for p in patients if matches_name(p.unseal(ring, "name"), query.words)]
        more = len(patients) > limit
        hits = await hits_for(session, ring, ctx, patients[:limit])
        await record(
            session,
            ctx.actor,
            "patient.search",
            "patient",
            "search",
            {"by": query.kinds, "matches": [str(h.id) for h in hits], "more": more},
        )
    return SearchResult(hits, query.kinds, more)


def _snippet(body: str, needle: str) -> str | None:
    """The text around the first match of ``needle`` (folded) in ``body``, or None."""
    folded, origin = [], []
    for i, char in enumerate(body):
        piece = fold(char)
        folded.append(piece)
        origin += [i] * len(piece)
    at = "".join(folded).find(needle)
    if at < 0:
        return None
    start = origin[at]
    end = origin[min(at + len(needle), len(origin)) - 1] + 1
    before = max(0, start - SNIPPET_CHARS)
    after = min(len(body), end + SNIPPET_CHARS)
    return ("…" if before else "") + body[before:after] + ("…" if after < len(body) else "")


async def do_search_patient_messages(
    db: Database,
    ring: KeyRing,
    ctx: StaffContext,
    patient_id: uuid.UUID,
    text: str,
    *,
    bound: int = DEFAULT_MESSAGE_SCAN,
) -> MessageSearch:
    """Messages of this patient (in conversations the viewer may see) that contain ``text``,
    case and accents aside; the newest ``bound`` messages are read, newest match first."""
    needle = fold(" ".join(text.split()))
    if len(needle) < 2:
        raise ValueError("type at least two letters to search the messages")
    async with db.transaction() as session:
        await visible_patient(session, ctx, patient_id)
        messages = await search_queries.latest_messages_of_patient(
            session, patient_id, ctx.visible_filter(), bound + 1
        )
        hits = []
        for message in messages[:bound]:
            snippet = _snippet(message.unseal(ring, "body") or "", needle)
            if snippet is not None:
                hits.append(
                    MessageHit(
                        message.id,
                        message.conversation_id,
                        message.channel,
                        message.direction,
                        message.created_at,
                        snippet,
                    )
                )
        scanned = min(len(messages), bound)
        await record(
            session,
            ctx.actor,
            "patient.messages.search",
            "patient",
            patient_id,
            {"scanned": scanned, "matches": [str(h.id) for h in hits]},
        )
    return MessageSearch(hits, scanned, bound, len(messages) <= bound)
