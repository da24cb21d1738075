"""The outcome reports' figures counted again in plain Python over every row of the raw tables
(no report code, no SQL beyond "select everything"), from the definitions in docs/reports.md."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from hub.consent.models import ConsentRecord, ConsentState
from hub.db import Database
from hub.enums import Direction, MessageStatus
from hub.inbox.models import Conversation, DeliveryAttempt, Message
from hub.journeys.models import Appointment, Enrollment, RunStatus, StepRun
from hub.reports.delivery_rollup_actions import do_refresh_delivery_rollup
from hub.reports.run_facts_actions import do_refresh_run_facts

FAILED = {MessageStatus.FAILED, MessageStatus.UNDELIVERED}
GOOD = {MessageStatus.DELIVERED, MessageStatus.READ}


async def everything(db: Database) -> dict[str, list[Any]]:
    tables = {
        "appointments": Appointment,
        "enrollments": Enrollment,
        "runs": StepRun,
        "messages": Message,
        "conversations": Conversation,
        "attempts": DeliveryAttempt,
        "consents": ConsentRecord,
    }
    async with db.reader() as session:
        return {k: list((await session.scalars(select(m))).all()) for k, m in tables.items()}


def appointment_figures(
    rows: dict[str, list[Any]], low: datetime, high: datetime, late_hours: int = 24
) -> dict[str, Any]:
    messages = {m.id: m for m in rows["messages"]}
    enrollments = defaultdict(list)
    for e in rows["enrollments"]:
        enrollments[e.appointment_id].append(e.id)
    runs = defaultdict(list)
    for r in rows["runs"]:
        runs[r.enrollment_id].append(r)

    def group(a: Appointment) -> str:
        mine = [r for e in enrollments[a.id] for r in runs[e]]
        before = [r for r in mine if r.due_at < a.start_at]
        for r in mine:
            m = messages.get(r.message_id)
            if r.status == RunStatus.SENT and m and m.created_at < a.start_at:
                if m.status in FAILED:
                    continue
                return "reminded"
        for r in before:
            m = messages.get(r.message_id)
            reason = r.reason or ""
            code = m.error_code if m else None
            if "(opted_out)" in reason or "(no_opt_in)" in reason:
                return "opted_out"
            if code in ("opted_out", "no_opt_in", "21610"):
                return "opted_out"
        for r in before:
            m = messages.get(r.message_id)
            if r.status == RunStatus.FAILED or (m and m.status in FAILED):
                return "unreachable"
        for r in before:
            if r.status == RunStatus.SKIPPED and r.reason == "due before enrollment":
                return "too_late"
        return "no_journey" if not before else "other"

    tally: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    late = in_time = 0
    for a in rows["appointments"]:
        if not (low <= a.start_at < high) or a.status.value == "entered_in_error":
            continue
        kind = {"arrived": "attended", "fulfilled": "attended", "noshow": "no_show"}.get(
            a.status.value, "cancelled" if a.status.value == "cancelled" else "open"
        )
        tally[group(a)][kind] += 1
        tally["all"][kind] += 1
        if a.status.value == "cancelled" and a.cancelled_at is not None:
            if a.start_at - a.cancelled_at < timedelta(hours=late_hours):
                late += 1
            else:
                in_time += 1

    def no_show_rate(*groups: str) -> float | None:
        shows = sum(tally[g]["attended"] for g in groups)
        missed = sum(tally[g]["no_show"] for g in groups)
        return missed / (shows + missed) if shows + missed else None

    others = ("opted_out", "unreachable", "too_late", "no_journey", "other")
    return {
        "appointments": sum(tally["all"].values()),
        "attended": tally["all"]["attended"],
        "no_shows": tally["all"]["no_show"],
        "no_show_rate": no_show_rate("all"),
        "no_show_rate_reminded": no_show_rate("reminded"),
        "no_show_rate_not_reminded": no_show_rate(*others),
        "cancelled_late": late,
        "cancelled_in_time": in_time,
        "slots_freed": in_time,
        "outcome_unknown": tally["all"]["open"],
        "groups": {g: {k: n for k, n in t.items() if n} for g, t in tally.items()},
    }


def journey_figures(
    rows: dict[str, list[Any]], journey_id: Any, low: datetime, high: datetime
) -> dict[str, Any]:
    """Per step and in all: patients sent, delivered, confirmed, cancelled, replied, opted
    out, failed; each event on the last step message the patient had before it."""
    messages = {m.id: m for m in rows["messages"]}
    enrollments = {e.id: e for e in rows["enrollments"] if e.journey_id == journey_id}
    patient_of = {c.id: c.patient_id for c in rows["conversations"]}
    inbound = defaultdict(list)
    for m in rows["messages"]:
        if m.direction == Direction.INBOUND:
            inbound[patient_of[m.conversation_id]].append(m.created_at)
    revoked = [c for c in rows["consents"] if c.state == ConsentState.REVOKED]
    runs = [r for r in rows["runs"] if r.enrollment_id in enrollments]
    by_enrollment = defaultdict(list)
    for r in runs:
        if r.message_id in messages:
            by_enrollment[r.enrollment_id].append(messages[r.message_id].created_at)
    steps: dict[str, dict[str, set[Any]]] = defaultdict(lambda: defaultdict(set))
    waits: list[float] = []
    for r in runs:
        if not (low <= r.due_at < high):
            continue
        e = enrollments[r.enrollment_id]
        m = messages.get(r.message_id)
        s = steps[r.step_id]
        if r.status == RunStatus.FAILED or (
            r.status == RunStatus.SENT and m and m.status in FAILED
        ):
            s["failed"].add(e.id)
        if r.status != RunStatus.SENT or m is None:
            continue
        sent = m.created_at
        later = [t for t in by_enrollment[e.id] if t > sent]
        until = min(later) if later else None

        def within(
            at: datetime | None,
            strict: bool = False,
            sent: datetime = sent,
            until: datetime | None = until,
        ) -> bool:
            if at is None or (at <= sent if strict else at < sent):
                return False
            return until is None or at < until

        s["sent"].add(e.id)
        if m.status in GOOD:
            s["delivered"].add(e.id)
        if within(e.confirmed_at):
            s["confirmed"].add(e.id)
            waits.append((e.confirmed_at - sent).total_seconds())
        if within(e.cancelled_at):
            s["cancelled"].add(e.id)
        if any(within(t, strict=True) for t in inbound[e.patient_id]):
            s["replied"].add(e.id)
        if any(
            c.patient_id == e.patient_id
            and c.channel == m.channel
            and c.purpose.value == m.purpose
            and within(c.created_at)
            for c in revoked
        ):
            s["opted_out"].add(e.id)
    keys = ("sent", "delivered", "confirmed", "cancelled", "replied", "opted_out", "failed")
    total = {k: len(set().union(*(s[k] for s in steps.values()))) for k in keys}
    return {
        "steps": {sid: {k: len(s[k]) for k in keys} for sid, s in steps.items()},
        "total": total,
        "time_to_confirm": _median_cut(waits),
    }


def _median_cut(waits: list[float]) -> int | None:
    """``percentile_disc(0.5)`` of the waits (the lower middle one), cut down to what staff
    read: whole seconds below a minute, minutes below a day, hours beyond."""
    if not waits:
        return None
    middle = math.floor(sorted(waits)[math.ceil(len(waits) / 2) - 1])
    if middle < 60:
        return middle
    return middle - middle % (60 if middle < 86400 else 3600)


def delivery_figures(rows: dict[str, list[Any]], low: datetime, high: datetime) -> dict[str, Any]:
    last_attempt = {(a.message_id, a.attempt): a.provider for a in rows["attempts"]}
    per: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    not_sent = 0
    codes: dict[tuple[str, str], int] = defaultdict(int)
    for m in rows["messages"]:
        if m.direction != Direction.OUTBOUND or not (low <= m.created_at < high):
            continue
        if m.status in FAILED:
            codes[(m.channel.value, m.error_code or "")] += 1
        provider = m.provider or last_attempt.get((m.id, m.send_attempts))
        if provider is None:
            not_sent += m.status in FAILED
            continue
        final = (
            "delivered"
            if m.status in GOOD or (m.status == MessageStatus.SENT and m.channel.value == "email")
            else "failed"
            if m.status in FAILED
            else "pending"
        )
        per[(m.channel.value, provider)][final] += 1
    delivered = sum(p["delivered"] for p in per.values())
    failed = sum(p["failed"] for p in per.values())
    emails = sum(sum(p.values()) for (ch, _), p in per.items() if ch == "email")
    bounces = sum(
        n
        for (ch, code), n in codes.items()
        if ch == "email" and (code.startswith("bounce_") or code.startswith("smtp_5"))
    )
    complaints = {
        c.evidence
        for c in rows["consents"]
        if c.evidence.startswith("spam complaint:") and low <= c.created_at < high
    }
    return {
        "providers": {k: dict(v) for k, v in per.items()},
        "delivered": delivered,
        "failed": failed,
        "delivery_rate": delivered / (delivered + failed) if delivered + failed else None,
        "not_sent": not_sent,
        "codes": dict(codes),
        "emails": emails,
        "email_bounces": bounces,
        "email_complaints": len(complaints),
    }


async def refresh_rollups(db: Database) -> None:
    """Run the tick's outcome rollup refresh until it has caught up (the reports read it)."""
    for _ in range(50):
        if (await do_refresh_run_facts(db)).caught_up:
            break
    else:
        raise AssertionError("the run facts refresh never caught up")
    for _ in range(50):
        if (await do_refresh_delivery_rollup(db)).caught_up:
            return
    raise AssertionError("the delivery rollup refresh never caught up")
