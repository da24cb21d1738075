"""One enrollment played forward from its planned runs to the dataset's "now", as dispatch,
the consent gate, the providers' callbacks and the reply handling would have left it: the
rows of bench/scale_journeys.py's generator (see there for the whole picture)."""

from __future__ import annotations

import bisect
import math
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench.scale_data import uuid7_at

if TYPE_CHECKING:
    from bench.scale_journeys import JourneySpec

SMS_FAILURES = (
    ("30003", "undelivered"),
    ("30005", "undelivered"),
    ("30006", "undelivered"),
    ("30007", "undelivered"),
    ("30008", "undelivered"),
    ("21610", "failed"),
    ("21211", "failed"),
    ("21614", "failed"),
    ("30004", "failed"),
)
"""Twilio's codes, with the status a message ends in."""
EMAIL_FAILURES = (
    ("5.1.1", "failed"),
    ("5.2.2", "failed"),
    ("5.7.1", "failed"),
    ("4.4.1", "undelivered"),
)
"""RFC 3463 enhanced status codes, with the status a message ends in."""
REMINDER_TEXT = "Hi, a reminder of your appointment on {day}. Reply C to confirm or 2 to cancel."
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def _utc(at_s: float) -> datetime:
    return datetime.fromtimestamp(at_s, UTC)


# -- what the database already holds ---------------------------------------------------------


class Conversations:
    """Each patient's conversations per channel, by creation time: dispatch writes into the
    latest one at the moment of sending, or opens a resolved one when there is none."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[uuid.UUID, str], list[tuple[float, uuid.UUID]]] = defaultdict(list)
        self.opened: list[tuple[Any, ...]] = []

    def add(self, patient: uuid.UUID, channel: str, created_s: float, cid: uuid.UUID) -> None:
        bisect.insort(self.by_key[(patient, channel)], (created_s, cid))

    def at(self, patient: uuid.UUID, channel: str, at_s: float, rnd: random.Random) -> uuid.UUID:
        found = self.by_key.get((patient, channel), [])
        i = bisect.bisect_right(found, (at_s, uuid.UUID(int=(1 << 128) - 1)))
        if i:
            return found[i - 1][1]
        cid = uuid7_at(at_s, rnd)
        self.add(patient, channel, at_s, cid)
        at = _utc(at_s)
        self.opened.append((cid, patient, channel, "resolved", "normal", at, at, at))
        return cid


OPENED_COLUMNS = (
    "id",
    "patient_id",
    "channel",
    "status",
    "priority",
    "created_at",
    "last_activity_at",
    "resolved_at",
)


# -- one enrollment, played forward ----------------------------------------------------------


@dataclass
class Rows:
    """Rows of one chunk, as column -> value dicts (the loader keeps the table's columns)."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, table: str, **row: Any) -> dict[str, Any]:
        self.tables[table].append(row)
        return row


class World:
    """Everything the chunks share: journeys, patients, conversations, the ring, the clock."""

    def __init__(
        self,
        spec: JourneySpec,
        now_s: float,
        ring: Any,
        journeys: dict[str, Any],
        patients: list[tuple[uuid.UUID, str, bool]],
        conversations: Conversations,
    ) -> None:
        from hub.crypto import associated_data

        self.spec, self.now_s, self.ring = spec, now_s, ring
        self.journeys = journeys
        """key -> (journey id, parsed definition)."""
        self.patients, self.conversations = patients, conversations
        self.aad = associated_data
        self.runs = 0
        self.appointments = 0

    def seal(self, table: str, column: str, row_id: uuid.UUID, text: str) -> bytes:
        return bytes(self.ring.encrypt(text.encode(), self.aad(table, column, row_id)))


def _message(
    world: World,
    rows: Rows,
    rnd: random.Random,
    patient: uuid.UUID,
    channel: str,
    at_s: float,
    *,
    inbound: bool,
    body: str | None,
    purpose: str,
    failure: tuple[str, str] | None = None,
    status: str | None = None,
    conversation_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A message in the patient's conversation on ``channel`` at ``at_s``; outbound ones get
    their first delivery attempt with the provider's id, as dispatch records them."""
    mid = uuid7_at(at_s, rnd)
    cid = conversation_id or world.conversations.at(patient, channel, at_s, rnd)
    at = _utc(at_s)
    provider = {"sms": "twilio_sms", "email": "email_smtp"}.get(channel, channel)
    sealed = world.seal("inbox_message", "body_enc", mid, body) if body is not None else None
    if inbound:
        rows.add(
            "inbox_message",
            id=mid,
            conversation_id=cid,
            direction="inbound",
            channel=channel,
            body_enc=sealed,
            provider="email" if channel == "email" else provider,
            provider_message_id=("SM" + mid.hex) if channel == "sms" else None,
            status="received",
            created_at=at,
            updated_at=at,
            purpose="care",
            send_attempts=0,
            delivery_notes="[]",
        )
        return mid
    if status is None and failure is not None:
        status = failure[1]
    elif status is None:
        status = "delivered" if rnd.random() < 0.96 else "sent"
    provider_id = ("SM" if channel == "sms" else "em") + mid.hex
    # A send the consent gate refused never reached a provider: no attempt, no provider id.
    handed = failure is not None or status != "failed"
    sent = _utc(at_s + 1) if handed and status != "failed" else None
    delivered = _utc(at_s + rnd.uniform(3, 40)) if status == "delivered" else None
    rows.add(
        "inbox_message",
        id=mid,
        conversation_id=cid,
        direction="outbound",
        channel=channel,
        body_enc=sealed,
        provider=provider if handed else None,
        provider_message_id=provider_id if handed else None,
        status=status,
        error_code=failure[0] if failure else None,
        error_reason="the provider refused or could not deliver it" if failure else None,
        created_at=at,
        sent_at=sent,
        delivered_at=delivered,
        updated_at=delivered or sent or at,
        purpose=purpose,
        send_attempts=1,
        delivery_notes="[]",
    )
    if handed:
        rows.add(
            "inbox_delivery_attempt",
            id=uuid7_at(at_s, rnd),
            message_id=mid,
            attempt=1,
            provider=provider,
            provider_message_id=provider_id,
            status=status,
            error_code=failure[0] if failure else None,
            error_reason="the provider refused or could not deliver it" if failure else None,
            created_at=at,
            updated_at=delivered or sent or at,
        )
    return mid


def _failure(channel: str, rnd: random.Random) -> tuple[str, str] | None:
    if channel == "sms" and rnd.random() < 0.055:
        return rnd.choice(SMS_FAILURES)
    if channel == "email" and rnd.random() < 0.04:
        return rnd.choice(EMAIL_FAILURES)
    return None


def _reply_delay(rnd: random.Random, cap_s: float) -> float:
    """Minutes to hours, median about 20 minutes, never past ``cap_s``."""
    return min(cap_s, 60 * rnd.lognormvariate(math.log(20), 1.2))


class Enrolling:
    """One enrollment being played forward: its runs in due order, what the patient did."""

    def __init__(
        self,
        world: World,
        rows: Rows,
        rnd: random.Random,
        key: str,
        patient: tuple[uuid.UUID, str, bool],
        anchor_s: float,
        enrolled_s: float,
    ) -> None:
        from hub.journeys.definitions import plan

        self.world, self.rows, self.rnd, self.key = world, rows, rnd, key
        self.patient, self.zone, self.has_email = patient
        journey_id, self.definition = world.journeys[key]
        self.anchor_s, self.enrolled_s = anchor_s, enrolled_s
        self.id = uuid7_at(enrolled_s, rnd)
        self.confirmed_s: float | None = None
        self.cancelled_s: float | None = None
        self.opted_out: set[str] = set()
        self.replied = False
        self.score: int | None = None
        self.reminded = False
        planned = plan(self.definition, _utc(anchor_s), _utc(enrolled_s), zone=self.zone)
        self.steps = {s.id: s for s in self.definition.steps}
        self.runs = [
            rows.add(
                "journey_step_run",
                id=uuid7_at(enrolled_s, rnd),
                enrollment_id=self.id,
                step_id=p.step_id,
                attempt=1,
                due_at=p.due_at,
                status="skipped" if p.skipped else "planned",
                reason=p.skip_reason,
                updated_at=_utc(enrolled_s),
            )
            for p in planned
        ]
        self.journey_id = journey_id

    def _finish(
        self, run: dict[str, Any], status: str, reason: str | None, at_s: float, **extra: Any
    ) -> None:
        run.update(status=status, reason=reason, updated_at=_utc(at_s), **extra)

    def _cancel_pending(self, why: str, at_s: float, *, only_asks: bool = False) -> None:
        for run in self.runs:
            step = self.steps[run["step_id"]]
            pending = run["status"] == "planned" and run["due_at"].timestamp() > at_s
            if pending and (not only_asks or step.asks == "confirmation"):
                self._finish(run, "cancelled", why, at_s)

    def play(self) -> None:
        for n, run in enumerate(self.runs):
            if run["status"] != "planned":
                continue
            due_s = run["due_at"].timestamp()
            if due_s > self.world.now_s:
                return  # still planned: the tick has not reached it
            step = self.steps[run["step_id"]]
            skip = self._skip_reason(step)
            if skip is not None:
                self._finish(run, "skipped", skip, due_s)
                continue
            self._send(run, step, due_s + self.rnd.uniform(1, 90), n)

    def _skip_reason(self, step: Any) -> str | None:
        for condition in step.conditions:
            if condition == "skip_if_confirmed" and self.confirmed_s is not None:
                return "the patient already confirmed"
            if condition == "only_if_no_reply" and self.replied:
                return "the patient has replied since enrolling"
            if condition.startswith("only_if_score_below:"):
                limit = int(condition.split(":", 1)[1])
                if self.score is None or self.score >= limit:
                    return f"no survey score below {limit}"
        return None

    def _channel(self, step: Any) -> str:
        """The first of the step's channels (or the patient's order) the patient has an
        address for; voice and chat are left out (reminders here are texts and mail)."""
        order = [str(c) for c in step.channels.order(("sms", "email", "voice"))]
        usable = [c for c in order if c == "sms" or (c == "email" and self.has_email)]
        return usable[0] if usable else "sms"

    def _send(self, run: dict[str, Any], step: Any, at_s: float, n: int) -> None:
        rnd, world = self.rnd, self.world
        channel = self._channel(step)
        purpose = str(step.purpose or self.definition.purpose)
        # Surveys need an opt-in; a STOP earlier in the journey closes the channel.
        refused = channel in self.opted_out or (purpose == "surveys" and rnd.random() < 0.25)
        if refused:
            reason = f"no channel in the patient's order may be used: {channel}: no consent"
            mid = _message(
                world,
                self.rows,
                rnd,
                self.patient,
                channel,
                at_s,
                inbound=False,
                body=None,
                purpose=purpose,
                status="failed",
            )
            self.rows.tables["inbox_message"][-1].update(
                error_code="no_channel", error_reason=reason
            )
            self._finish(run, "failed", reason, at_s, message_id=mid, channel=None)
            return
        failure = _failure(channel, rnd)
        body = REMINDER_TEXT.format(day=rnd.choice(DAYS))
        mid = _message(
            world,
            self.rows,
            rnd,
            self.patient,
            channel,
            at_s,
            inbound=False,
            body=body,
            purpose=purpose,
            failure=failure,
        )
        self._finish(run, "sent", None, at_s, message_id=mid, channel=channel)
        if purpose == "reminders":
            self.reminded = True
        if failure is not None or self.rows.tables["inbox_message"][-1]["status"] != "delivered":
            return
        nxt = next((r["due_at"].timestamp() for r in self.runs[n + 1 :]), None)
        cap = (
            min(
                x
                for x in (
                    nxt,
                    self.anchor_s if self.key == "appointment_reminders" else None,
                    world.now_s,
                )
                if x is not None
            )
            - at_s
            - 30
        )
        if cap <= 60:
            return
        self._reply(step, channel, at_s, cap)

    def _reply(self, step: Any, channel: str, sent_s: float, cap_s: float) -> None:
        rnd, world = self.rnd, self.world
        at_s = sent_s + max(30.0, _reply_delay(rnd, cap_s))
        roll = rnd.random()
        body: str | None = None
        if step.asks in ("confirmation", "cancellation"):
            confirm = (0.42 if channel == "sms" else 0.2) if step.asks == "confirmation" else 0.04
            cancel = 0.06 if step.asks == "confirmation" else 0.03
            if roll < confirm:
                body = "C"
                if self.confirmed_s is None:
                    self.confirmed_s = at_s
                self._cancel_pending("the patient confirmed", at_s, only_asks=True)
            elif roll < confirm + cancel:
                body = "2" if channel == "sms" else "CANCEL"
                self.cancelled_s = at_s
                self._cancel_pending("the patient cancelled", at_s)
            elif channel == "sms" and roll < confirm + cancel + 0.012:
                body = "STOP"
                self.opted_out.add("sms")
                self.rows.add(
                    "consent_record",
                    id=uuid7_at(at_s, rnd),
                    patient_id=self.patient,
                    channel="sms",
                    purpose=str(self.definition.purpose),
                    state="revoked",
                    source="keyword",
                    actor="patient",
                    evidence="STOP",
                    created_at=_utc(at_s),
                )
            elif roll < confirm + cancel + 0.05:
                body = "Is there parking near the clinic?"
        elif step.asks == "survey":
            if rnd.random() < 0.4:
                if step.survey is not None and step.survey.scale == "free_text":
                    body = "The wait was long but the nurse was kind."
                    text_enc = True
                    score = None
                else:
                    score = min(10, max(0, int(rnd.gauss(8, 2.2))))
                    body, text_enc = str(score), False
                    self.score = score
                    at_s = sent_s + min(cap_s, max(30.0, 60 * rnd.uniform(1, 100)))
                aid = uuid7_at(at_s, rnd)
                mid = _message(
                    world,
                    self.rows,
                    rnd,
                    self.patient,
                    channel,
                    at_s,
                    inbound=True,
                    body=body,
                    purpose="care",
                )
                self.rows.add(
                    "journey_survey_answer",
                    id=aid,
                    enrollment_id=self.id,
                    step_id=step.id,
                    score=score,
                    message_id=mid,
                    created_at=_utc(at_s),
                    text_enc=world.seal("journey_survey_answer", "text_enc", aid, body)
                    if text_enc
                    else None,
                )
                self.replied = True
            return
        elif rnd.random() < 0.2:
            body = "Yes, please call me to book it."
            self.replied = True
            self._cancel_pending("the patient answered", at_s)
        if body is None:
            return
        _message(
            world,
            self.rows,
            rnd,
            self.patient,
            channel,
            at_s,
            inbound=True,
            body=body,
            purpose="care",
        )
        self.replied = True
        handler = (
            step.handler("confirm" if body == "C" else "cancel")
            if body in ("C", "2", "CANCEL")
            else None
        )
        if handler is not None and handler.reply_template:
            _message(
                world,
                self.rows,
                rnd,
                self.patient,
                channel,
                at_s + 2,
                inbound=False,
                body="Thank you, we have noted your answer.",
                purpose=str(self.definition.purpose),
            )

    def enrollment_row(self, appointment_id: uuid.UUID | None) -> None:
        status = "active" if any(r["status"] == "planned" for r in self.runs) else "completed"
        if self.cancelled_s is not None:
            status = "cancelled"
        self.rows.add(
            "journey_enrollment",
            id=self.id,
            journey_id=self.journey_id,
            patient_id=self.patient,
            appointment_id=appointment_id,
            dedupe_key=f"{self.patient}:{self.key}:{self.id}",
            anchor_at=_utc(self.anchor_s),
            status=status,
            confirmed_at=_utc(self.confirmed_s) if self.confirmed_s else None,
            cancelled_at=_utc(self.cancelled_s) if self.cancelled_s else None,
            version=None,
            created_at=_utc(self.enrolled_s),
        )
