"""Append-only, hash-chained audit log of PHI access by people and API clients.

Each event's hash covers its own fields and the previous event's hash, and a single head row
holds the last sequence number and hash. Appends take the head row's lock, so the chain has no
forks and no gaps; editing, deleting or reordering any row, or truncating the tail, breaks
``verify``. Events hold ids and action names, never PHI.

Someone who can write the tables could still cut the newest rows and rewind the head to the last
row kept, leaving a shorter chain that verifies. An ``Anchor`` (a head's sequence and hash,
shipped off the machine) closes that: ``verify`` with an anchor also requires the chain to reach
it unchanged. On PostgreSQL, migration 0014's triggers refuse the cut in the first place.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import Base, Database, utcnow
from hub.errors import HubError

GENESIS_HASH = "0" * 64
"""The previous hash of the first event."""
VERIFY_BATCH = 5_000
"""Events read per query while verifying the chain."""


class AuditEvent(Base):
    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_subject", "subject_type", "subject_id"),)

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(80))
    subject_type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column()
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def expected_hash(self) -> str:
        return compute_hash(
            self.seq,
            self.at,
            self.actor,
            self.action,
            self.subject_type,
            self.subject_id,
            self.detail,
            self.prev_hash,
        )


class AuditHead(Base):
    """One row (id 1): the last sequence number and hash, locked by every append."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))


@dataclass(frozen=True)
class Actor:
    """Who touched PHI: a staff member, an API client, or the system acting for a command."""

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    @classmethod
    def staff(cls, staff_id: object) -> Actor:
        return cls("staff", str(staff_id))

    @classmethod
    def api(cls, client_id: str) -> Actor:
        return cls("api", client_id)

    @classmethod
    def system(cls, what: str) -> Actor:
        return cls("system", what)


def compute_hash(
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    detail: dict[str, Any],
    prev_hash: str,
) -> str:
    canonical = json.dumps(
        [
            seq,
            at.isoformat(timespec="microseconds"),
            actor,
            action,
            subject_type,
            subject_id,
            detail,
            prev_hash,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    subject_type: str,
    subject_id: object,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event inside the caller's transaction (call it last: it holds the chain lock)."""
    head = await session.scalar(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    if head is None:
        raise RuntimeError("audit_head row missing: run `hub migrate`")
    event = AuditEvent(
        seq=head.seq + 1,
        at=utcnow(),
        actor=str(actor),
        action=action,
        subject_type=subject_type,
        subject_id=str(subject_id),
        detail=detail or {},
        prev_hash=head.hash,
    )
    event.hash = event.expected_hash()
    head.seq, head.hash = event.seq, event.hash
    session.add(event)
    await session.flush()
    return event


_ANCHOR = re.compile(r"(\d+):([0-9a-f]{64})")


@dataclass(frozen=True)
class Anchor:
    """A head as it once was: the chain must still reach row ``seq`` with this ``hash``."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, value: str) -> Anchor:
        match = _ANCHOR.fullmatch(value.strip().lower())
        if match is None:
            raise HubError(
                "an audit anchor is SEQ:HASH as printed by `hub audit anchor` (a row number, a "
                "colon and 64 hex digits)"
            )
        return cls(int(match[1]), match[2])


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    bad_seq: int | None = None
    reason: str | None = None
    head: Anchor | None = None
    """The head the walk ended at, when the chain verified."""


async def _events(session: AsyncSession) -> AsyncIterator[AuditEvent]:
    last = 0
    while True:
        batch = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.seq > last)
                .order_by(AuditEvent.seq)
                .limit(VERIFY_BATCH)
                .execution_options(populate_existing=True)
            )
        ).all()
        if not batch:
            return
        for event in batch:
            yield event
        last = batch[-1].seq
        session.expunge_all()


async def verify(session: AsyncSession, anchor: Anchor | None = None) -> VerifyResult:
    """Walk the chain from the first event; report the first row that does not fit.

    With an anchor, the chain must also pass through it: a shorter chain (tail cut, head rewound)
    or a different row at the anchor (a rewrite with recomputed hashes) is reported.
    """
    if anchor is not None and anchor.seq == 0 and anchor.hash != GENESIS_HASH:
        return VerifyResult(False, 0, 0, "the anchor for row 0 must be the genesis hash")
    prev_hash, expected_seq, checked = GENESIS_HASH, 1, 0
    async for ev in _events(session):
        if ev.seq != expected_seq:
            return VerifyResult(False, checked, expected_seq, f"row {expected_seq} is missing")
        if ev.prev_hash != prev_hash:
            return VerifyResult(
                False, checked, ev.seq, "its previous hash does not match the row before it"
            )
        if ev.expected_hash() != ev.hash:
            return VerifyResult(False, checked, ev.seq, "its contents do not match its hash")
        if anchor is not None and ev.seq == anchor.seq and ev.hash != anchor.hash:
            return VerifyResult(
                False,
                checked,
                ev.seq,
                "its hash differs from the anchor: this row or one before it was rewritten",
            )
        prev_hash, expected_seq, checked = ev.hash, ev.seq + 1, checked + 1
    if anchor is not None and anchor.seq > checked:
        return VerifyResult(
            False,
            checked,
            checked + 1,
            f"the chain ends at row {checked} but the anchor records row {anchor.seq}: "
            "rows were cut from the end and the head rewound",
        )
    head = await session.scalar(select(AuditHead).where(AuditHead.id == 1))
    if head is None:
        return VerifyResult(False, checked, None, "the audit_head row is missing")
    if head.seq != checked or head.hash != prev_hash:
        return VerifyResult(
            False,
            checked,
            checked + 1 if head.seq > checked else head.seq,
            f"the chain ends at row {checked} but the head records row {head.seq}: "
            "rows were deleted from the end or the head was edited",
        )
    return VerifyResult(True, checked, head=Anchor(head.seq, head.hash))


async def anchor(session: AsyncSession) -> Anchor:
    """The head of a verified chain; refuses a broken one (an anchor must vouch for the chain)."""
    # The head the walk verified, not a fresh read: appends committed meanwhile are unverified.
    result = await verify(session)
    if not result.ok or result.head is None:
        raise HubError(
            f"audit chain broken at row {result.bad_seq}: {result.reason}; no anchor printed"
        )
    return result.head


async def do_audit_export(
    db: Database,
    actor: Actor,
    what: str,
    subject_type: str,
    subject_id: object,
    detail: dict[str, Any] | None = None,
) -> None:
    """An export of patient data left the hub (a CSV downloaded, a bundle fetched): who took
    what, and how much, never the data itself. For exports whose reading is not already
    audited inside its own transaction."""
    async with db.transaction() as session:
        await record(session, actor, f"{what}.export", subject_type, subject_id, detail)
