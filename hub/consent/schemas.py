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
    """For a deferral: the earliest time the send may go (quiet hours, frequency cap)."""
    warnings: tuple[str, ...] = ()
    """Allowed, but a person should know: "it is 22:40 for the patient"."""

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOWED

    @property
    def deferred(self) -> bool:
        return self.outcome is Outcome.DEFERRED

    def covers(self, patient_id: uuid.UUID, channel: Channel) -> bool:
        return self.allowed and self.patient_id == patient_id and self.channel == channel

    def summary(self) -> str:
        """One line for the record of a send: "sms: refused (opted_out): patient opted out..."."""
        return f"{self.channel.value}: {self.outcome.value} ({self.code}): {self.reason}"


@dataclass(frozen=True)
class ChannelChoice:
    """``choose_channel``'s answer: the channel to use (allowed or deferred), and why each
    channel before it in the patient's order was passed over."""

    decision: Decision | None
    passed_over: tuple[Decision, ...]

    @property
    def reasons(self) -> list[str]:
        return [d.summary() for d in self.passed_over]
