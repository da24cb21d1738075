"""Keeping the patient search index in step with the names it indexes. Every path that sets a
patient's name calls ``index_name_in`` in its own transaction (creation, email intake, the
cohort import, a profile edit); erasure needs nothing, the terms go with the patient's row."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from hub.crypto import KeyRing
from hub.inbox import search_queries
from hub.inbox.patient_models import PatientExternalId
from hub.inbox.search_terms import external_id_term, name_terms, normalize_external_id


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


UNSPECIFIED_SYSTEM = "unspecified"
"""The assigning authority recorded for an identifier that names none (a FHIR identifier
without ``system``)."""


def read_identifier(text: str) -> tuple[str, str] | None:
    """("system", "value") of "system|value" as FHIR token search writes it (and
    ``hub.journeys.fhir`` reads an identifier); a bare value has no stated system."""
    system, sep, value = text.strip().rpartition("|")
    value = normalize_external_id(value)
    if not value or len(value) > 64 or len(system) > 200:
        return None
    return (system.strip() or UNSPECIFIED_SYSTEM) if sep else UNSPECIFIED_SYSTEM, value


def external_id_row(
    ring: KeyRing, patient_id: uuid.UUID, system: str, value: str
) -> PatientExternalId:
    """A record number of the patient: the system in clear, the value sealed and
    blind-indexed (the same index an HL7 PID-3 or a FHIR identifier is looked up by)."""
    row = PatientExternalId(
        patient_id=patient_id, system=system, value_bidx=external_id_term(ring, value)
    )
    row.seal(ring, "value", normalize_external_id(value))
    return row
