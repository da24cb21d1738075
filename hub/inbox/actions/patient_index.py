"""Keeping the patient search index in step with the names it indexes. Every path that sets a
patient's name calls ``index_name_in`` in its own transaction (creation, email intake, the
cohort import, a profile edit); erasure needs nothing, the terms go with the patient's row."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from hub.crypto import KeyRing
from hub.inbox import search_queries
from hub.inbox.search_terms import name_terms


async def index_name_in(
    session: AsyncSession, ring: KeyRing, patient_id: uuid.UUID, name: str | None
) -> None:
    """The patient is findable by ``name`` (and by no name they had before)."""
    await search_queries.replace_terms(session, patient_id, name_terms(ring, name))


def name_rows(
    ring: KeyRing, patient_id: uuid.UUID, name: str | None
) -> list[tuple[uuid.UUID, bytes]]:
    """The (patient, term) rows of a new patient, for a bulk insert of many."""
    return [(patient_id, term) for term in name_terms(ring, name)]
