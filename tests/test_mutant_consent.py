"""The consent gate's every answer, word for word: what staff read on a refused or deferred
send ("sms: deferred (frequency_cap): ..."), and when a deferred one goes. `make mutate` found
the outcome table in tests/test_consent_gate.py did not hold the words, the caps' tie and the
cap deferrals that land outside the send window (docs/testing.md)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.consent.models import Purpose
from hub.consent.policy import CapUsage, decide
from hub.consent.rules import ConsentPolicy
from hub.consent.schemas import Outcome
from hub.enums import Channel
from hub.inbox.models import Patient

TZ = "America/New_York"
NY = ZoneInfo(TZ)
WINDOW = "outside 08:00-21:00"


def ny(day: int, hour: int, minute: int = 0) -> datetime:
    """November 2026 in New York (EST all month after the 1st)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=NY)


NOON, LATE = ny(18, 12), ny(18, 22, 30)
"""A Wednesday inside the send window, and the same evening after it."""
TODAY_1 = "already 1 automated message(s) today"
WEEK_3 = "already 3 automated messages this week"
MIDNIGHT_START = ConsentPolicy.from_data({"send_window": ["00:00", "21:00"]})
"""A clinic whose window opens at midnight (an overnight ward's reminders)."""


def row(
    name: str,
    channel: Channel,
    purpose: Purpose,
    at: datetime,
    answer: tuple[Outcome, str, str],
    *,
    policy: ConsentPolicy | None = None,
    caps: CapUsage | None = None,
    not_before: datetime | None = None,
    warnings: tuple[str, ...] = (),
) -> Any:
    return pytest.param(channel, purpose, at, policy, caps, answer, not_before, warnings, id=name)


ROWS = [
    row(
        "service-any-hour",
        Channel.SMS,
        Purpose.SERVICE,
        LATE,
        (Outcome.ALLOWED, "ok", "carrier-required answer"),
        caps=CapUsage(today=9, week=9),
    ),
    row("care-in-window", Channel.SMS, Purpose.CARE, NOON, (Outcome.ALLOWED, "ok", "allowed")),
    row(
        "care-text-late-warns",
        Channel.SMS,
        Purpose.CARE,
        LATE,
        (Outcome.ALLOWED, "ok", "allowed"),
        warnings=(f"it is 2026-11-18 22:30 {TZ} for the patient, {WINDOW}",),
    ),
    row(
        "care-call-late-refused",
        Channel.VOICE,
        Purpose.CARE,
        LATE,
        (
            Outcome.REFUSED,
            "call_outside_window",
            f"it is 2026-11-18 22:30 {TZ} for the patient, {WINDOW}; "
            "calls are only placed inside the send window",
        ),
    ),
    row(
        "reminder-in-window",
        Channel.EMAIL,
        Purpose.REMINDERS,
        NOON,
        (Outcome.ALLOWED, "ok", "allowed"),
        caps=CapUsage(),
    ),
    row(
        "survey-without-opt-in",
        Channel.SMS,
        Purpose.SURVEYS,
        NOON,
        (Outcome.REFUSED, "no_opt_in", "patient has not opted in to surveys by SMS"),
    ),
    row(
        "reminder-late-waits",
        Channel.SMS,
        Purpose.REMINDERS,
        LATE,
        (
            Outcome.DEFERRED,
            "quiet_hours",
            f"it is 2026-11-18 22:30 {TZ} for the patient, {WINDOW}; "
            f"deferred to 2026-11-19 08:00 {TZ}",
        ),
        not_before=ny(19, 8),
    ),
    row(
        "day-cap",
        Channel.SMS,
        Purpose.REMINDERS,
        NOON,
        (Outcome.DEFERRED, "frequency_cap", f"{TODAY_1}; deferred to 2026-11-19 08:00 {TZ}"),
        caps=CapUsage(today=1, week=1, oldest_in_week=ny(18, 9)),
        not_before=ny(19, 8),
    ),
    row(
        # The day cap opens on the next day's first minute when the window starts at midnight.
        "day-cap-midnight-window",
        Channel.SMS,
        Purpose.REMINDERS,
        NOON,
        (Outcome.DEFERRED, "frequency_cap", f"{TODAY_1}; deferred to 2026-11-19 00:00 {TZ}"),
        policy=MIDNIGHT_START,
        caps=CapUsage(today=1, week=1, oldest_in_week=ny(18, 9)),
        not_before=ny(19, 0),
    ),
    row(
        "week-cap",
        Channel.SMS,
        Purpose.REMINDERS,
        NOON,
        (Outcome.DEFERRED, "frequency_cap", f"{WEEK_3}; deferred to 2026-11-20 15:00 {TZ}"),
        caps=CapUsage(today=0, week=3, oldest_in_week=ny(13, 15)),
        not_before=ny(20, 15),
    ),
    row(
        # A week after the oldest send is 22:00: the message waits for the next morning.
        "week-cap-frees-at-night",
        Channel.SMS,
        Purpose.REMINDERS,
        NOON,
        (Outcome.DEFERRED, "frequency_cap", f"{WEEK_3}; deferred to 2026-11-21 08:00 {TZ}"),
        caps=CapUsage(today=0, week=3, oldest_in_week=ny(13, 22)),
        not_before=ny(21, 8),
    ),
    row(
        # Both caps free the patient at the same moment: the day's reason is the one given.
        "caps-tie",
        Channel.SMS,
        Purpose.REMINDERS,
        NOON,
        (Outcome.DEFERRED, "frequency_cap", f"{TODAY_1}; deferred to 2026-11-19 08:00 {TZ}"),
        caps=CapUsage(today=1, week=3, oldest_in_week=ny(12, 8)),
        not_before=ny(19, 8),
    ),
    row(
        # The week cap frees later than the day cap: the later time and its reason win.
        "week-cap-after-day-cap",
        Channel.SMS,
        Purpose.REMINDERS,
        NOON,
        (Outcome.DEFERRED, "frequency_cap", f"{WEEK_3}; deferred to 2026-11-19 08:01 {TZ}"),
        caps=CapUsage(today=1, week=3, oldest_in_week=ny(12, 8, 1)),
        not_before=ny(19, 8, 1),
    ),
]


@pytest.mark.parametrize(
    ("channel", "purpose", "at", "policy", "caps", "answer", "not_before", "warnings"), ROWS
)
def test_every_answer_of_the_gate_word_for_word(
    channel: Channel,
    purpose: Purpose,
    at: datetime,
    policy: ConsentPolicy | None,
    caps: CapUsage | None,
    answer: tuple[Outcome, str, str],
    not_before: datetime | None,
    warnings: tuple[str, ...],
) -> None:
    patient = Patient(id=uuid.uuid4(), unreachable={}, time_zone=TZ)
    patient.phone_enc = patient.email_enc = b"x"  # decide() only asks whether one exists
    decision = decide(patient, channel, purpose, at, {}, policy, caps)
    outcome, code, reason = answer
    assert (decision.outcome, decision.code, decision.reason) == answer
    assert (decision.not_before, decision.warnings) == (not_before, warnings)
    # The line staff read on the message and the journey run.
    assert decision.summary() == f"{channel.value}: {outcome.value} ({code}): {reason}"
    assert (decision.patient_id, decision.channel, decision.purpose, decision.at) == (
        patient.id,
        channel,
        purpose,
        at,
    )
    if not_before is not None:
        # A deferred message is never lost: it goes at a time the patient's window allows.
        start, end = (policy or ConsentPolicy()).send_window
        assert start <= not_before.astimezone(NY).time() < end
        assert not_before > at


def test_a_cap_is_counted_on_the_patient_s_own_day() -> None:
    """At 20:59 in New York it is already the next day in UTC; the day cap still frees the
    patient at 08:00 on their own next morning, not a day later."""
    patient = Patient(id=uuid.uuid4(), unreachable={}, time_zone=TZ)
    patient.phone_enc = b"x"
    caps = CapUsage(today=1, week=1, oldest_in_week=ny(18, 9))
    decision = decide(patient, Channel.SMS, Purpose.REMINDERS, ny(18, 20, 59), {}, None, caps)
    assert (decision.code, decision.not_before) == ("frequency_cap", ny(19, 8))
    assert decision.reason == (
        f"already 1 automated message(s) today; deferred to 2026-11-19 08:00 {TZ}"
    )
    assert decision.not_before is not None
    assert decision.not_before - ny(18, 20, 59) == timedelta(hours=11, minutes=1)
