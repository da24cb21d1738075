"""Patient search SQL: the blind-index terms, external ids, and what a result shows (recent
conversations, a patient's messages). Callers own the session and the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence

from sqlalchemy import ColumnElement, delete, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from hub.enums import Channel
from hub.inbox.models import Conversation, Message, Patient, Team
from hub.inbox.patient_models import PatientExternalId, PatientSearchTerm

# -- the index -------------------------------------------------------------------------------


async def replace_terms(
    session: AsyncSession, patient_id: uuid.UUID, terms: Collection[bytes]
) -> None:
    """The patient's terms become exactly ``terms``."""
    await session.execute(
        delete(PatientSearchTerm).where(PatientSearchTerm.patient_id == patient_id)
    )
    await insert_terms(session, [(patient_id, t) for t in terms])


async def insert_terms(session: AsyncSession, rows: Sequence[tuple[uuid.UUID, bytes]]) -> None:
    """(patient id, term) rows in one executemany (a cohort chunk's new patients)."""
    if rows:
        await session.execute(
            insert(PatientSearchTerm), [{"patient_id": p, "term": t} for p, t in rows]
        )


def _live() -> ColumnElement[bool]:
    return Patient.merged_into_id.is_(None)


RARITY_CAP = 1000
"""Index entries counted per query word to find the rarest: enough to tell a surname held by
a few dozen patients from a first name's prefix held by tens of thousands."""


async def rarest_first(session: AsyncSession, groups: Sequence[bytes]) -> list[bytes]:
    """``groups`` ordered by how many patients hold each, fewest first (counted up to
    RARITY_CAP each, in one statement: at most a few thousand index entries read)."""
    counts = [
        select(func.count())
        .select_from(
            select(literal(1)).where(PatientSearchTerm.term == term).limit(RARITY_CAP).subquery()
        )
        .scalar_subquery()
        for term in groups
    ]
    held = (await session.execute(select(*counts))).one()
    return [term for _n, _i, term in sorted(zip(held, range(len(groups)), groups, strict=True))]


async def patients_with_terms(
    session: AsyncSession, groups: Sequence[bytes], limit: int
) -> list[Patient]:
    """Patients holding every term of ``groups`` (one term per query word), newest first.

    Driven by the rarest word's index range, read newest first, each patient in it probed for
    the other words by the primary key (term, patient_id), until ``limit`` are found. A join
    of the ranges would be merged instead, and a merge reads the common word's whole range
    (60,000 entries for a first name's prefix among a million patients) to find the few a
    rare surname shares with it. Merged records hold no terms (the merge deletes them), so
    nothing else needs filtering."""
    if not groups:
        return []
    ordered = await rarest_first(session, groups) if len(groups) > 1 else list(groups)
    driver = aliased(PatientSearchTerm)
    stmt = select(Patient).join(driver, driver.patient_id == Patient.id)
    stmt = stmt.where(driver.term == ordered[0])
    for term in ordered[1:]:
        other = aliased(PatientSearchTerm)
        # A scalar subquery with LIMIT is not turned into a join by PostgreSQL: it stays a
        # probe per driving row, which is the point (SQLite probes either way).
        probe = (
            select(literal(1))
            .where(other.term == term, other.patient_id == driver.patient_id)
            .limit(1)
            .scalar_subquery()
        )
        stmt = stmt.where(probe.is_not(None))
    stmt = stmt.order_by(driver.patient_id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())


async def patients_by_ids(session: AsyncSession, ids: Collection[uuid.UUID]) -> list[Patient]:
    if not ids:
        return []
    return list((await session.scalars(select(Patient).where(Patient.id.in_(ids)))).all())


async def patients_by_contact(
    session: AsyncSession, *, phone_bidx: bytes | None = None, email_bidx: bytes | None = None
) -> list[Patient]:
    where = Patient.phone_bidx == phone_bidx if phone_bidx else Patient.email_bidx == email_bidx
    stmt = select(Patient).where(where, _live()).order_by(Patient.id.desc()).limit(50)
    return list((await session.scalars(stmt)).all())


async def patients_by_external_id(session: AsyncSession, bidx: bytes) -> list[Patient]:
    stmt = (
        select(Patient)
        .join(PatientExternalId, PatientExternalId.patient_id == Patient.id)
        .where(PatientExternalId.value_bidx == bidx, _live())
        .order_by(Patient.id.desc())
        .limit(50)
    )
    return list((await session.scalars(stmt)).unique().all())


async def recent_patients(
    session: AsyncSession,
    *,
    verified: bool | None,
    merged: bool = False,
    limit: int = 50,
    before: uuid.UUID | None = None,
) -> list[Patient]:
    """The list page without a query: newest patients first, older than ``before`` (a page's
    last id: keyset paging, ids are time-ordered)."""
    stmt = select(Patient).order_by(Patient.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(Patient.id < before)
    stmt = stmt.where(Patient.merged_into_id.is_not(None) if merged else _live())
    if verified is not None:
        stmt = stmt.where(Patient.verified.is_(verified))
    return list((await session.scalars(stmt)).all())


# -- external ids ----------------------------------------------------------------------------


async def external_ids_of(
    session: AsyncSession, patient_ids: Collection[uuid.UUID]
) -> Sequence[PatientExternalId]:
    if not patient_ids:
        return []
    stmt = (
        select(PatientExternalId)
        .where(PatientExternalId.patient_id.in_(patient_ids))
        .order_by(PatientExternalId.system, PatientExternalId.created_at)
    )
    return (await session.scalars(stmt)).all()


async def external_id_owner(session: AsyncSession, system: str, bidx: bytes) -> uuid.UUID | None:
    stmt = select(PatientExternalId.patient_id).where(
        PatientExternalId.system == system, PatientExternalId.value_bidx == bidx
    )
    return (await session.scalars(stmt)).first()


async def delete_external_ids(session: AsyncSession, patient_id: uuid.UUID) -> None:
    await session.execute(
        delete(PatientExternalId).where(PatientExternalId.patient_id == patient_id)
    )


# -- what a result shows ---------------------------------------------------------------------


async def recent_conversations(
    session: AsyncSession,
    patient_ids: Collection[uuid.UUID],
    visible: ColumnElement[bool],
    per_patient: int,
) -> dict[uuid.UUID, list[tuple[Conversation, str | None]]]:
    """Each patient's latest conversations the viewer may see (``visible``), newest first,
    with their team's name. A patient absent from the answer has none the viewer may see."""
    if not patient_ids:
        return {}
    ranked = (
        select(
            Conversation.id,
            func.row_number()
            .over(
                partition_by=Conversation.patient_id,
                order_by=Conversation.last_activity_at.desc(),
            )
            .label("n"),
        )
        .where(Conversation.patient_id.in_(patient_ids), visible)
        .subquery()
    )
    stmt = (
        select(Conversation, Team.name)
        .join(ranked, ranked.c.id == Conversation.id)
        .outerjoin(Team, Team.id == Conversation.team_id)
        .where(ranked.c.n <= per_patient)
        .order_by(Conversation.last_activity_at.desc())
    )
    found: dict[uuid.UUID, list[tuple[Conversation, str | None]]] = {}
    for conversation, team in (await session.execute(stmt)).all():
        found.setdefault(conversation.patient_id, []).append((conversation, team))
    return found


async def visible_patient_ids(
    session: AsyncSession, patient_ids: Collection[uuid.UUID], visible: ColumnElement[bool]
) -> set[uuid.UUID]:
    """Those of ``patient_ids`` with a conversation the viewer may see."""
    if not patient_ids:
        return set()
    stmt = (
        select(Conversation.patient_id)
        .where(Conversation.patient_id.in_(patient_ids), visible)
        .distinct()
    )
    return set((await session.scalars(stmt)).all())


async def conversations_of_patient(
    session: AsyncSession, patient_id: uuid.UUID, visible: ColumnElement[bool], limit: int
) -> Sequence[Conversation]:
    stmt = (
        select(Conversation)
        .where(Conversation.patient_id == patient_id, visible)
        .order_by(Conversation.last_activity_at.desc())
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def latest_messages_of_patient(
    session: AsyncSession, patient_id: uuid.UUID, visible: ColumnElement[bool], limit: int
) -> Sequence[Message]:
    """The patient's newest ``limit`` messages in conversations the viewer may see."""
    stmt = (
        select(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.patient_id == patient_id, visible)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def team_names(
    session: AsyncSession, ids: Iterable[uuid.UUID | None]
) -> dict[uuid.UUID, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = await session.execute(select(Team.id, Team.name).where(Team.id.in_(wanted)))
    return {team_id: name for team_id, name in rows.all()}


async def starting_team(session: AsyncSession, team_ids: Collection[uuid.UUID]) -> Team | None:
    """The team a conversation someone starts belongs to: the default team when they are in
    it (or may see every team: admins pass none), else their first team by name."""
    stmt = select(Team).order_by(Team.is_default.desc(), Team.name).limit(1)
    if team_ids:
        stmt = stmt.where(Team.id.in_(team_ids))
    return (await session.scalars(stmt)).first()


async def latest_conversation_on(
    session: AsyncSession, patient_id: uuid.UUID, channel: Channel, visible: ColumnElement[bool]
) -> Conversation | None:
    """The patient's latest conversation on ``channel`` the viewer may see: a conversation
    staff start continues it rather than opening a second thread on the same channel."""
    stmt = (
        select(Conversation)
        .where(Conversation.patient_id == patient_id, Conversation.channel == channel, visible)
        .order_by(Conversation.last_activity_at.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()
