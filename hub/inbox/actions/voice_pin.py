"""The keypad PIN a clinic may ask before a phone cancellation (issue 15).

Caller ID is the caller's claim: anyone can send a patient's number as theirs, and a reminder
call can be answered by anyone in the household. A confirmation by phone does little harm, so
it needs nothing more; a cancellation frees the slot, so a clinic can switch on
``CANCEL_PIN_SETTING`` and the hub then asks for the patient's date of birth as month and day
(MMDD: 7 March is 0307) before pressing 2 cancels anything.

A date of birth is weak as a secret (366 values, often known to relatives), so wrong entries
are counted per patient: after ``DEFAULT_PIN_ATTEMPTS`` wrong ones within ``PIN_WINDOW`` no
phone cancellation is taken until the window passes. Every attempt is audited, right or
wrong, with the call's sid and never the digits."""

from __future__ import annotations

import hmac
import uuid
from datetime import timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Direction
from hub.inbox import queries, voice_queries
from hub.inbox.models import Conversation, Message, Patient
from hub.settings_store import put_setting_in, setting_value

CANCEL_PIN_SETTING = "voice.cancel_pin_required"
"""Settings-store key: true when pressing 2 to cancel must be followed by the patient's MMDD."""
DEFAULT_PIN_ATTEMPTS = 3
"""Wrong PINs per patient within PIN_WINDOW after which phone cancellation is refused."""
PIN_WINDOW = timedelta(hours=24)
"""How long wrong PINs count against a patient."""
PIN_DIGITS = 4
REFUSED = "voice.cancel_pin_refused"
ACCEPTED = "voice.cancel_pin_accepted"

PinOutcome = Literal["accepted", "refused", "locked", "no_birth_date", "unknown_caller"]


async def do_cancel_pin_required(db: Database) -> bool:
    async with db.reader() as session:
        return bool(await setting_value(session, CANCEL_PIN_SETTING))


async def do_set_cancel_pin_required(db: Database, actor: Actor, required: bool) -> bool:
    """Switch the PIN on or off (audited); returns whether anything changed."""
    async with db.transaction() as session:
        if bool(await setting_value(session, CANCEL_PIN_SETTING)) == required:
            return False
        await put_setting_in(session, CANCEL_PIN_SETTING, required)
        await record(
            session, actor, "settings.update", "setting", CANCEL_PIN_SETTING, {"value": required}
        )
        return True


def pin_of(birth_date: str | None) -> str | None:
    """MMDD of an ISO date ("1984-03-07" -> "0307"); None when there is no usable date."""
    if not birth_date or len(birth_date) < 10 or birth_date[4] != "-" or birth_date[7] != "-":
        return None
    pin = birth_date[5:7] + birth_date[8:10]
    return pin if pin.isdigit() else None


async def _patient_of_call(
    session: AsyncSession, ring: KeyRing, message_id: uuid.UUID | None, caller: str | None
) -> Patient | None:
    """The patient a reminder call was placed to, or the one the caller ID names (the same
    rule the keypress itself follows)."""
    if message_id is not None:
        call = await session.get(Message, message_id)
        if call is None or call.direction is not Direction.OUTBOUND:
            return None
        conversation = await session.get(Conversation, call.conversation_id)
        return await session.get(Patient, conversation.patient_id) if conversation else None
    if not caller:
        return None
    matches = await queries.patients_by_phone_index(session, ring.blind_index("phone", caller))
    return matches[0] if matches else None


async def do_check_cancel_pin(
    db: Database,
    ring: KeyRing,
    *,
    call_sid: str,
    digits: str,
    message_id: uuid.UUID | None,
    caller: str | None,
) -> PinOutcome:
    """Whether ``digits`` are the month and day of birth of the patient the call is about.
    Only "accepted" lets the cancellation go ahead."""
    async with db.transaction() as session:
        patient = await _patient_of_call(session, ring, message_id, caller)
        if patient is None:
            return "unknown_caller"
        actor = Actor("caller", call_sid[:60])
        since = utcnow() - PIN_WINDOW
        wrong = await voice_queries.audit_count_since(
            session, REFUSED, "patient", str(patient.id), since
        )
        expected = pin_of(patient.unseal(ring, "birth_date"))
        outcome: PinOutcome
        if wrong >= DEFAULT_PIN_ATTEMPTS:
            outcome = "locked"
        elif expected is None:
            outcome = "no_birth_date"
        elif hmac.compare_digest(digits.encode(), expected.encode()):
            outcome = "accepted"
        else:
            outcome = "refused"
        action = ACCEPTED if outcome == "accepted" else REFUSED
        detail = {"outcome": outcome, "call": "reminder" if message_id else "menu"}
        await record(session, actor, action, "patient", patient.id, detail)
        return outcome
