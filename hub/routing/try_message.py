""" "Try a message": what routing would do with a message, and what the consent gate would say,
without storing or sending anything.

It follows ``hub.routing.actions.apply_routing`` step by step (urgent triage, the enabled rules
in order, the default team, the after-hours reply) with the same pure pieces (``matches``,
``parse_actions``, ``render_reply``, ``localized_reply``), so an admin sees what a real message
would meet. Nothing is written: no conversation, message, tag or outbox row. The one exception
is the audit line when a patient is chosen, because the answer shows that patient's tags,
consent and name (a read of PHI by a person is always audited).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.consent.actions import may_send
from hub.consent.models import Purpose
from hub.consent.schemas import Decision
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import RECEIVE_ONLY, Channel, Priority
from hub.inbox.actions.tags import tags_of_patient_in
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Patient, Team
from hub.routing import queries
from hub.routing.hours import HoursInvalid, is_open
from hub.routing.replies import AFTER_HOURS_TEMPLATE, URGENT_TEMPLATE, localized_reply
from hub.routing.rules import (
    Facts,
    ReplyNotRendered,
    RuleInvalid,
    matches,
    parse_actions,
    parse_conditions,
    render_reply,
)
from hub.routing.triage import DEFAULT_TRIAGE_REPLY, TRIAGE_REPLY_SETTING, find_urgent_phrase
from hub.templates.actions import PatientFacts, template_context

SAMPLE_FIRST_NAME = "Sam"
"""The name an automatic reply is shown with when no patient is chosen (synthetic)."""


@dataclass(frozen=True)
class TryMessage:
    body: str
    channel: Channel
    at: datetime
    """Aware: when the message would arrive (business hours and the send window use it)."""
    patient_id: uuid.UUID | None = None
    language: str = "en"
    """Without a patient: the language the sender is taken to write in."""
    tags: frozenset[str] = frozenset()
    """Without a patient: the sender's patient tags."""
    is_new: bool = False
    """The sender is not a known patient yet (a first message)."""
    purpose: Purpose = Purpose.CARE
    """What the consent gate is asked about for the chosen patient."""
    consent_channel: Channel | None = None
    """The channel the gate is asked about; None: the one an automatic reply would go on."""


@dataclass
class TryOutcome:
    urgent: bool = False
    triage_phrase: str | None = None
    rules: list[str] = field(default_factory=list)
    """Names of the rules that fire, in order."""
    team: str | None = None
    priority: Priority = Priority.NORMAL
    tags: list[str] = field(default_factory=list)
    assign_to: str | None = None
    reply: str | None = None
    reply_source: str | None = None
    """"triage", "rule:<name>" or "after_hours"."""
    reply_channel: Channel = Channel.SMS
    notes: list[str] = field(default_factory=list)
    """What routing would skip and why, in plain words."""
    consent: Decision | None = None
    """The gate's answer for the chosen patient (None without one)."""


def _custom(value: object) -> dict[str, str]:
    if isinstance(value, str):
        return {"en": value} if value.strip() else {}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items() if isinstance(v, str) and v.strip()}
    return {}


def _open(team: Team | None, at: datetime, notes: list[str]) -> bool:
    if team is None:
        return True
    try:
        return is_open(team.business_hours, team.holidays, team.time_zone, at)
    except HoursInvalid as exc:
        notes.append(f"team {team.name}: {exc}; taken as open")
        return True


async def _evaluate(
    session: AsyncSession,
    ring: KeyRing,
    message: TryMessage,
    patient: Patient | None,
    clinic: dict[str, Any],
) -> TryOutcome:
    out = TryOutcome()
    channel = message.channel
    out.reply_channel = (
        Channel.SMS if channel is Channel.VOICE or channel in RECEIVE_ONLY else channel
    )
    # As routing says it: the patient's first name, "there" when none is on file.
    name = (patient.unseal(ring, "name") or "") if patient else SAMPLE_FIRST_NAME
    words = name.split()
    first_name = words[0] if words else "there"
    clinic_name = str(clinic.get("name") or "The clinic")
    language = patient.language if patient else message.language
    facts_patient = PatientFacts(" ".join(words), language, patient.time_zone if patient else "UTC")
    context = template_context(facts_patient, None, clinic)

    async def localized(template: str, custom: dict[str, str], source: str) -> str | None:
        try:
            found = await localized_reply(
                session,
                template=template,
                custom=custom,
                language=language,
                channel=out.reply_channel,
                first_name=first_name,
                clinic_name=clinic_name,
                context=context,
            )
        except ReplyNotRendered as exc:
            out.notes.append(f"{source}: {exc}")
            return None
        return found.body if found else None

    phrases = [p.phrase for p in await queries.triage_phrases(session, enabled_only=True)]
    if (phrase := find_urgent_phrase(message.body, phrases)) is not None:
        out.urgent, out.triage_phrase = True, phrase
        out.priority, out.tags = Priority.URGENT, ["urgent"]
        stored = await queries.setting(session, TRIAGE_REPLY_SETTING)
        custom = _custom(stored.value if stored is not None else None)
        out.reply = await localized(URGENT_TEMPLATE, custom, "triage") or render_reply(
            DEFAULT_TRIAGE_REPLY, first_name=first_name, clinic_name=clinic_name
        )
        out.reply_source = "triage"
    tags = await tags_of_patient_in(session, ring, patient.id) if patient else message.tags
    facts = Facts(
        channel=channel.value,
        body=message.body,
        patient_tags=frozenset(tags),
        patient_language=language or "",
        patient_is_new=message.is_new if patient is None else False,
        team_open=True,
    )
    team: Team | None = None
    default = await queries.default_team(session)
    rule_replied = False
    for rule in await queries.rules_in_order(session, enabled_only=True):
        try:
            conditions, actions = parse_conditions(rule.conditions), parse_actions(rule.actions)
        except RuleInvalid as exc:
            out.notes.append(f"rule {rule.name}: stored rule is invalid and is skipped: {exc}")
            continue
        open_now = _open(team or default, message.at, out.notes)
        if not matches(conditions, replace(facts, team_open=open_now)):
            continue
        out.rules.append(rule.name)
        source = f"rule {rule.name}"
        if actions.team is not None:
            named = await queries.team_named(session, actions.team)
            if named is None:
                out.notes.append(f"{source}: no team named {actions.team!r}, so it is not set")
            else:
                team = named
        if actions.priority is not None:
            if out.urgent and actions.priority is not Priority.URGENT:
                out.notes.append(f"{source}: the message is urgent; only staff lower that")
            else:
                out.priority = actions.priority
        out.tags += [t for t in actions.add_tags if t not in out.tags]
        if actions.assign_to is not None:
            out.assign_to = actions.assign_to
        if actions.auto_reply is not None:
            if out.urgent:
                out.notes.append(f"{source}: urgent message, only the emergency reply is sent")
            elif rule_replied:
                out.notes.append(f"{source}: an earlier rule already replied")
            else:
                try:
                    out.reply = render_reply(
                        actions.auto_reply, first_name=first_name, clinic_name=clinic_name
                    )
                    out.reply_source, rule_replied = f"rule:{rule.name}", True
                except ReplyNotRendered as exc:
                    out.notes.append(f"{source}: {exc}")
        if rule.stop_processing:
            break
    if team is None:
        team = default
        if team is None:
            out.notes.append("no team is marked default: the message would stay unrouted")
    out.team = team.name if team else None
    closed = (
        team is not None and team.after_hours_enabled and not _open(team, message.at, out.notes)
    )
    if not out.urgent and team is not None and closed:
        if rule_replied:
            out.notes.append("after hours: the message was answered by a rule already")
        else:
            text = await localized(AFTER_HOURS_TEMPLATE, team.after_hours_replies, "after hours")
            if text is not None:
                out.reply, out.reply_source = text, "after_hours"
    if patient is not None:
        out.consent = await may_send(
            session,
            patient,
            message.consent_channel or out.reply_channel,
            message.purpose,
            message.at,
        )
    return out


async def do_try_message(
    db: Database, ring: KeyRing, actor: Actor, message: TryMessage, *, clinic: dict[str, Any]
) -> TryOutcome:
    """What routing and the consent gate would do with ``message``; stores nothing but the
    audit line of a chosen patient's view. Raises NotFound for an unknown patient."""
    if message.patient_id is None:
        async with db.reader() as session:
            return await _evaluate(session, ring, message, None, clinic)
    async with db.transaction() as session:
        patient = await session.get(Patient, message.patient_id)
        if patient is None:
            raise NotFound("no such patient")
        outcome = await _evaluate(session, ring, message, patient, clinic)
        await record(
            session,
            actor,
            "routing.try",
            "patient",
            patient.id,
            {"channel": message.channel.value, "purpose": message.purpose.value},
        )
    return outcome
