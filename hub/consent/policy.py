"""The pure rules: given a patient's records and reachability, may we send?"""

from __future__ import annotations

from datetime import datetime

from hub.consent.models import ConsentRecord, ConsentSource, ConsentState, Purpose
from hub.consent.schemas import Decision, Outcome
from hub.enums import Channel
from hub.inbox.models import Patient

OPT_IN_REQUIRED = frozenset({Purpose.SURVEYS, Purpose.MARKETING})
"""Purposes that need an explicit grant; the others need only the absence of a revocation."""

CHANNEL_WORDS = {
    Channel.SMS: "SMS",
    Channel.EMAIL: "email",
    Channel.VOICE: "calls",
    Channel.CHAT: "chat",
}
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


def decide(
    patient: Patient,
    channel: Channel,
    purpose: Purpose,
    at: datetime,
    latest: dict[Purpose, ConsentRecord],
) -> Decision:
    def result(outcome: Outcome, code: str, reason: str) -> Decision:
        return Decision(outcome, patient.id, channel, purpose, at, code, reason)

    words = CHANNEL_WORDS[channel]
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
            f"patient opted out of {words} on {record.created_at:%Y-%m-%d} {how}",
        )
    if purpose in OPT_IN_REQUIRED and (record is None or record.state is not ConsentState.GRANTED):
        return result(
            Outcome.REFUSED, "no_opt_in", f"patient has not opted in to {purpose.value} by {words}"
        )
    return result(Outcome.ALLOWED, "ok", "allowed")
