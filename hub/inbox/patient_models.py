"""Patient search index, external ids and merges (migration 0020).

Names are sealed, so search never reads them: each word of a name is stored as the keyed
blind indexes of its prefixes (``hub.inbox.search_terms``). What that reveals is written in
docs/security.md ("Patient search").
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, Sealed, encrypted_column, new_id, utcnow
from hub.inbox.models import Patient


class PatientSearchTerm(Base):
    """One blind index a patient is findable by (a name word's prefix). The primary key
    (term first) is the lookup; the patient index serves rewriting one patient's terms."""

    __tablename__ = "inbox_patient_search_term"
    __table_args__ = (Index("ix_inbox_patient_search_term_patient", "patient_id"),)

    term: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_patient.id", ondelete="CASCADE"), primary_key=True
    )


class PatientExternalId(Sealed, Base):
    """A record number another system gives the patient (an MRN), as HL7 PID-3 and FHIR
    Patient.identifier carry it: the assigning authority in clear, the value sealed and
    blind-indexed. One value per system names one patient."""

    __tablename__ = "inbox_patient_external_id"
    __table_args__ = (
        UniqueConstraint("system", "value_bidx"),
        Index("ix_inbox_patient_external_id_value", "value_bidx"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_patient.id", ondelete="CASCADE"), index=True
    )
    system: Mapped[str] = mapped_column(String(200))
    """The assigning authority ("MRN", "urn:oid:2.16.840.1.113883.3.72"): names a system."""
    value_enc: Mapped[bytes | None] = encrypted_column()
    value_bidx: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PatientMerge(Base):
    """An unverified patient folded into another, with what moved, so an admin can undo it.
    The source row stays (``Patient.merged_into_id`` set, its blind indexes cleared) and is
    erased with its target."""

    __tablename__ = "inbox_patient_merge"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    source_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_patient.id", ondelete="CASCADE"), index=True
    )
    target_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_patient.id", ondelete="CASCADE"), index=True
    )
    actor: Mapped[str] = mapped_column(String(80))
    moved: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Table -> ids of the rows that moved to the target (ids only, no PHI)."""
    copied: Mapped[list[str]] = mapped_column(default=list)
    """Fields the target lacked and took from the source ("phone", "email", "name")."""
    source_index: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The source's blind indexes (hex) before the merge, restored by an undo."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None]
    undone_by: Mapped[str | None] = mapped_column(String(80))


# Unknown numbers, newest first (the patient list's filter): the few among a million patients
# are found without walking the whole table.
Index(
    "ix_inbox_patient_unverified",
    Patient.id,
    postgresql_where=Patient.verified.is_(false()),
    sqlite_where=Patient.verified.is_(false()),
)
