"""A journey's lifecycle beyond pause and resume: what a stop would cancel (said before the
coordinator confirms it), resuming after a stop, and calling off one patient's enrollment."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.db import Database, utcnow
from hub.inbox.exceptions import NotFound
from hub.journeys import lifecycle_queries as lq
from hub.journeys import queries
from hub.journeys.definitions import DEFAULT_LATE_GRACE
from hub.journeys.models import Enrollment, EnrollmentStatus, Journey, RunStatus

STOPPED_REASON = "the journey was stopped"
"""The reason a stop writes on the runs it cancels; resuming after a stop looks for it."""
DUE_WHILE_STOPPED = "due while the journey was stopped"
CANCELLED_BY_STAFF = "cancelled by staff"


@dataclass(frozen=True)
class StopOutlook:
    key: str
    name: str
    status: str
    messages: int
    """Scheduled step messages a stop would cancel."""
    patients: int

    @property
    def sentence(self) -> str:
        def plural(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        if not self.messages:
            return "No message is scheduled: stopping cancels nothing that was planned."
        return (
            f"Stopping cancels {plural(self.messages, 'scheduled message')} for "
            f"{plural(self.patients, 'patient')}. You can resume it later; messages that fall "
            "due while it is stopped are skipped, not sent late."
        )


async def do_stop_outlook(db: Database, key: str) -> StopOutlook:
    async with db.reader() as session:
        journey = await queries.journey_by_key(session, key)
        if journey is None:
            raise NotFound(f"no journey with key {key}")
        messages, patients = await lq.pending_counts(session, journey.id)
        return StopOutlook(key, journey.name, journey.status.value, messages, patients)


async def restart_in(session: AsyncSession, journey: Journey, now: datetime) -> tuple[int, int]:
    """Inside the caller's transaction: the enrollments a stop stopped run again; the runs it
    cancelled are planned again when still ahead, and skipped when they fell due meanwhile (a
    reminder sent late is wrong). Returns (runs planned again, runs skipped)."""
    replanned = skipped = 0
    for run in await lq.stopped_runs(session, journey.id, STOPPED_REASON):
        if run.due_at >= now - DEFAULT_LATE_GRACE:
            run.status, run.reason, run.claimed_until = RunStatus.PLANNED, None, None
            replanned += 1
        else:
            run.status, run.reason = RunStatus.SKIPPED, DUE_WHILE_STOPPED
            skipped += 1
    await lq.reopen_stopped(session, journey.id)
    return replanned, skipped


async def do_cancel_enrollment(
    db: Database, actor: Actor, key: str, enrollment_id: uuid.UUID, *, now: datetime | None = None
) -> int:
    """Call off one patient's enrollment: its scheduled steps are cancelled. Returns how many.
    An enrollment that is no longer active changes nothing (0)."""
    now = now or utcnow()
    async with db.transaction() as session:
        journey = await queries.journey_by_key(session, key)
        enrollment = await session.get(Enrollment, enrollment_id)
        if journey is None or enrollment is None or enrollment.journey_id != journey.id:
            raise NotFound("no such enrollment in this journey")
        if enrollment.status is not EnrollmentStatus.ACTIVE:
            return 0
        enrollment.status, enrollment.cancelled_at = EnrollmentStatus.CANCELLED, now
        runs = await queries.runs_of(session, enrollment.id, (RunStatus.PLANNED, RunStatus.CLAIMED))
        for run in runs:
            run.status, run.reason = RunStatus.CANCELLED, CANCELLED_BY_STAFF
        await record(
            session,
            actor,
            "journey.enrollment.cancel",
            "patient",
            enrollment.patient_id,
            {"journey": key, "enrollment": str(enrollment.id), "runs": len(runs)},
        )
        return len(runs)
