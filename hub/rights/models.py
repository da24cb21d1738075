"""Rights records: files waiting to be deleted at a provider, and the daily retention runs.
Neither holds PHI: a provider's resource id (a recording sid) names a file, not a person."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, new_id, utcnow


class ProviderDeletion(Base):
    """A file the hub asked a provider to delete (a voicemail recording at Twilio). Erasure
    and the purge commit their own deletions at once and queue the provider's side here, so a
    provider that is down or slow is asked again later instead of the file being forgotten."""

    __tablename__ = "rights_provider_deletion"
    __table_args__ = (
        UniqueConstraint("provider", "resource_sid"),
        Index("ix_rights_provider_deletion_due", "done_at", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    provider: Mapped[str] = mapped_column(String(32))
    resource_sid: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(16))
    """"erasure" or "retention": why the file is being deleted."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    """Also the lease of a sweep that took the row: another sweep waits until it passes."""
    last_error: Mapped[str | None] = mapped_column(Text)
    """The provider's answer (a status and error code), never a file's content."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]


class RetentionRun(Base):
    """One day's retention purge. The day is the key, so however many workers' ticks start it
    there is one run; the worker holding its lease works, and one that died lets the lease run
    out so the next tick's job resumes after the last committed batch."""

    __tablename__ = "rights_retention_run"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    """ISO date (UTC) of the run."""
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    holder: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """What was deleted so far, by kind; batches add to it in their own transaction."""
