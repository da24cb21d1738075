"""The pure rules: given a patient's records and reachability, may we send?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hub.consent.models import ConsentRecord, ConsentSource, ConsentState, Purpose
from hub.consent.rules import (
    ConsentPolicy,
    in_window,
    local_day_start,
    next_window_start,
    zone,
)
from hub.consent.schemas import Decision, Outcome
from hub.enums import RECEIVE_ONLY, Channel
from hub.inbox.models import Patient

CHANNEL_WORDS = {
    Channel.SMS: "SMS",
    Channel.EMAIL: "email",
    Channel.VOICE: "calls",
    Channel.CHAT: "chat",
    Channel.WHATSAPP: "WhatsApp",
}
INTRUSIVE_CHANNELS = frozenset({Channel.VOICE})
"""Channels that interrupt the patient when they arrive: never used outside the send window,
not even for a staff reply (texts and mail are read when the patient chooses, so they only
warn)."""
UNREACHABLE_WORDS = {
    "landline": "the number is a landline or cannot receive texts",
    "bounced": "mail to the address bounced",
}
SOURCE_WORDS = {
    ConsentSource.KEYWORD: "by replying {evidence}",
    ConsentSource.PROVIDER: "as reported by the provider ({evidence})",
    ConsentSource.UNSUBSCRIBE: "by unsubscribing",
    ConsentSource.STAFF: "through staff ({evidence})",
    ConsentSource.WEB_FORM: "through a web form",
    ConsentSource.IMPORT: "in an import",
    ConsentSource.VOICE_KEYPRESS: "by keypress on a call",
}


def _address_of(patient: Patient, channel: Channel) -> bytes | None:
    if channel in (Channel.SMS, Channel.VOICE):
        return patient.phone_enc
    if channel is Channel.EMAIL:
        return patient.email_enc
    return b"chat"  # chat reaches the patient through their signed link, not an address


@dataclass(frozen=True)
class CapUsage:
    """Automated messages already queued or sent to this patient."""

    today: int = 0
    """Since local midnight in the patient's zone."""
    week: int = 0
    """In the last 7 days."""
    oldest_in_week: datetime | None = None


def _local(at: datetime, time_zone: str) -> str:
    return f"{at.astimezone(zone(time_zone)):%Y-%m-%d %H:%M} {time_zone}"


def decide(
    patient: Patient,
    channel: Channel,
    purpose: Purpose,
    at: datetime,
    latest: dict[Purpose, ConsentRecord],
    policy: ConsentPolicy | None = None,
    caps: CapUsage | None = None,
) -> Decision:
    policy = policy or ConsentPolicy()

    def result(outcome: Outcome, code: str, reason: str, **extra: Any) -> Decision:
        return Decision(outcome, patient.id, channel, purpose, at, code, reason, **extra)

    words = CHANNEL_WORDS[channel]
    if channel in RECEIVE_ONLY:
        # Every send passes this gate (staff replies, auto-replies, journey answers): none
        # may be queued on a channel no adapter can send, whatever the patient agreed to.
        return result(Outcome.REFUSED, "not_connected", RECEIVE_ONLY[channel])
    if _address_of(patient, channel) is None:
        return result(Outcome.REFUSED, "no_address", f"patient has no address for {words}")
    if (why := patient.unreachable.get(channel.value)) is not None:
        return result(
            Outcome.REFUSED,
            "unreachable",
            f"patient cannot be reached by {words}: {UNREACHABLE_WORDS.get(why, why)}",
        )
    if purpose is Purpose.SERVICE:
        return result(Outcome.ALLOWED, "ok", "carrier-required answer")
    record = latest.get(purpose)
    if record is not None and record.state is ConsentState.REVOKED:
        how = SOURCE_WORDS[record.source].format(evidence=record.evidence)
        return result(
            Outcome.REFUSED,
            "opted_out",
            # The day as the patient lived it: staff compare it with what the patient says.
            f"patient opted out of {words} on "
            f"{record.created_at.astimezone(zone(patient.time_zone)):%Y-%m-%d} {how}",
        )
    if purpose in policy.opt_in_required and (
        record is None or record.state is not ConsentState.GRANTED
    ):
        return result(
            Outcome.REFUSED, "no_opt_in", f"patient has not opted in to {purpose.value} by {words}"
        )

    tz = patient.time_zone
    start, end = (t.strftime("%H:%M") for t in policy.send_window)
    if purpose not in policy.automated_purposes:
        if in_window(policy, tz, at):
            return result(Outcome.ALLOWED, "ok", "allowed")
        if channel in INTRUSIVE_CHANNELS:
            # A text or mail outside the window waits on the patient's phone; a call rings
            # now, at night, for whoever is near it. Staff are told, never left to a warning.
            return result(
                Outcome.REFUSED,
                "call_outside_window",
                f"it is {_local(at, tz)} for the patient, outside {start}-{end}; "
                "calls are only placed inside the send window",
            )
        return result(
            Outcome.ALLOWED,
            "ok",
            "allowed",
            warnings=(f"it is {_local(at, tz)} for the patient, outside {start}-{end}",),
        )

    not_before: datetime | None = None
    code, why = "", ""
    if caps is not None and policy.per_day and caps.today >= policy.per_day:
        not_before = next_window_start(
            policy, tz, local_day_start(tz, at) + timedelta(days=1) - timedelta(microseconds=1)
        )
        code, why = "frequency_cap", f"already {caps.today} automated message(s) today"
    if caps is not None and policy.per_week and caps.week >= policy.per_week:
        free = (caps.oldest_in_week or at) + timedelta(days=7)
        if not_before is None or free > not_before:
            not_before = free
            code, why = "frequency_cap", f"already {caps.week} automated messages this week"
    if not_before is not None and not in_window(policy, tz, not_before):
        not_before = next_window_start(policy, tz, not_before)
    if not_before is None and not in_window(policy, tz, at):
        not_before = next_window_start(policy, tz, at)
        code, why = "quiet_hours", f"it is {_local(at, tz)} for the patient, outside {start}-{end}"
    if not_before is not None:
        return result(
            Outcome.DEFERRED,
            code,
            f"{why}; deferred to {_local(not_before, tz)}",
            not_before=not_before,
        )
    return result(Outcome.ALLOWED, "ok", "allowed")
