"""What each template key's sends provide: the one declaration that saving checks against and
that rendering hands to the template.

A variable is *required* when every send of that key has it (a template may print it as is),
*optional* when a send may lack it (a patient with no name on file, an appointment without a
location): a template must guard it with ``{% if x is defined %}`` or ``| default(...)``.
Saving refuses a variable the key does not declare and renders the text with every optional
variable missing; rendering drops whatever a caller passed beyond the declaration, so a text
can never depend on a value that only some senders happen to give.

The senders (journey dispatch, the reply acknowledgements, the chat invite, automated sends)
all build their context with ``hub.templates.actions.template_context``; a test holds each
declared path to what it produces. The sample values below are synthetic and only used to
try a text when it is saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Variable:
    path: str
    required: bool
    sample: Any
    """A synthetic value used to try a text when it is saved (never a real person's)."""
    about: str


_SAMPLE_START = datetime(2026, 3, 12, 15, 30, tzinfo=UTC)

PATIENT = (
    Variable("patient.first_name", False, "Sam", "the patient's first name, when known"),
    Variable("patient.name", False, "Sam Example", "the patient's full name, when known"),
)
CLINIC = (
    Variable("clinic.name", True, "Example Clinic", "the clinic's name (HUB_CLINIC_NAME)"),
    Variable(
        "clinic.phone",
        True,
        "(555) 010-0100",
        "the number patients call (HUB_CLINIC_PHONE, else the Twilio number)",
    ),
)
APPOINTMENT = (
    Variable(
        "appointment.start",
        True,
        _SAMPLE_START,
        "when the appointment starts; format it with | date, | time or | datetime",
    ),
    Variable("appointment.location", False, "Room 2", "where, when the booking says"),
    Variable("appointment.provider", False, "Dr. Example", "with whom, when the booking says"),
)
CHAT_LINK = (
    Variable(
        "links.chat",
        True,
        "https://hub.example.org/chat/sample-token",
        "the patient's web chat link (valid 7 days)",
    ),
)
RENDERING = ("tz", "locale")
"""Always given (the patient's zone and language, for the date filters); never checked."""


@dataclass(frozen=True)
class Declared:
    """The variables one template key's sends provide."""

    variables: tuple[Variable, ...]

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(v.path for v in self.variables)

    @property
    def optional(self) -> tuple[str, ...]:
        return tuple(v.path for v in self.variables if not v.required)

    def groups(self) -> frozenset[str]:
        return frozenset(v.path.split(".", 1)[0] for v in self.variables)

    def sample(self, missing: frozenset[str] = frozenset()) -> dict[str, Any]:
        """A synthetic render context with the variables in ``missing`` left out."""
        context: dict[str, Any] = {"tz": "America/New_York", "locale": "en"}
        for v in self.variables:
            if v.path in missing:
                continue
            group, name = v.path.split(".", 1)
            context.setdefault(group, {})[name] = v.sample
        for group in self.groups():
            context.setdefault(group, {})
        return context

    def keep(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """``context`` without what this key does not declare (see the module docstring)."""
        kept: dict[str, Any] = {k: context[k] for k in RENDERING if k in context}
        wanted: dict[str, set[str]] = {}
        for v in self.variables:
            group, name = v.path.split(".", 1)
            wanted.setdefault(group, set()).add(name)
        for group, names in wanted.items():
            value = context.get(group)
            if isinstance(value, Mapping):
                kept[group] = {k: value[k] for k in names if k in value}
        return kept


_PEOPLE = Declared(PATIENT + CLINIC)
_APPOINTMENTS = Declared(PATIENT + CLINIC + APPOINTMENT)

DECLARED: dict[str, Declared] = {
    # Journey steps and their reply acknowledgements about an appointment.
    "appointment_reminder": _APPOINTMENTS,
    "appointment_reminder_today": _APPOINTMENTS,
    "appointment_confirmed": _APPOINTMENTS,
    "appointment_cancelled": _APPOINTMENTS,
    # Journey steps without an appointment (surveys, recalls, follow-ups).
    "nps_survey": _PEOPLE,
    "survey_could_do_better": _PEOPLE,
    "survey_thanks": _PEOPLE,
    "screening_recall": _PEOPLE,
    "visit_follow_up": _PEOPLE,
    "csat_question": _PEOPLE,  # after a resolution (hub/journeys/csat.py)
    # Automatic replies to a patient's message, and the chat invite staff send.
    "after_hours": _PEOPLE,
    "urgent_reply": _PEOPLE,
    "sms_help": _PEOPLE,
    "chat_invite": Declared(PATIENT + CLINIC + CHAT_LINK),
}
"""Per template key. A new shipped template needs its line here (a test checks the seeds)."""

GENERIC = Declared(
    PATIENT
    + CLINIC
    + tuple(Variable(v.path, False, v.sample, v.about) for v in APPOINTMENT + CHAT_LINK)
)
"""For a key declared nowhere (a template a clinic added by hand): everything a sender can
give, all of it optional."""


def declared_for(key: str) -> Declared:
    return DECLARED.get(key, GENERIC)
