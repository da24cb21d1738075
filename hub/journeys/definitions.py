"""Journey definitions: the dataclasses, the YAML parser that validates them, and step planning.

Pure: no database, no clock. A definition comes from a YAML file (the shipped examples live in
``examples/``) or from the staff UI, which posts the same YAML text. Every error names the
source, the 1-based line and the field path, e.g.::

    appointment_reminders.yaml line 14: steps[1].offset: "24 hours" is not an offset like
    -24h, +1d, -90m

Offsets and time zones. An offset's whole days (``d``, ``w`` and every full 24 of ``h``) move
the calendar date in the patient's time zone and keep the local wall time; the rest (hours and
minutes under a day) is elapsed time. So ``-24h`` before a 09:00 appointment is 09:00 the day
before even across a DST change (23 or 25 real hours), ``-72h`` is 09:00 three days before, and
``-2h`` is two real hours before. A wall time that does not exist (spring forward) moves forward
by the gap; an ambiguous one (fall back) takes the first occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

from hub.consent.models import Purpose
from hub.enums import Channel
from hub.errors import HubError
from hub.journeys.replies import Expecting, ReplyKind, classify_reply

DEFAULT_MAX_BYTES = 256 * 1024
"""Largest journey file accepted (the UI posts the same text)."""
DEFAULT_MAX_STEPS = 50
"""Most steps one journey may have."""
MAX_OFFSET = timedelta(days=365)
"""Largest offset, either way, from the anchor or from the previous step."""
DEFAULT_LATE_GRACE = timedelta(minutes=10)
"""A step due at most this long before enrollment is still sent (enrolled "now", clock skew)."""
SKIPPED_BEFORE_ENROLLMENT = "due before enrollment"

Anchor = Literal["appointment_start", "enrollment", "discharge"]
RelativeTo = Literal["anchor", "previous"]
Asks = Literal["confirmation", "cancellation", "survey"]
""""confirmation": the step asks the patient to confirm (or cancel); once they confirm, the
remaining confirmation asks are called off. "cancellation": the step only offers a way out
("Can't make it? Reply 2"): it goes to confirmed patients too and takes a cancel from anyone
(and a confirmation from a patient who had not given one)."""
Scale = Literal["0-10", "1-5", "free_text"]
Action = Literal[
    "confirm_appointment",
    "cancel_remaining_asks",
    "cancel_appointment",
    "cancel_remaining_steps",
    "notify_staff",
    "offer_reschedule",
    "record_score",
    "record_answer",
]
Condition = str
""""skip_if_confirmed", "only_if_no_reply", "only_if_score_below:N", or a patient tag filter:
"only_if_tagged:a,b" (sent only to patients with one of the tags) or "skip_if_tagged:a,b"
(skipped for them); tags normalized as ``hub.inbox.actions.tags`` stores them."""

ACTIONS_BY_REPLY: dict[str, tuple[str, ...]] = {
    "confirm": ("confirm_appointment", "cancel_remaining_asks", "notify_staff"),
    "cancel": ("cancel_appointment", "cancel_remaining_steps", "notify_staff", "offer_reschedule"),
    "score": ("record_score", "notify_staff"),
    "text": ("record_answer", "notify_staff", "cancel_remaining_steps"),
}
"""What each kind of reply may do. Every reply also lands in the inbox, whatever its kind."""
DEFAULT_HANDLERS: dict[str, tuple[str, ...]] = {
    "confirm": ("confirm_appointment", "cancel_remaining_asks"),
    "cancel": ("cancel_appointment", "cancel_remaining_steps", "notify_staff"),
    "score": ("record_score",),
    "text": ("record_answer",),
}
"""Filled in for the replies a step asks for when its on_reply leaves them out."""
SCALE_BOUNDS = {"0-10": (0, 10), "1-5": (1, 5)}
JOURNEY_PURPOSES = (Purpose.CARE, Purpose.REMINDERS, Purpose.SURVEYS, Purpose.MARKETING)

_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_OFFSET = re.compile(r"([+-]?)(?:(\d{1,6})w)?(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,6})m)?")
_SCORE_BELOW = re.compile(r"only_if_score_below\s*:\s*(\S+)")
_TOP_FIELDS = (
    "key",
    "name",
    "purpose",
    "anchor",
    "description",
    "fallback_language",
    "send_window",
    "steps",
)
_STEP_FIELDS = (
    "id",
    "offset",
    "relative_to",
    "template",
    "channel",
    "channels",
    "purpose",
    "conditions",
    "asks",
    "survey",
    "on_reply",
)
_OFFSET_HINT = "is not an offset like -24h, +1d, -90m"


class JourneyInvalid(HubError):
    """A journey definition cannot be used; the message names the source, line and field."""

    def __init__(self, source: str, line: int, field: str, problem: str) -> None:
        self.source, self.line, self.field, self.problem = source, line, field, problem
        where = f"{field}: " if field else ""
        super().__init__(f"{source} line {line}: {where}{problem}")


@dataclass(frozen=True)
class ChannelPolicy:
    mode: Literal["preference", "fixed"] = "preference"
    channels: tuple[Channel, ...] = ()
    """For "preference", empty means the patient's own order."""

    def order(self, patient_order: Sequence[Channel]) -> tuple[Channel, ...]:
        """The channels to try, in order, before consent and reachability filter them."""
        return self.channels or tuple(patient_order)


@dataclass(frozen=True)
class SurveySpec:
    question: str
    scale: Scale

    @property
    def expecting(self) -> Expecting | None:
        return (
            "survey:0-10" if self.scale == "0-10" else "survey:1-5" if self.scale == "1-5" else None
        )


@dataclass(frozen=True)
class ReplyHandler:
    on: ReplyKind
    actions: tuple[Action, ...]
    reply_template: str | None = None
    """Sent back on the channel the reply came on, after the actions."""


@dataclass(frozen=True)
class StepDefinition:
    id: str
    offset: timedelta
    template: str
    relative_to: RelativeTo = "anchor"
    channels: ChannelPolicy = field(default_factory=ChannelPolicy)
    purpose: Purpose | None = None
    """Overrides the journey's purpose for this step's consent check (a survey, say)."""
    conditions: frozenset[Condition] = frozenset()
    asks: Asks | None = None
    survey: SurveySpec | None = None
    on_reply: tuple[ReplyHandler, ...] = ()

    @property
    def expecting(self) -> Expecting | None:
        """What ``classify_reply`` should listen for while this step waits for an answer."""
        if self.asks in ("confirmation", "cancellation"):
            return "confirmation"  # the same words: C / 1 / YES confirm, 2 cancels
        return self.survey.expecting if self.survey else None

    def handled(self, text: str, channel: Channel) -> ReplyKind | None:
        """What a reply of ``text`` on ``channel`` does at this step while it waits for an
        answer: the kind of reply when the step acts on it, None when it is only a message."""
        kind = classify_reply(text, self.expecting, channel=channel).kind
        if kind == "text" and not (self.survey and self.survey.scale == "free_text"):
            return None
        handler = self.handler(kind)
        actions = handler.actions if handler else DEFAULT_HANDLERS.get(kind, ())
        return kind if actions or (handler and handler.reply_template) else None

    @property
    def score_below(self) -> int | None:
        """N of "only_if_score_below:N" (the nearest earlier numeric survey's score), if any."""
        for condition in self.conditions:
            if condition.startswith("only_if_score_below:"):
                return int(condition.partition(":")[2])
        return None

    def tagged(self, kind: str) -> tuple[str, ...]:
        """The tags of the "only_if_tagged" or "skip_if_tagged" condition (empty: none)."""
        for condition in self.conditions:
            if condition.startswith(f"{kind}:"):
                return tuple(condition.partition(":")[2].split(","))
        return ()

    def handler(self, kind: ReplyKind) -> ReplyHandler | None:
        return next((h for h in self.on_reply if h.on == kind), None)

    def channel_order(self, patient_order: Sequence[Channel]) -> tuple[Channel, ...]:
        """The channels to try for this step; a survey never goes by voice (a call cannot take
        a 0-10 answer), even when it follows the patient's own order."""
        order = self.channels.order(patient_order)
        return tuple(c for c in order if c is not Channel.VOICE) if self.survey else order


@dataclass(frozen=True)
class JourneyDefinition:
    key: str
    name: str
    purpose: Purpose
    anchor: Anchor
    steps: tuple[StepDefinition, ...]
    description: str = ""
    fallback_language: str | None = None
    """A locale to write in when a template has no variant in the patient's language; None:
    such a step is skipped for that patient (``hub.journeys.step_choice``)."""
    send_window: tuple[time, time] | None = None
    """(from, to) in the patient's wall time: a step planned outside it is planned into it
    (see ``into_window``). None: any time (the clinic's quiet hours still defer sends)."""

    def step(self, step_id: str) -> StepDefinition:
        return next(s for s in self.steps if s.id == step_id)

    def template_keys(self) -> frozenset[str]:
        """Every template the journey can send (steps and reply acknowledgements)."""
        keys = {s.template for s in self.steps}
        keys |= {h.reply_template for s in self.steps for h in s.on_reply if h.reply_template}
        return frozenset(keys)


@dataclass(frozen=True)
class PlannedStep:
    step_id: str
    due_at: datetime
    """Aware, UTC."""
    skip_reason: str | None = None

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None


def parse_offset(text: str) -> timedelta | None:
    """ "-72h", "+1d", "+1d12h", "-90m", "+2w" -> timedelta; None when it is not one. Unsigned
    text parses as positive (the parser insists on a sign for anchor offsets)."""
    match = _OFFSET.fullmatch(text)
    if match is None or not any(match.groups()[1:]):
        return None
    weeks, days, hours, minutes = (int(g or 0) for g in match.groups()[1:])
    offset = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes)
    return -offset if match.group(1) == "-" else offset


def shift(moment: datetime, offset: timedelta, zone: tzinfo) -> datetime:
    """``moment`` moved by ``offset``: whole days on the calendar of ``zone`` (same wall time),
    the rest as elapsed time. Returns aware UTC."""
    seconds = offset // timedelta(seconds=1)
    sign = -1 if seconds < 0 else 1
    days, rest = divmod(abs(seconds), 86_400)
    if days:
        wall = moment.astimezone(zone).replace(tzinfo=None) + timedelta(days=sign * days)
        moment = wall.replace(tzinfo=zone)  # fold=0: a gap moves forward, a repeat takes the first
    return moment.astimezone(UTC) + timedelta(seconds=sign * rest)


def into_window(
    moment: datetime, zone: tzinfo, window: tuple[time, time], *, back: bool
) -> datetime:
    """``moment`` (aware) moved into the daily ``window`` of ``zone``'s wall time: ``back`` to
    the last close before it (a reminder before an appointment must not slip past it), else
    forward to the next opening. A moment inside the window is kept. Returns aware UTC."""
    opens, closes = window
    local = moment.astimezone(zone)
    wall = local.time().replace(tzinfo=None)
    if opens <= wall <= closes:
        return moment.astimezone(UTC)
    day = local.date()
    if back:
        day = day if wall > closes else day - timedelta(days=1)
        target = datetime.combine(day, closes).replace(tzinfo=zone)
    else:
        day = day if wall < opens else day + timedelta(days=1)
        target = datetime.combine(day, opens).replace(tzinfo=zone)
    return target.astimezone(UTC)


def plan(
    definition: JourneyDefinition,
    anchor_time: datetime,
    enrolled_at: datetime,
    *,
    zone: tzinfo | str,
) -> list[PlannedStep]:
    """Absolute due times, in the definition's order, for one enrollment.

    ``zone`` is the patient's time zone (the calendar that whole-day offsets move on). A step
    due more than DEFAULT_LATE_GRACE before ``enrolled_at`` is planned as skipped ("due before
    enrollment") whatever the anchor: a reminder or survey sent late is wrong or misleading, and
    the coordinator sees the skip in the plan. A "previous"-relative step chains from the
    previous step's planned time even when that one was skipped, so when someone pressed
    enroll never moves the rest of the schedule.
    """
    for name, value in (("anchor_time", anchor_time), ("enrolled_at", enrolled_at)):
        if value.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware")
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    cutoff = enrolled_at - DEFAULT_LATE_GRACE
    planned: list[PlannedStep] = []
    previous = anchor_time
    for step in definition.steps:
        base = anchor_time if step.relative_to == "anchor" else previous
        due = shift(base, step.offset, tz)
        if definition.send_window is not None:
            back = step.relative_to == "anchor" and step.offset < timedelta(0)
            due = into_window(due, tz, definition.send_window, back=back)
        previous = due
        planned.append(
            PlannedStep(step.id, due, SKIPPED_BEFORE_ENROLLMENT if due < cutoff else None)
        )
    return planned


def load_examples() -> dict[str, JourneyDefinition]:
    """The journeys shipped in ``hub/journeys/examples`` by key (a bad one raises: it is a bug)."""
    from hub.journeys.parse import load_examples as load

    return load()


def parse_journey(
    text: str, source: str, *, templates: Collection[str] | None = None
) -> JourneyDefinition:
    """Parse and validate one journey (see ``hub.journeys.parse``); raises JourneyInvalid."""
    from hub.journeys.parse import parse_journey as parse

    return parse(text, source, templates=templates)
