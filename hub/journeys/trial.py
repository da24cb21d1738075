""" "Send a test to me": a coordinator receives a journey's step texts, as the preview shows
them for the made-up sample patient, at their own staff email address.

Never to a patient: the only address it can reach is the requesting staff member's own login
email, read by the worker from their account. The request is audited and leaves through the
outbox after its commit; the job carries the staff id, the journey's key and version and the
sample's date, time, zone and language (made up, no PHI), and the worker renders the texts
again from those, so nothing rendered waits in Redis.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from hub.audit import Actor, record
from hub.db import Database, utcnow
from hub.inbox.exceptions import NotFound
from hub.inbox.models import StaffUser
from hub.journeys import queries
from hub.journeys.timeline import Sample, TimelineStep, do_timeline
from hub.journeys.versions import definition_for
from hub.outbox import add_effect

TEST_TOPIC = "job:journey_test"
"""The outbox topic of a test send (worker/effects.py maps it to the job)."""


@dataclass(frozen=True)
class TrialRequest:
    staff_id: uuid.UUID
    key: str
    version: int
    day: date
    at: time
    zone: str
    language: str

    def encode(self) -> str:
        return "|".join(
            (
                str(self.staff_id),
                self.key,
                str(self.version),
                self.day.isoformat(),
                self.at.strftime("%H:%M"),
                self.zone,
                self.language,
            )
        )

    @classmethod
    def decode(cls, text: str) -> TrialRequest:
        staff, key, version, day, at, zone, language = text.split("|")
        return cls(
            uuid.UUID(staff),
            key,
            int(version),
            date.fromisoformat(day),
            time.fromisoformat(at),
            zone,
            language,
        )


@dataclass(frozen=True)
class TrialMail:
    to: str
    subject: str
    text: str


async def do_request_test(
    db: Database, actor: Actor, staff_id: uuid.UUID, key: str, sample: Sample
) -> tuple[uuid.UUID, str]:
    """Queue the test email of journey ``key`` (its current version) to the staff member's own
    address; audited. Returns the outbox effect and the address (for the page to name)."""
    async with db.transaction() as session:
        journey = await queries.journey_by_key(session, key)
        staff = await session.get(StaffUser, staff_id)
        if journey is None:
            raise NotFound(f"no journey with key {key}")
        if staff is None or not staff.active:
            raise NotFound("no such staff member")
        local = sample.anchor_at.astimezone(ZoneInfo(sample.time_zone))
        request = TrialRequest(
            staff_id,
            key,
            journey.version,
            local.date(),
            local.time().replace(second=0, microsecond=0),
            sample.time_zone,
            sample.language,
        )
        effect = add_effect(session, TEST_TOPIC, {"test": request.encode(), "queue": "default"})
        await record(
            session,
            actor,
            "journey.test.send",
            "journey",
            journey.id,
            {"version": journey.version, "to": "own staff email"},
        )
        return effect.id, staff.email


def mail_text(name: str, version: int, request: TrialRequest, steps: list[TimelineStep]) -> str:
    zone = ZoneInfo(request.zone)
    lines = [
        f"Test of the journey {name} (version {version}) for a made-up patient, Alex Sample "
        f"({request.language}), with an appointment on {request.day.isoformat()} at "
        f"{request.at.strftime('%H:%M')} in {request.zone}. No patient was sent anything.",
        "",
    ]
    for step in steps:
        when = step.due_at.astimezone(zone).strftime("%a %b %-d %Y, %H:%M %Z")
        skipped = f" (would be skipped: {step.skipped})" if step.skipped else ""
        lines.append(f"== {step.step_id}, {when}{skipped}")
        for text in step.texts:
            if text.problem:
                lines.append(f"-- {text.channel}: not sent: {text.problem}")
                continue
            count = f" ({text.segments})" if text.segments else ""
            lines.append(f"-- {text.channel}{count}")
            if text.subject:
                lines.append(f"Subject: {text.subject}")
            lines.append(text.body or "")
        lines.append("")
    return "\n".join(lines)


async def do_test_mail(
    db: Database, encoded: str, clinic: dict[str, Any], *, now: datetime | None = None
) -> TrialMail | None:
    """The email a test request asks for; None when its staff member is gone or deactivated."""
    request = TrialRequest.decode(encoded)
    async with db.reader() as session:
        staff = await session.get(StaffUser, request.staff_id)
        journey = await queries.journey_by_key(session, request.key)
        if staff is None or not staff.active or journey is None:
            return None
        definition = await definition_for(session, journey, request.version)
        name, to = journey.name, staff.email
    anchor = datetime.combine(request.day, request.at, tzinfo=ZoneInfo(request.zone))
    sample = Sample(request.language, request.zone, anchor, now or utcnow())
    steps = await do_timeline(db, definition, sample, clinic)
    subject = f"Test: {name}, version {request.version} ({len(steps)} steps)"
    return TrialMail(to, subject, mail_text(name, request.version, request, steps))
