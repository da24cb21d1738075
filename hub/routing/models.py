"""Routing tables: admin-edited rules, the urgent-triage phrase list, and hub-wide settings.

Rules keep their conditions and actions as JSON (validated by ``hub.routing.rules`` on every
write and re-checked on every read) so an admin can add a condition without a migration; the
columns around them are what the UI sorts and filters by. None of these tables hold PHI.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, new_id, utcnow
from hub.settings_store import HubSetting

__all__ = ["HubSetting", "RoutingRule", "TriagePhrase"]


class RoutingRule(Base):
    """One rule: when every condition holds for an inbound message, apply the actions."""

    __tablename__ = "routing_rule"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    position: Mapped[int] = mapped_column(Integer, default=0, index=True)
    """Evaluation order, lowest first. Kept contiguous (0, 1, 2...) by the admin actions; not
    unique, so a renumbering never trips over itself mid-flush."""
    name: Mapped[str] = mapped_column(String(120))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    conditions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stop_processing: Mapped[bool] = mapped_column(Boolean, default=False)
    """When this rule matches, later rules are not evaluated."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TriagePhrase(Base):
    """A phrase that makes a message urgent. Stored in its display form ("can't breathe");
    matching normalises case, apostrophes and spacing (``hub.routing.triage``)."""

    __tablename__ = "routing_triage_phrase"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    phrase: Mapped[str] = mapped_column(String(120), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    """Removed phrases are disabled rather than deleted, so re-adding one keeps its row."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
