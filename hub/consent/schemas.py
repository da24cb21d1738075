"""The Decision every send carries."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

from hub.consent.models import Purpose
from hub.enums import Channel


class Outcome(enum.StrEnum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    patient_id: uuid.UUID
    channel: Channel
    purpose: Purpose
    at: datetime
    code: str
    """Machine code: "ok", "opted_out", "no_address", "unreachable", "no_opt_in"."""
    reason: str
    """For people: "patient opted out of SMS on 2026-11-02 by replying STOP"."""
    not_before: datetime | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOWED

    def covers(self, patient_id: uuid.UUID, channel: Channel) -> bool:
        return self.allowed and self.patient_id == patient_id and self.channel == channel
