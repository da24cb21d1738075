"""Figures for the operations metrics, read from the database that every process shares.

Sends and provider errors are totals over all time, but counting ten million messages on each
scrape is not cheap. Ids are UUIDv7, so "made before T" is a primary-key range: rows made more
than ``SETTLED_AFTER`` ago are counted once into a stored base (``SendTotals``, kept in Redis by
web/), and a scrape counts only the rows made since the base's boundary. A message whose outcome
changes after it has settled is not counted again (a late delivery receipt days later)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hub import ops_metrics_queries as q
from hub.db import Database
from hub.enums import MessageStatus

SETTLED_AFTER = timedelta(days=3)
"""A message made this long ago has its outcome (retries and quiet-hour deferrals are shorter;
a provider's last receipt comes within hours): it moves from the live count into the base."""
FOLD_STEP = timedelta(hours=1)
"""The base's boundary moves in steps of at least this much, so folding is rare and small."""
SEND_OUTCOMES = ("sent", "delivered", "failed", "undelivered")
"""What a send can reach; a delivered message has also been sent (see docs/operations.md)."""
K = TypeVar("K", str, tuple[str, str])
_DELIVERED = {MessageStatus.DELIVERED.value, MessageStatus.READ.value}
_REACHED_PROVIDER = {MessageStatus.SENT.value} | _DELIVERED


def id_floor(at: datetime) -> uuid.UUID:
    """The smallest UUIDv7 made at or after ``at``: the rest of the bits are zero, below any
    real id of that millisecond (whose version and variant bits are set)."""
    ms = int(at.timestamp() * 1000)
    return uuid.UUID(int=ms << 80)


def id_time(value: uuid.UUID) -> datetime:
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC)


def _add(a: dict[K, int], b: dict[K, int]) -> dict[K, int]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in a.keys() | b.keys()}


@dataclass
class SendTotals:
    """Outbound messages made per channel, the outcomes they reached per (channel, outcome),
    and provider errors per (provider, code), for the messages made before ``until`` (None:
    up to now)."""

    until: uuid.UUID | None = None
    made: dict[str, int] = field(default_factory=dict)
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)

    def plus(self, other: SendTotals) -> SendTotals:
        return SendTotals(
            until=other.until,
            made=_add(self.made, other.made),
            outcomes=_add(self.outcomes, other.outcomes),
            errors=_add(self.errors, other.errors),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "until": str(self.until) if self.until else None,
            "made": self.made,
            "outcomes": [[*k, n] for k, n in self.outcomes.items()],
            "errors": [[*k, n] for k, n in self.errors.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SendTotals:
        return cls(
            until=uuid.UUID(data["until"]) if data.get("until") else None,
            made={str(k): int(n) for k, n in data["made"].items()},
            outcomes={(str(a), str(b)): int(n) for a, b, n in data["outcomes"]},
            errors={(str(a), str(b)): int(n) for a, b, n in data["errors"]},
        )


def _totals(
    messages: Iterable[tuple[str, str, bool, int]],
    errors: Iterable[tuple[str, str, int]],
    until: uuid.UUID | None,
) -> SendTotals:
    totals = SendTotals(until=until)
    for channel, status, has_sent_at, n in messages:
        totals.made[channel] = totals.made.get(channel, 0) + n
        reached = []
        if has_sent_at or status in _REACHED_PROVIDER:
            reached.append("sent")
        if status in _DELIVERED:
            reached.append("delivered")
        if status in ("failed", "undelivered"):
            reached.append(status)
        for outcome in reached:
            key = (channel, outcome)
            totals.outcomes[key] = totals.outcomes.get(key, 0) + n
    for provider, code, n in errors:
        totals.errors[(provider, code)] = totals.errors.get((provider, code), 0) + n
    return totals


async def do_send_totals(db: Database, lo: uuid.UUID, hi: uuid.UUID | None) -> SendTotals:
    """Totals of the messages (and delivery attempts) whose ids are in [lo, hi)."""
    async with db.reader() as session:
        messages = await q.outbound_message_counts(session, lo, hi)
        errors = await q.provider_error_counts(session, lo, hi)
    return _totals(messages, errors, hi)


NO_CODE = "unknown"
"""Reason of a failed run whose message is gone (erased) or carries no code."""


async def do_step_failure_totals(db: Database) -> dict[str, int]:
    """Journey step runs that failed at dispatch (no message could be made or rendered), by
    the reason code on their message (``no_channel``, ``template_render``...)."""
    async with db.reader() as session:
        rows = await q.failed_step_counts(session)
    totals: dict[str, int] = {}
    for code, n in rows:
        key = code or NO_CODE
        totals[key] = totals.get(key, 0) + n
    return totals


async def do_oldest_pending_effect(db: Database) -> datetime | None:
    async with db.reader() as session:
        return await q.oldest_pending_effect(session)
