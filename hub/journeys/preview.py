"""The launch dry run: what enrolling a cohort would do, counted before anything is written.

The file goes through the launch's own steps (``hub.journeys.cohort`` reads and parses the
rows, ``hub.journeys.bulk.ChunkWork`` matches patients and plans each enrollment) in read-only
sessions, and every step a new enrollment plans is put to ``choose_for_step``, the decision
the dispatch makes when the step is due: the consent gate over the patient's records and the
clinic's policy, and the template variant in the patient's language. A patient the launch
would create is judged as they would be stored. So a coordinator learns, with counts, that a
survey step needs an opt-in nobody has or that 38 patients prefer a language a template lacks,
while nothing has been enrolled yet.

What it cannot know is left out: conditions that depend on replies (``skip_if_confirmed``,
``only_if_no_reply``, scores), frequency caps and quiet hours (they defer, never drop), and
consent that changes before the step is due.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent import actions as consent
from hub.consent import queries as consent_queries
from hub.consent.models import ConsentRecord, Purpose
from hub.consent.rules import ConsentPolicy, in_window
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel
from hub.inbox import queries as inbox_queries
from hub.inbox.models import DEFAULT_CHANNEL_ORDER, Patient
from hub.journeys import bulk_queries
from hub.journeys.bulk import (
    DEFAULT_CHUNK_ROWS,
    UNSEALED,
    ChunkWork,
    EnrollRow,
    LaunchJourney,
    ParsedChunk,
    load_journey,
)
from hub.journeys.bulk_queries import AppointmentRecord, EnrollmentRecord
from hub.journeys.cohort import (
    MAX_ROW_ERRORS_KEPT,
    Reading,
    clinic_zone,
    parse_chunk,
    read_chunks,
)
from hub.journeys.definitions import StepDefinition
from hub.journeys.mapping import ColumnMapping
from hub.journeys.models import EnrollmentStatus, RunStatus
from hub.journeys.step_choice import (
    NO_VARIANT_CODE,
    StepChoice,
    VariantCache,
    choose_for_step,
    language_label,
)

WORDS = {
    "no_opt_in": "no opt-in",
    "opted_out": "opted out",
    "no_address": "no address",
    "unreachable": "unreachable",
    "channel_unavailable": "not connected",
    "call_outside_window": "outside the call window",
    "no_variant": "not in their language",
}
"""How a refusal code reads in a warning ("sms: opted out 2")."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class StepOutlook:
    """What one step would do for the patients the launch enrolls (counts only, no PHI)."""

    step_id: str
    template: str
    purpose: Purpose
    opt_in_required: bool
    planned: int = 0
    """New enrollments that plan the step."""
    late: int = 0
    """...of which it is due before enrollment: skipped, never sent late."""
    sending: int = 0
    """Would be sent in the patient's language (deferred by quiet hours or caps included)."""
    fallback: dict[str, int] = field(default_factory=dict)
    """Would be sent in the journey's fallback language, by the patient's language."""
    fallback_locale: str | None = None
    untranslated: dict[str, int] = field(default_factory=dict)
    """Would be skipped (no variant in their language), by the patient's language."""
    untranslated_channels: dict[str, set[str]] = field(default_factory=dict)
    no_channel: int = 0
    """Would fail: no channel of the step may be used for them."""
    no_opt_in: int = 0
    """...of which at least one channel was refused for want of an opt-in."""
    refusals: dict[str, int] = field(default_factory=dict)
    """Of those, "sms: opted out" -> patients."""

    @property
    def due(self) -> int:
        return self.planned - self.late

    def summary(self) -> str:
        """One line: "sms_24h (appointment_reminder): 120 planned: 80 would be sent, ..."."""
        parts = [f"{self.sending} would be sent"]
        if self.fallback:
            parts.append(f"{sum(self.fallback.values())} in the fallback language")
        if self.untranslated:
            parts.append(f"{sum(self.untranslated.values())} skipped: not in their language")
        if self.no_channel:
            parts.append(f"{self.no_channel} would fail: no channel may be used")
        if self.late:
            parts.append(f"{self.late} skipped: due before enrollment")
        return f"{self.step_id} ({self.template}): {self.planned} planned: {', '.join(parts)}"

    def warnings(self) -> list[str]:
        """Sentences for the coordinator, worst first."""
        said = []
        step = f"Step {self.step_id}"
        if self.no_opt_in:
            have = self.due - self.no_opt_in
            every = "all " if self.no_opt_in == self.due else ""
            said.append(
                f"{step} needs a {self.purpose.value} opt-in: {have} of {self.due} patients "
                f"have one on a channel it may use; it would fail for {every}{self.no_opt_in}."
            )
        others = self.no_channel - self.no_opt_in
        if others:
            why = "; ".join(f"{k} {n}" for k, n in sorted(self.refusals.items()))
            said.append(
                f"{step}: {others} of {self.due} patients have no channel it may use "
                f"({why}); it would fail for them."
            )
        for language, n in sorted(self.untranslated.items(), key=lambda kv: (-kv[1], kv[0])):
            channels = ", ".join(sorted(self.untranslated_channels[language]))
            said.append(
                f"{_plural(n, 'patient')} prefer {language}; template {self.template} has no "
                f"{language} variant for {channels}: {step} would be skipped for them "
                "(add the variant, or set fallback_language in the journey)."
            )
        for language, n in sorted(self.fallback.items(), key=lambda kv: (-kv[1], kv[0])):
            said.append(
                f"{_plural(n, 'patient')} prefer {language}; template {self.template} has no "
                f"{language} variant: {step} would be sent to them in {self.fallback_locale} "
                "(the journey's fallback language)."
            )
        return said


@dataclass
class LaunchPreview:
    journey: str
    name: str
    rows: int = 0
    enroll: int = 0
    """New enrollments the launch would make (the question asks about these)."""
    already: int = 0
    """Rows whose patient is already enrolled for that appointment (moves and cancellations
    still apply)."""
    patients_created: int = 0
    cancelled: int = 0
    """New enrollments whose appointment is cancelled in the file: enrolled, nothing sent."""
    error_count: int = 0
    errors: list[str] = field(default_factory=list)
    """"line N: what is wrong", the first MAX_ROW_ERRORS_KEPT."""
    steps: list[StepOutlook] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [w for s in self.steps for w in s.warnings()]

    @property
    def nothing_to_do(self) -> bool:
        return self.enroll == 0 and self.already == 0

    def report_lines(self) -> list[str]:
        """The dry run as text (``hub journey launch`` prints it before asking)."""
        lines = [
            f"Dry run of {self.journey} ({self.rows} rows): {self.enroll} would be enrolled "
            f"({self.patients_created} new patients), {self.already} already enrolled, "
            f"{self.error_count} rows with errors"
        ]
        return lines + self._step_lines()

    def outlook_lines(self) -> list[str]:
        """What the steps will do for the patients a launch enrolled (``--yes``: printed after
        the launch, which was not asked to wait for a confirmation)."""
        header = f"What the steps of {self.journey} will do for the patients just enrolled:"
        return [header, *self._step_lines()]

    def _step_lines(self) -> list[str]:
        lines = [f"  step {step.summary()}" for step in self.steps]
        if self.cancelled:
            lines.append(f"  {self.cancelled} have a cancelled appointment: nothing is sent")
        return lines + [f"Warning: {warning}" for warning in self.warnings]

    def error_lines(self) -> list[str]:
        """The rows that would not be enrolled, by line."""
        if not self.error_count:
            return []
        head = f"{self.error_count} rows would not be enrolled:"
        more = self.error_count - len(self.errors)
        tail = [f"  ...and {more} more"] if more else []
        return [head, *(f"  {e}" for e in self.errors), *tail]


@dataclass
class _Carried:
    """Patients, appointments and enrollments earlier chunks would have created: the launch
    commits each chunk before reading the next, so a later row meets them as stored."""

    by_phone: dict[bytes, object] = field(default_factory=dict)
    by_email: dict[bytes, object] = field(default_factory=dict)
    appointments: dict[str, AppointmentRecord] = field(default_factory=dict)
    enrollments: dict[str, EnrollmentRecord] = field(default_factory=dict)


async def _outlook(db: Database, journey: LaunchJourney) -> tuple[LaunchPreview, ConsentPolicy]:
    """An empty preview of ``journey``'s steps, and the clinic's consent policy."""
    definition = journey.definition
    async with db.reader() as session:
        policy = await consent.load_policy(session)
    preview = LaunchPreview(journey.key, definition.name)
    preview.steps = [
        StepOutlook(
            s.id,
            s.template,
            s.purpose or definition.purpose,
            (s.purpose or definition.purpose) in policy.opt_in_required,
            fallback_locale=definition.fallback_language,
        )
        for s in definition.steps
    ]
    return preview, policy


async def do_preview_launch(
    db: Database,
    ring: KeyRing,
    journey_key: str,
    lines: Iterable[str],
    *,
    region: str,
    available: Iterable[Channel],
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    now: datetime | None = None,
    mapping: ColumnMapping | None = None,
) -> LaunchPreview:
    """The dry run of ``hub.journeys.cohort.launch`` for the same arguments; ``available``:
    the channels connected on this hub (``connected_providers``). Writes nothing."""
    journey = await load_journey(db, journey_key)
    now = now or utcnow()
    preview, policy = await _outlook(db, journey)
    judging = _Judging(preview, journey, policy, set(available))
    carried = _Carried()
    reading = Reading(region, mapping, await clinic_zone(db))
    for raw in read_chunks(lines, chunk_rows, reading):
        chunk = await parse_chunk(ring, region, raw, reading)
        await _preview_chunk(db, ring, journey, chunk, now, carried, judging)
    return preview


async def judged_launch(
    db: Database, journey_key: str, *, available: Iterable[Channel]
) -> tuple[LaunchPreview, Callable[[ChunkWork], Awaitable[None]]]:
    """The dry run's step counts gathered by the launch itself, for a launch nobody is asked
    to confirm (``hub journey launch --yes``): the file is read once, not twice. Pass the
    callable to ``cohort.launch(on_committed=...)``; each committed chunk's new enrollments are
    judged as the dry run judges them, and the preview's steps and warnings then say what the
    journey will do for them. Its row counts stay empty: the launch's own report has them."""
    journey = await load_journey(db, journey_key)
    preview, policy = await _outlook(db, journey)
    judging = _Judging(preview, journey, policy, set(available))

    async def on_committed(work: ChunkWork) -> None:
        async with db.reader() as session:
            await judging.judge(session, work, [e for e in work.enrollments.values() if e.new])

    return preview, on_committed


async def _preview_chunk(
    db: Database,
    ring: KeyRing,
    journey: LaunchJourney,
    chunk: ParsedChunk,
    now: datetime,
    carried: _Carried,
    judging: _Judging,
) -> None:
    preview = judging.preview
    work = ChunkWork(ring, journey, now, writes=False)
    work.by_phone.update(carried.by_phone)  # type: ignore[arg-type]
    work.by_email.update(carried.by_email)  # type: ignore[arg-type]
    work.appointments.update(carried.appointments)
    work.enrollments.update(carried.enrollments)
    async with db.reader() as session:
        async with bulk_queries.planned_for_these_values(session):
            items = await work.load(session, chunk.parsed)
        await work.enroll_all(items)
        new = [e for e in work.enrollments.values() if e.new and e.key not in carried.enrollments]
        await judging.judge(session, work, new)
    preview.rows += chunk.rows
    preview.enroll += work.enrolled
    preview.already += work.already
    preview.patients_created += len(work.new_patients)
    errors = sorted(chunk.errors + work.errors)
    preview.error_count += len(errors)
    room = MAX_ROW_ERRORS_KEPT - len(preview.errors)
    preview.errors += [f"line {line}: {what}" for line, what in errors[: max(room, 0)]]
    carried.by_phone.update((k, p) for k, p in work.by_phone.items() if p.id in work.created_from)
    carried.by_email.update((k, p) for k, p in work.by_email.items() if p.id in work.created_from)
    carried.appointments.update((k, a) for k, a in work.appointments.items() if a.new)
    for enrollment in new:
        enrollment.runs = []  # planned runs were judged; only the key matters from here on
        carried.enrollments[enrollment.key] = enrollment


@dataclass
class _Judging:
    """Judging a launch's new enrollments, chunk after chunk, into ``preview``; each distinct
    combination of facts (``_Subject``) is decided once for the whole file."""

    preview: LaunchPreview
    journey: LaunchJourney
    policy: ConsentPolicy
    usable: set[Channel]
    decided: dict[tuple[object, ...], StepChoice] = field(default_factory=dict)

    async def judge(
        self, session: AsyncSession, work: ChunkWork, new: list[EnrollmentRecord]
    ) -> None:
        stored_ids = {
            e.patient_id
            for e in new
            if e.patient_id is not None and e.patient_id not in work.created_from
        }
        stored = await inbox_queries.patients_by_id(session, stored_ids)
        latest = await consent_queries.latest_records_of(session, stored_ids)
        variants = VariantCache(session)
        for enrollment in new:
            patient_id = enrollment.patient_id
            assert patient_id is not None
            known = stored.get(patient_id)
            if known is not None:
                records = {ch: latest.get((patient_id, ch), {}) for ch in Channel}
                subject = _Subject.of(known, records)
            else:
                subject = _Subject.would_be(patient_id, work.created_from[patient_id])
            await _judge(
                self.preview,
                self.journey,
                enrollment,
                subject,
                variants,
                self.usable,
                self.policy,
                self.decided,
            )


_NO_RECORDS: Mapping[Channel, dict[Purpose, ConsentRecord]] = {ch: {} for ch in Channel}


@dataclass(frozen=True)
class _Subject:
    """Whom a step is judged for. ``traits``: everything ``choose_for_step`` reads of the
    patient and their records that changes what the dry run counts (the records by state only:
    dates and evidence are not counted). A cohort of 100,000 has a handful of distinct traits,
    so each combination is decided once, and a Patient is built only for a new one."""

    traits: tuple[object, ...]
    language: str | None
    time_zone: str
    records: Mapping[Channel, dict[Purpose, ConsentRecord]]
    patient: Callable[[], Patient]

    @classmethod
    def of(
        cls, patient: Patient, records: Mapping[Channel, dict[Purpose, ConsentRecord]]
    ) -> _Subject:
        states = sorted(
            (c.value, p.value, r.state.value) for c, rs in records.items() for p, r in rs.items()
        )
        traits = (
            patient.language,
            tuple(patient.channel_order),
            patient.phone_enc is not None,
            patient.email_enc is not None,
            tuple(sorted(patient.unreachable.items())),
            tuple(states),
        )
        return cls(traits, patient.language, patient.time_zone, records, lambda: patient)

    @classmethod
    def would_be(cls, patient_id: uuid.UUID, row: EnrollRow) -> _Subject:
        """The patient the launch would create from ``row``, as ``bulk`` stores them (never
        added to a session: nothing is written)."""
        traits = (
            row.language,
            tuple(DEFAULT_CHANNEL_ORDER),
            row.phone is not None,
            row.email is not None,
            (),
            (),
        )

        def build() -> Patient:
            return Patient(
                id=patient_id,
                phone_enc=UNSEALED if row.phone else None,
                phone_bidx=row.phone_bidx,
                email_enc=UNSEALED if row.email else None,
                email_bidx=row.email_bidx,
                language=row.language,
                time_zone=row.time_zone,
                channel_order=list(DEFAULT_CHANNEL_ORDER),
                verified=True,
                unreachable={},
            )

        return cls(traits, row.language, row.time_zone, _NO_RECORDS, build)


async def _judge(
    preview: LaunchPreview,
    journey: LaunchJourney,
    enrollment: EnrollmentRecord,
    subject: _Subject,
    variants: VariantCache,
    usable: set[Channel],
    policy: ConsentPolicy,
    decided: dict[tuple[object, ...], StepChoice],
) -> None:
    if enrollment.status is not EnrollmentStatus.ACTIVE:  # called off: cancelled, no-show
        preview.cancelled += 1
        return
    outlooks = {o.step_id: o for o in preview.steps}
    steps: dict[str, StepDefinition] = {s.id: s for s in journey.definition.steps}
    for run in enrollment.runs or ():
        outlook, step = outlooks[run.step_id], steps[run.step_id]
        outlook.planned += 1
        if run.status is RunStatus.SKIPPED:
            outlook.late += 1
            continue
        # The time counts only through the send window: a call outside it is refused; other
        # sends are deferred, which counts as sent.
        facts = (step.id, *subject.traits, in_window(policy, subject.time_zone, run.due_at))
        choice = decided.get(facts)
        if choice is None:
            choice = decided[facts] = await choose_for_step(
                variants,
                subject.patient(),
                step,
                outlook.purpose,
                run.due_at,
                fallback_language=journey.definition.fallback_language,
                policy=policy,
                available=usable,
                latest=subject.records,
                caps=None,  # caps defer a message, never drop it
            )
        language = language_label(subject.language)
        if choice.untranslated is not None:
            outlook.untranslated[language] = outlook.untranslated.get(language, 0) + 1
            outlook.untranslated_channels.setdefault(language, set()).update(
                d.channel.value for d in choice.passed if d.code == NO_VARIANT_CODE
            )
        elif choice.decision is None:
            outlook.no_channel += 1
            if any(d.code == "no_opt_in" for d in choice.passed):
                outlook.no_opt_in += 1
                continue
            for d in choice.passed:
                key = f"{d.channel.value}: {WORDS.get(d.code, d.code)}"
                outlook.refusals[key] = outlook.refusals.get(key, 0) + 1
        elif choice.fallback is not None:
            outlook.fallback[language] = outlook.fallback.get(language, 0) + 1
        else:
            outlook.sending += 1
