"""Appointment statuses as the clinic's feeds report them, and what each does to a journey.

One rule for every feed (cohort CSV, ``POST /api/journeys/{key}/enrollments``, the FHIR
bundle): ``read_status`` turns a feed's word into an ``AppointmentStatus`` (or refuses it in
plain words), ``next_status`` says what the stored appointment becomes, and ``call_off`` says
whether its pending steps stop. FHIR's codes mean what FHIR R4 defines (Appointment.status):
``arrived`` and ``checked-in`` the patient is there, ``fulfilled`` the visit took place,
``noshow`` the patient did not come, ``entered-in-error`` the booking never existed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.journeys.models import AppointmentStatus

S = AppointmentStatus

STATUS_WORDS: dict[str, AppointmentStatus | None] = {
    # Still on the schedule: no news (None never changes what the hub knows).
    "": None,
    "booked": None,
    "scheduled": None,
    "pending": None,
    "confirmed": None,
    "open": None,
    "future": None,
    "rescheduled": None,
    "arrived": S.ARRIVED,
    "checked in": S.ARRIVED,
    "checkedin": S.ARRIVED,
    "in room": S.ARRIVED,
    "fulfilled": S.FULFILLED,
    "completed": S.FULFILLED,
    "complete": S.FULFILLED,
    "attended": S.FULFILLED,
    "seen": S.FULFILLED,
    "checked out": S.FULFILLED,
    "noshow": S.NOSHOW,
    "no show": S.NOSHOW,
    "dna": S.NOSHOW,
    "did not attend": S.NOSHOW,
    "missed": S.NOSHOW,
    "cancelled": S.CANCELLED,
    "canceled": S.CANCELLED,
    "cancel": S.CANCELLED,
    "cx": S.CANCELLED,
    "entered in error": S.ENTERED_IN_ERROR,
}
"""A feed's status word (compared after ``_words``) -> what it reports. EHR exports write
"Scheduled", "Checked In", "Completed", "No Show", "Canceled"; FHIR writes its codes."""

ACCEPTED = "booked, arrived, fulfilled, noshow, cancelled or entered-in-error"
"""The canonical words, for errors."""
ATTENDED = frozenset({S.ARRIVED, S.FULFILLED})


class UnknownStatus(ValueError):
    pass


def _words(value: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", value.casefold()).split())


def read_status(value: str | None, field: str = "status") -> AppointmentStatus | None:
    """The status a feed reports, None for "still booked"; raises UnknownStatus naming
    ``field`` and the value for a word that is none of them."""
    words = _words(value or "")
    if words in STATUS_WORDS:
        return STATUS_WORDS[words]
    raise UnknownStatus(
        f'{field} "{(value or "").strip()[:40]}" is not an appointment status; expected '
        f"{ACCEPTED} (or an EHR's words such as Scheduled, Checked In, Completed, No Show, "
        "Canceled)"
    )


def next_status(
    current: AppointmentStatus, reported: AppointmentStatus | None
) -> AppointmentStatus:
    """What the appointment becomes. "Booked" is no news: it never undoes a confirmation, a
    cancellation or an outcome. An outcome or a cancellation is the clinic's last word (its
    system corrects itself: a no-show can become arrived when the patient came late), except
    that a late "arrived" never takes back "fulfilled"."""
    if reported is None:
        return current
    if reported is S.ARRIVED and current is S.FULFILLED:
        return current
    return reported


@dataclass(frozen=True)
class CallOff:
    reason: str
    """The pending runs' reason (no PHI)."""
    cancels: bool
    """The enrollment is cancelled (and counts as such); else completed: a no-show is no
    cancellation, but a follow-up to a visit that did not happen must not go."""
    code: str
    """The reason's code in exports."""


CALL_OFF: dict[AppointmentStatus, CallOff] = {
    S.CANCELLED: CallOff("appointment cancelled", True, "appointment_cancelled"),
    S.ENTERED_IN_ERROR: CallOff("appointment entered in error", True, "appointment_in_error"),
    S.NOSHOW: CallOff("appointment missed (no-show)", False, "appointment_no_show"),
}


def call_off(status: AppointmentStatus) -> CallOff | None:
    """Whether an appointment in ``status`` stops its enrollment's pending steps, and how."""
    return CALL_OFF.get(status)
