"""Journey versions: a saved edit applies to new enrollments; running ones keep the version
they were enrolled under until a coordinator moves them to the current one.

``journey_journey.definition`` always holds the current version (what new enrollments follow,
so the enrollment paths need not know about versions); ``journey_version`` keeps every saved
text. An enrollment whose ``version`` is None follows the current one: saving a new version
first pins those to the version being replaced, in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.db import Database, utcnow
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Patient
from hub.journeys import lifecycle_queries as lq
from hub.journeys import queries
from hub.journeys.definitions import (
    JourneyDefinition,
    JourneyInvalid,
    StepDefinition,
    parse_journey,
    plan,
)
from hub.journeys.models import Journey, JourneyVersion, RunStatus, StepRun
from hub.templates import queries as template_queries

DEFAULT_MIGRATE_BATCH = 500
"""Enrollments moved to the current version per query round (their runs are loaded at once)."""
PENDING = (RunStatus.PLANNED, RunStatus.CLAIMED)

MAX_VERSION = 2**31 - 1
"""The largest version number the database's integer column holds."""


@dataclass(frozen=True)
class Saved:
    key: str
    version: int
    created: bool
    """A new journey (version 1)."""
    changed: bool
    """False when the text was the same as the current version's: nothing was written."""


@dataclass(frozen=True)
class VersionRow:
    version: int
    created_at: datetime
    current: bool
    active: int
    """Active enrollments that follow this version."""


@dataclass(frozen=True)
class Migrated:
    key: str
    version: int
    moved: int
    added: int
    """Step runs planned for steps the older version did not have."""
    cancelled: int
    """Pending step runs of steps the current version no longer has."""


async def template_keys(session: AsyncSession) -> list[str]:
    return [t.key for t in await template_queries.all_templates(session)]


async def do_template_keys(db: Database) -> list[str]:
    async with db.reader() as session:
        return await template_keys(session)


@dataclass(frozen=True)
class Summary:
    key: str
    name: str
    status: str
    version: int
    active: int
    """Active enrollments, whatever version they follow."""
    on_older: int
    """Of those, the ones on an earlier version."""


async def do_summaries(db: Database) -> list[Summary]:
    """Every journey with its current version and running enrollments, in name order."""
    async with db.reader() as session:
        found = []
        for journey in await queries.all_journeys(session):
            counts = await lq.active_by_version(session, journey.id)
            older = sum(n for v, n in counts.items() if v is not None and v != journey.version)
            found.append(
                Summary(
                    journey.key,
                    journey.name,
                    journey.status.value,
                    journey.version,
                    sum(counts.values()),
                    older,
                )
            )
        return found


async def save_version_in(
    session: AsyncSession,
    actor: Actor,
    text: str,
    definition: JourneyDefinition,
    *,
    expected_key: str | None = None,
) -> Saved:
    """Inside the caller's transaction: store ``text`` (already parsed as ``definition``) as
    the journey's next version, or create the journey at version 1. The same text again
    changes nothing."""
    if expected_key is not None and definition.key != expected_key:
        raise JourneyInvalid(
            "journey",
            1,
            "key",
            f'is "{definition.key}", but this is journey "{expected_key}"; a key cannot '
            "change: create a new journey instead",
        )
    journey = await queries.journey_by_key(session, definition.key)
    author = uuid.UUID(actor.id) if actor.kind == "staff" else None
    if journey is None:
        journey = Journey(
            key=definition.key,
            name=definition.name,
            purpose=definition.purpose.value,
            definition=text,
            version=1,
        )
        session.add(journey)
        await session.flush()
        session.add(
            JourneyVersion(journey_id=journey.id, version=1, definition=text, author_id=author)
        )
        await record(session, actor, "journey.install", "journey", journey.id, {"version": 1})
        return Saved(journey.key, 1, True, True)
    if journey.definition == text:
        return Saved(journey.key, journey.version, False, False)
    await lq.pin_followers(session, journey.id, journey.version)
    journey.version += 1
    journey.name, journey.purpose, journey.definition = (
        definition.name,
        definition.purpose.value,
        text,
    )
    session.add(
        JourneyVersion(
            journey_id=journey.id, version=journey.version, definition=text, author_id=author
        )
    )
    await session.flush()
    await record(
        session, actor, "journey.version", "journey", journey.id, {"version": journey.version}
    )
    return Saved(journey.key, journey.version, False, True)


async def do_save_journey(
    db: Database, actor: Actor, text: str, source: str, *, expected_key: str | None = None
) -> Saved:
    """Validate ``text`` with the journey parser (the templates it names must exist) and save
    it as a new version. Raises JourneyInvalid naming the line and field."""
    async with db.transaction() as session:
        definition = parse_journey(text, source, templates=await template_keys(session))
        return await save_version_in(session, actor, text, definition, expected_key=expected_key)


@lru_cache(maxsize=256)
def _parsed(key: str, version: int, text: str) -> JourneyDefinition:
    return parse_journey(text, f"journey {key} version {version}")


async def definition_for(
    session: AsyncSession, journey: Journey, version: int | None
) -> JourneyDefinition:
    """The definition an enrollment follows: its pinned version, else the current one."""
    if version is None or version == journey.version:
        return _parsed(journey.key, journey.version, journey.definition)
    text = await lq.version_text(session, journey.id, version)
    if text is None:  # a version row never goes away; a missing one is a bug, not a user error
        raise LookupError(f"journey {journey.key} has no version {version}")
    return _parsed(journey.key, version, text)


async def steps_of_all_versions(session: AsyncSession, journey: Journey) -> list[StepDefinition]:
    """The current version's steps, then steps only earlier versions have (newest first): the
    funnel and its drill-down show what running enrollments on older versions still do."""
    steps = list((await definition_for(session, journey, None)).steps)
    seen = {s.id for s in steps}
    for row in await lq.versions_of(session, journey.id):
        if row.version == journey.version:
            continue
        for step in _parsed(journey.key, row.version, row.definition).steps:
            if step.id not in seen:
                seen.add(step.id)
                steps.append(step)
    return steps


async def older_definitions(
    session: AsyncSession, journey: Journey
) -> dict[int, JourneyDefinition]:
    """Every earlier version's definition, by version (the bulk launch re-plans with them)."""
    return {
        row.version: _parsed(journey.key, row.version, row.definition)
        for row in await lq.versions_of(session, journey.id)
        if row.version != journey.version
    }


async def do_versions(db: Database, key: str) -> tuple[Journey, list[VersionRow], str]:
    """The journey, its versions newest first with their active enrollments, and its text."""
    async with db.reader() as session:
        journey = await queries.journey_by_key(session, key)
        if journey is None:
            raise NotFound(f"no journey with key {key}")
        counts = await lq.active_by_version(session, journey.id)
        rows = [
            VersionRow(
                v.version,
                v.created_at,
                v.version == journey.version,
                counts.get(v.version, 0)
                + (counts.get(None, 0) if v.version == journey.version else 0),
            )
            for v in await lq.versions_of(session, journey.id)
        ]
        return journey, rows, journey.definition


async def do_version_text(db: Database, key: str, version: int) -> str:
    if not 1 <= version <= MAX_VERSION:  # a number no version column can hold: none such
        raise NotFound(f"journey {key} has no version {version}")
    async with db.reader() as session:
        journey = await queries.journey_by_key(session, key)
        text = None if journey is None else await lq.version_text(session, journey.id, version)
        if text is None:
            raise NotFound(f"journey {key} has no version {version}")
        return text


async def do_migrate_enrollments(
    db: Database, actor: Actor, key: str, *, now: datetime | None = None
) -> Migrated:
    """Move every active enrollment on an older version to the current one: steps with the
    same id keep what happened to them and their pending runs are re-planned; new steps are
    planned (skipped when already overdue); pending runs of removed steps are cancelled."""
    now = now or utcnow()
    moved = added = cancelled = 0
    async with db.transaction() as session:
        journey = await queries.journey_by_key(session, key)
        if journey is None:
            raise NotFound(f"no journey with key {key}")
        definition = await definition_for(session, journey, None)
        while True:
            batch = await lq.active_on_older(
                session, journey.id, journey.version, DEFAULT_MIGRATE_BATCH
            )
            if not batch:
                break
            runs: dict[uuid.UUID, list[StepRun]] = {}
            for run in await lq.runs_of_enrollments(session, [e.id for e in batch]):
                runs.setdefault(run.enrollment_id, []).append(run)
            for enrollment in batch:
                patient = await session.get(Patient, enrollment.patient_id)
                zone = patient.time_zone if patient is not None else "UTC"
                own = runs.get(enrollment.id, [])
                steps = {s.id for s in definition.steps}
                for run in own:
                    if run.status in PENDING and run.step_id not in steps:
                        run.status = RunStatus.CANCELLED
                        run.reason = f"the step was removed in version {journey.version}"
                        cancelled += 1
                for planned in plan(definition, enrollment.anchor_at, now, zone=zone):
                    mine = [r for r in own if r.step_id == planned.step_id]
                    skip = (
                        f"due before the move to version {journey.version}"
                        if planned.skipped
                        else None
                    )
                    if not mine:
                        session.add(
                            StepRun(
                                enrollment_id=enrollment.id,
                                step_id=planned.step_id,
                                attempt=1,
                                due_at=planned.due_at,
                                status=RunStatus.SKIPPED if skip else RunStatus.PLANNED,
                                reason=skip,
                            )
                        )
                        added += 1
                    for run in mine:
                        # A claimed run is in a dispatch batch's hands right now: left as is.
                        if run.status is RunStatus.PLANNED:
                            run.due_at, run.claimed_until = planned.due_at, None
                            run.status = RunStatus.SKIPPED if skip else RunStatus.PLANNED
                            run.reason = skip
                enrollment.version = None
                moved += 1
            await session.flush()
        await record(
            session,
            actor,
            "journey.migrate",
            "journey",
            journey.id,
            {"version": journey.version, "enrollments": moved},
        )
        return Migrated(key, journey.version, moved, added, cancelled)
