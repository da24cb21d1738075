"""Journeys in the database: the source of truth for what is due (Redis only carries jobs).

An enrollment is one patient in one journey for one anchor (an appointment, a discharge, an
enrollment time); its step runs are planned up front with their due times. A step run is sent
under a unique dispatch key (enrollment, step, attempt), so a retried or duplicated batch job
can never send it twice.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, Sealed, encrypted_column, new_id, utcnow
from hub.enums import str_enum


class JourneyStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    STOPPED = "stopped"


class AppointmentStatus(enum.StrEnum):
    """What the clinic's feed (cohort CSV, API, FHIR) or the patient said of an appointment;
    the outcome states are FHIR Appointment.status codes (``hub.journeys.outcomes``)."""

    BOOKED = "booked"
    CONFIRMED = "confirmed"
    """The patient confirmed it (a reply to a reminder)."""
    CANCELLED = "cancelled"
    ARRIVED = "arrived"
    """The patient is there (FHIR arrived, checked-in): attended, as far as no-shows go."""
    FULFILLED = "fulfilled"
    """The visit took place."""
    NOSHOW = "noshow"
    ENTERED_IN_ERROR = "entered_in_error"
    """The booking should never have existed: left out of every figure."""


class EnrollmentStatus(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    STOPPED = "stopped"


class RunStatus(enum.StrEnum):
    PLANNED = "planned"
    CLAIMED = "claimed"
    """Taken by a dispatch batch; a batch that dies leaves it claimed until the lease ends."""
    SENT = "sent"
    """Handed to the messaging layer (queued, deferred by quiet hours, or on its way)."""
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Journey(Base):
    __tablename__ = "journey_journey"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(16))
    definition: Mapped[str] = mapped_column(Text)
    """The YAML as written (re-parsed on load, so validation rules apply to stored journeys)."""
    status: Mapped[JourneyStatus] = mapped_column(
        str_enum(JourneyStatus, "journey_status"), default=JourneyStatus.ACTIVE
    )
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """The version ``definition`` holds: the one new enrollments follow."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JourneyVersion(Base):
    """Every saved definition of a journey, kept so that enrollments made under an earlier
    one go on with it (``hub.journeys.versions``). Never changed once written."""

    __tablename__ = "journey_version"
    __table_args__ = (UniqueConstraint("journey_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    journey_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("journey_journey.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[str] = mapped_column(Text)
    author_id: Mapped[uuid.UUID | None]
    """The staff member who saved it (None: the command line or a migration)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


MAX_PLACE_CHARS = 200
"""Longest appointment location or provider name accepted (a booking system's display text)."""


class Appointment(Sealed, Base):
    """An appointment as the clinic's scheduling system knows it. Location and provider are
    sealed: "Oncology, room 4" or a psychiatrist's name says what the patient is treated for."""

    __tablename__ = "journey_appointment"
    __table_args__ = (
        UniqueConstraint("source", "external_id"),
        Index("ix_journey_appointment_start_at", "start_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_patient.id", ondelete="CASCADE"), index=True
    )
    source: Mapped[str] = mapped_column(String(40), default="api")
    external_id: Mapped[str] = mapped_column(String(120))
    start_at: Mapped[datetime]
    location_enc: Mapped[bytes | None] = encrypted_column()
    provider_enc: Mapped[bytes | None] = encrypted_column()
    status: Mapped[AppointmentStatus] = mapped_column(
        str_enum(AppointmentStatus, "appointment_status"), default=AppointmentStatus.BOOKED
    )
    cancelled_at: Mapped[datetime | None]
    """When the cancellation came in (the reports tell late ones from those in time)."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Enrollment(Base):
    __tablename__ = "journey_enrollment"
    __table_args__ = (UniqueConstraint("journey_id", "dedupe_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    journey_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("journey_journey.id", ondelete="CASCADE")
    )
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("inbox_patient.id", ondelete="CASCADE"), index=True
    )
    appointment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("journey_appointment.id", ondelete="SET NULL"), index=True
    )
    dedupe_key: Mapped[str] = mapped_column(String(200))
    """Patient + appointment (or anchor time): enrolling the same again changes nothing."""
    anchor_at: Mapped[datetime]
    status: Mapped[EnrollmentStatus] = mapped_column(
        str_enum(EnrollmentStatus, "enrollment_status"), default=EnrollmentStatus.ACTIVE
    )
    confirmed_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    version: Mapped[int | None] = mapped_column(Integer)
    """The journey version this enrollment follows; None: the journey's current one. Saving a
    new version first pins every None to the version it replaces, so no enrollment path (CSV,
    FHIR, API, EHR) has to stamp it and a running enrollment never changes under its patient."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StepRun(Base):
    __tablename__ = "journey_step_run"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", "attempt"),
        Index("ix_journey_step_run_due", "status", "due_at"),
        # The reports take the enrollments with a step due in a period (index only).
        Index("ix_journey_step_run_due_enrollment", "due_at", "enrollment_id"),
        # The report rollups' trigger finds the run of a message whose status changed.
        Index("ix_journey_step_run_message", "message_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    enrollment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("journey_enrollment.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[str] = mapped_column(String(80))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    due_at: Mapped[datetime]
    status: Mapped[RunStatus] = mapped_column(
        str_enum(RunStatus, "run_status"), default=RunStatus.PLANNED
    )
    claimed_until: Mapped[datetime | None]
    """Lease of the batch that claimed it; after it a new batch may take the run again."""
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_message.id", ondelete="SET NULL")
    )
    channel: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    """Why skipped, failed, or sent on a fallback channel (no PHI)."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SurveyAnswer(Sealed, Base):
    """A survey answer: a score, or (for a free-text question) the patient's words, encrypted
    like every message body."""

    __tablename__ = "journey_survey_answer"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id"),
        # The csat report's comments, newest first (migration 0034).
        Index(
            "ix_journey_survey_answer_comment",
            "created_at",
            postgresql_where=text("text_enc IS NOT NULL AND score IS NOT NULL"),
            sqlite_where=text("text_enc IS NOT NULL AND score IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    enrollment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("journey_enrollment.id", ondelete="CASCADE")
    )
    step_id: Mapped[str] = mapped_column(String(80))
    score: Mapped[int | None] = mapped_column(Integer)
    text_enc: Mapped[bytes | None] = encrypted_column()
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("inbox_message.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CohortMapping(Base):
    """The column mapping a coordinator last confirmed for a cohort file's header
    (``hub.journeys.mapping``): the next export with the same columns opens with it, on the
    page and on the command line. Column names and choices only, no patient data."""

    __tablename__ = "journey_cohort_mapping"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    header_key: Mapped[str] = mapped_column(String(64), unique=True)
    """``mapping.header_key``: a hash of the header's names and separator."""
    mapping: Mapped[str] = mapped_column(Text)
    """``ColumnMapping.as_json()``, as JSON text."""
    author_id: Mapped[uuid.UUID | None]
    """Who confirmed it last (None: the command line)."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
