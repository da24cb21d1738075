"""Routing of inbound messages, and the admin actions that edit rules, phrases and settings.

``apply_routing`` runs inside intake's transaction (it opens none): the routing decision, the
replies it queues and the message itself commit or roll back together, and the caller releases
``outcome.effect_ids`` after its commit. It never raises for bad configuration (an unknown team
in a rule, a broken stored template, malformed hours): a webhook must answer, so the problem is
reported in ``outcome.skipped`` and the rest of the routing goes on.

Order: urgent triage first (never waits for business hours), then the rules by position, then
the default team, then the after-hours reply (once per conversation, never on urgent messages,
which already got the emergency reply).

One automatic answer per inbound message: a message the intake already answered (a journey
reply that was confirmed back, a HELP) gets no rule or after-hours reply on top; only the
emergency reply to an urgent message still goes, since it may save a life. Answers go on the
channel the patient wrote on (a voicemail is answered by text), in the patient's language
(hub.routing.replies).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.consent import actions as consent
from hub.consent.models import Purpose
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import RECEIVE_ONLY, Channel, Priority
from hub.inbox import queries as inbox_queries
from hub.inbox.actions.delivery import queue_outbound
from hub.inbox.actions.patients import FIRST_RESPONSE_TARGETS, view_patient
from hub.inbox.actions.tags import add_conversation_tags_in, tags_of_patient_in
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, Patient, Team
from hub.outbox import add_effect
from hub.routing import queries
from hub.routing.hours import HoursInvalid, add_open_time, is_open
from hub.routing.models import HubSetting, RoutingRule, TriagePhrase
from hub.routing.replies import AFTER_HOURS_TEMPLATE, URGENT_TEMPLATE, localized_reply
from hub.routing.rules import (
    Actions,
    Facts,
    ReplyNotRendered,
    RuleInvalid,
    RuleView,
    check_flag,
    check_phrases,
    check_position,
    check_rule_name,
    check_setting,
    matches,
    parse_actions,
    parse_conditions,
    plain_json,
    render_reply,
)
from hub.routing.triage import (
    DEFAULT_TRIAGE_REPLY,
    TRIAGE_REPLY_SETTING,
    find_urgent_phrase,
)
from hub.templates.actions import template_context
from hub.templates.render import DEFAULT_LOCALE

URGENT_TAG = "urgent"
"""Tag put on conversations that triage made urgent (staff filter on it)."""


@dataclass(frozen=True)
class Skipped:
    """An action routing did not take, and why (no PHI: names of rules, teams, codes)."""

    source: str
    """Which step: "triage", "rule:<name>", "default_team", "after_hours", "business_hours"."""
    action: str
    reason: str


@dataclass
class RoutingOutcome:
    """What routing did to one inbound message, for intake, the inbox UI and the tests."""

    urgent: bool = False
    triage_phrase: str | None = field(default=None, repr=False)
    """The phrase that made the message urgent: it reveals what the patient wrote, so treat it
    as PHI (show it to staff, never log it)."""
    matched_rule_ids: list[uuid.UUID] = field(default_factory=list)
    matched_rule_names: list[str] = field(default_factory=list)
    team_id: uuid.UUID | None = None
    priority: Priority = Priority.NORMAL
    tags_added: list[str] = field(default_factory=list)
    assign_to_staff_id: uuid.UUID | None = None
    """Staff a rule asked for; the caller hands it to assignment after its commit."""
    replies: list[str] = field(default_factory=list)
    """Sources of the replies queued: "triage", "rule:<name>", "after_hours"."""
    reply_message_ids: list[uuid.UUID] = field(default_factory=list)
    effect_ids: list[uuid.UUID] = field(default_factory=list)
    """Outbox events to release after the caller's transaction commits."""
    skipped: list[Skipped] = field(default_factory=list)


@dataclass
class _Run:
    session: AsyncSession
    ring: KeyRing
    patient: Patient
    conversation: Conversation
    clinic: Mapping[str, Any]
    channel: Channel
    """Where automatic answers go: the channel the patient wrote on (a call is answered by
    text)."""
    answered: bool
    """The intake already answered this message (a journey reply, HELP)."""
    now: datetime
    outcome: RoutingOutcome
    open_by_team: dict[uuid.UUID, bool] = field(default_factory=dict)
    teams: dict[uuid.UUID, Team] = field(default_factory=dict)
    """Teams this run loaded: the session's identity map holds them weakly, so without a
    reference here the after-hours check would load the rule's team a second time."""
    rule_replied: bool = False

    def skip(self, source: str, action: str, reason: str) -> None:
        self.outcome.skipped.append(Skipped(source, action, reason))

    @property
    def first_name(self) -> str:
        words = (self.patient.unseal(self.ring, "name") or "").split()
        return words[0] if words else "there"

    @property
    def clinic_name(self) -> str:
        return str(self.clinic.get("name") or "The clinic")


async def _due(run: _Run, priority: Priority) -> datetime:
    """When a first response to a message arriving now is due. The target counts the team's
    open hours (a text at 21:44 is due four open hours after the team opens, not at 01:44);
    an urgent message's clock runs around the clock, since someone is on call for those."""
    target = FIRST_RESPONSE_TARGETS[priority]
    if priority is Priority.URGENT:
        return run.now + target
    team = await _hours_team(run)
    if team is None:
        return run.now + target
    try:
        due = add_open_time(team.business_hours, team.holidays, team.time_zone, run.now, target)
    except HoursInvalid as exc:
        run.skip("business_hours", "hours", f"team {team.name!r}: {exc}; target on the clock")
        due = None
    return due or run.now + target


async def _set_priority(run: _Run, priority: Priority) -> None:
    """Set the priority and pull the first-response deadline in; never push it out, so
    reprioritising can never hide an overdue conversation."""
    conversation = run.conversation
    conversation.priority = priority
    due = await _due(run, priority)
    current = conversation.first_response_due_at
    if priority is Priority.URGENT and conversation.first_responded_at is not None:
        conversation.first_response_due_at = due  # a new emergency restarts the clock
    elif conversation.first_responded_at is None and (current is None or due < current):
        conversation.first_response_due_at = due


async def _add_tags(run: _Run, tags: tuple[str, ...]) -> None:
    new = await add_conversation_tags_in(run.session, run.ring, run.conversation.id, tags)
    run.outcome.tags_added.extend(t for t in new if t not in run.outcome.tags_added)


async def _team_open(run: _Run, team: Team | None) -> bool:
    """Whether ``team`` is open now; no team or unreadable hours count as open (no
    after-hours reply rather than a wrong one)."""
    if team is None:
        return True
    if team.id not in run.open_by_team:
        try:
            run.open_by_team[team.id] = is_open(
                team.business_hours, team.holidays, team.time_zone, run.now
            )
        except HoursInvalid as exc:
            run.skip("business_hours", "hours", f"team {team.name!r}: {exc}; treated as open")
            run.open_by_team[team.id] = True
    return run.open_by_team[team.id]


async def _team(run: _Run, team_id: uuid.UUID) -> Team | None:
    team = run.teams.get(team_id) or await queries.team(run.session, team_id)
    if team is not None:
        run.teams[team.id] = team
    return team


async def _hours_team(run: _Run) -> Team | None:
    if run.conversation.team_id is not None:
        return await _team(run, run.conversation.team_id)
    return await queries.default_team(run.session)


async def _send(run: _Run, source: str, body: str) -> bool:
    """Queue ``body`` on the channel the patient wrote on if consent for care messages allows
    (an email in a thread that began by text is answered by email)."""
    channel = run.channel
    decision = await consent.may_send(run.session, run.patient, channel, Purpose.CARE, run.now)
    if not decision.allowed:
        run.skip(source, "reply", f"not sent: {decision.reason} ({decision.code})")
        return False
    message, effects = await queue_outbound(
        run.session,
        run.ring,
        run.conversation,
        body,
        decision,
        author_id=None,
        purpose=Purpose.CARE,
        urgent=True,
        channel=channel,
    )
    run.outcome.replies.append(source)
    run.outcome.reply_message_ids.append(message.id)
    run.outcome.effect_ids.extend(effects)
    return True


async def _reply(run: _Run, source: str, template: str) -> bool:
    try:
        body = render_reply(template, first_name=run.first_name, clinic_name=run.clinic_name)
    except ReplyNotRendered as exc:
        run.skip(source, "auto_reply", str(exc))
        return False
    return await _send(run, source, body)


async def _localized(
    run: _Run, source: str, template: str, custom: Mapping[str, str]
) -> str | None:
    """The automatic answer in the patient's language (hub.routing.replies); None, with the
    reason in ``skipped``, when there is none."""
    try:
        found = await localized_reply(
            run.session,
            template=template,
            custom=custom,
            language=run.patient.language,
            channel=run.channel,
            first_name=run.first_name,
            clinic_name=run.clinic_name,
            context=template_context(view_patient(run.ring, run.patient), None, run.clinic),
        )
    except ReplyNotRendered as exc:
        run.skip(source, "auto_reply", str(exc))
        return None
    if found is None:
        run.skip(source, "auto_reply", f"no {template} text for {run.channel.value}")
        return None
    return found.body


def _custom_texts(value: object) -> dict[str, str]:
    """A stored custom text: per language ({"es": ...}), or one text (the default locale's)."""
    if isinstance(value, str):
        return {DEFAULT_LOCALE: value} if value.strip() else {}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items() if isinstance(v, str) and v.strip()}
    return {}


async def _triage(run: _Run, body: str) -> None:
    phrases = [p.phrase for p in await queries.triage_phrases(run.session, enabled_only=True)]
    found = find_urgent_phrase(body, phrases)
    if found is None:
        return
    run.outcome.urgent, run.outcome.triage_phrase = True, found
    await _set_priority(run, Priority.URGENT)
    await _add_tags(run, (URGENT_TAG,))
    run.conversation.last_activity_at = run.now  # to the top of every activity-sorted list
    stored = await queries.setting(run.session, TRIAGE_REPLY_SETTING)
    custom = _custom_texts(stored.value if stored is not None else None)
    text = await _localized(run, "triage", URGENT_TEMPLATE, custom)
    if text is None:
        # An emergency reply must go out: fall back to the built-in text.
        run.skip("triage", "reply_text", "the default emergency reply was sent")
        text = render_reply(
            DEFAULT_TRIAGE_REPLY, first_name=run.first_name, clinic_name=run.clinic_name
        )
    await _send(run, "triage", text)


async def _apply(run: _Run, source: str, actions: Actions) -> None:
    conversation = run.conversation
    if actions.team is not None:
        team = await queries.team_named(run.session, actions.team)
        if team is None:
            run.skip(source, "team", f"no team named {actions.team!r}")
        else:
            conversation.team_id = team.id
            run.teams[team.id] = team
    if actions.priority is not None:
        if conversation.priority is Priority.URGENT and actions.priority is not Priority.URGENT:
            run.skip(source, "priority", "the conversation is urgent; only staff lower that")
        else:
            await _set_priority(run, actions.priority)
    await _add_tags(run, actions.add_tags)
    if actions.assign_to is not None:
        staff = await inbox_queries.staff_by_email(run.session, actions.assign_to)
        if staff is None or not staff.active:
            run.skip(source, "assign_to", f"no active staff user {actions.assign_to}")
        else:
            run.outcome.assign_to_staff_id = staff.id
    if actions.auto_reply is not None:
        if run.answered:
            run.skip(source, "auto_reply", "the message was answered automatically already")
        elif run.outcome.urgent:
            run.skip(source, "auto_reply", "urgent message: only the emergency reply is sent")
        elif run.rule_replied:
            run.skip(source, "auto_reply", "an earlier rule already replied to this message")
        else:
            run.rule_replied = await _reply(run, source, actions.auto_reply)


async def _rules(run: _Run, facts: Facts) -> None:
    for rule in await queries.rules_in_order(run.session, enabled_only=True):
        source = f"rule:{rule.name}"
        try:
            conditions = parse_conditions(rule.conditions)
            actions = parse_actions(rule.actions)
        except RuleInvalid as exc:
            run.skip(source, "rule", f"stored rule is invalid and was skipped: {exc}")
            continue
        if conditions.business_hours is not None:
            facts = replace(facts, team_open=await _team_open(run, await _hours_team(run)))
        if not matches(conditions, facts):
            continue
        run.outcome.matched_rule_ids.append(rule.id)
        run.outcome.matched_rule_names.append(rule.name)
        await _apply(run, source, actions)
        if rule.stop_processing:
            break


async def apply_routing(
    session: AsyncSession,
    ring: KeyRing,
    *,
    patient: Patient,
    conversation: Conversation,
    message_body: str,
    channel: Channel,
    is_new_patient: bool,
    clinic_name: str,
    now: datetime,
    answered: bool = False,
    clinic: Mapping[str, Any] | None = None,
) -> RoutingOutcome:
    """Route one inbound message inside the caller's transaction (see the module docstring).

    ``conversation`` must be flushed (it needs its id); ``now`` must be timezone-aware.
    ``channel``: the one the message came on; automatic answers go there. ``answered``: the
    intake already answered it automatically (no second automatic answer).
    """
    run = _Run(
        session,
        ring,
        patient,
        conversation,
        clinic if clinic is not None else {"name": clinic_name},
        # A call, or a message on a channel the hub cannot send on (WhatsApp), is answered by
        # text to the same number: an emergency answer must not be lost for want of a sender.
        Channel.SMS if channel is Channel.VOICE or channel in RECEIVE_ONLY else channel,
        answered,
        now,
        RoutingOutcome(),
    )
    before = (conversation.priority, conversation.team_id)
    await _triage(run, message_body)
    facts = Facts(
        channel=channel.value,
        body=message_body,
        patient_tags=frozenset(await tags_of_patient_in(session, ring, patient.id)),
        patient_language=patient.language or "",
        patient_is_new=is_new_patient,
        team_open=True,
    )
    await _rules(run, facts)
    if conversation.team_id is None:
        default = await queries.default_team(session)
        if default is None:
            run.skip("default_team", "team", "no team is marked default; left unrouted")
        else:
            conversation.team_id = default.id
            run.teams[default.id] = default
    if (
        conversation.created_at == now
        and conversation.first_responded_at is None
        and conversation.priority is not Priority.URGENT
    ):
        # Opened by this message: intake set a target on the clock; now the team is known,
        # the target counts its open hours.
        conversation.first_response_due_at = await _due(run, conversation.priority)
    if not run.outcome.urgent and conversation.after_hours_replied_at is None:
        team = await _team(run, conversation.team_id) if conversation.team_id else None
        if team is not None and team.after_hours_enabled and not await _team_open(run, team):
            if run.answered or run.rule_replied:
                run.skip("after_hours", "auto_reply", "the message was answered already")
            else:
                text = await _localized(
                    run, "after_hours", AFTER_HOURS_TEMPLATE, team.after_hours_replies
                )
                if text is not None and await _send(run, "after_hours", text):
                    conversation.after_hours_replied_at = now
    run.outcome.team_id, run.outcome.priority = conversation.team_id, conversation.priority
    if (conversation.priority, conversation.team_id) != before or run.outcome.tags_added:
        # No tag names in the event: outbox rows are stored, and tags are PHI.
        payload: dict[str, Any] = {
            "conversation_id": str(conversation.id),
            "team_id": str(conversation.team_id) if conversation.team_id else None,
            "priority": conversation.priority.value,
            "tags_changed": bool(run.outcome.tags_added),
        }
        run.outcome.effect_ids.append(
            add_effect(session, "notify:conversation:updated", payload).id
        )
    await session.flush()
    return run.outcome


# Admin actions: each opens its own transaction, validates, writes, audits, and commits.


def _renumber(rules: list[RoutingRule]) -> None:
    for index, rule in enumerate(rules):
        if rule.position != index:
            rule.position = index


def _find(rules: list[RoutingRule], rule_id: uuid.UUID) -> RoutingRule:
    for rule in rules:
        if rule.id == rule_id:
            return rule
    raise NotFound(f"no routing rule with id {rule_id}")


async def do_create_rule(
    db: Database,
    actor: Actor,
    *,
    name: str,
    conditions: dict[str, Any],
    actions: dict[str, Any],
    enabled: bool = True,
    stop_processing: bool = False,
    position: int | None = None,
) -> RuleView:
    """Add a rule at ``position`` (0 = evaluated first; default: last)."""
    name = check_rule_name(name)
    parse_conditions(conditions)
    parse_actions(actions)
    rule = RoutingRule(
        name=name,
        conditions=plain_json(conditions, "conditions"),
        actions=plain_json(actions, "actions"),
        enabled=check_flag(enabled, "enabled"),
        stop_processing=check_flag(stop_processing, "stop_processing"),
    )
    async with db.transaction() as session:
        rules = list(await queries.rules_in_order(session, for_update=True))
        rules.insert(len(rules) if position is None else check_position(position, len(rules)), rule)
        _renumber(rules)
        session.add(rule)
        await session.flush()
        await record(session, actor, "routing.rule.create", "routing_rule", rule.id)
        return RuleView.of(rule)


async def do_update_rule(
    db: Database,
    actor: Actor,
    rule_id: uuid.UUID,
    *,
    name: str | None = None,
    conditions: dict[str, Any] | None = None,
    actions: dict[str, Any] | None = None,
    enabled: bool | None = None,
    stop_processing: bool | None = None,
) -> RuleView:
    """Change the given fields (None leaves a field as it is); all are validated first."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = check_rule_name(name)
    if conditions is not None:
        parse_conditions(conditions)
        changes["conditions"] = plain_json(conditions, "conditions")
    if actions is not None:
        parse_actions(actions)
        changes["actions"] = plain_json(actions, "actions")
    if enabled is not None:
        changes["enabled"] = check_flag(enabled, "enabled")
    if stop_processing is not None:
        changes["stop_processing"] = check_flag(stop_processing, "stop_processing")
    async with db.transaction() as session:
        rule = await queries.rule_for_update(session, rule_id)
        if rule is None:
            raise NotFound(f"no routing rule with id {rule_id}")
        for key, value in changes.items():
            setattr(rule, key, value)
        await session.flush()
        await record(
            session, actor, "routing.rule.update", "routing_rule", rule.id, {"fields": [*changes]}
        )
        return RuleView.of(rule)


async def do_delete_rule(db: Database, actor: Actor, rule_id: uuid.UUID) -> None:
    async with db.transaction() as session:
        rules = list(await queries.rules_in_order(session, for_update=True))
        rule = _find(rules, rule_id)
        rules.remove(rule)
        await session.delete(rule)
        _renumber(rules)
        await session.flush()
        await record(session, actor, "routing.rule.delete", "routing_rule", rule_id)


async def do_move_rule(
    db: Database, actor: Actor, rule_id: uuid.UUID, new_position: int
) -> list[RuleView]:
    """Move a rule to ``new_position`` (0 = first; past the end = last); returns all rules."""
    async with db.transaction() as session:
        rules = list(await queries.rules_in_order(session, for_update=True))
        rule = _find(rules, rule_id)
        rules.remove(rule)
        rules.insert(check_position(new_position, len(rules)), rule)
        _renumber(rules)
        await session.flush()
        detail = {"position": rule.position}
        await record(session, actor, "routing.rule.move", "routing_rule", rule_id, detail)
        return [RuleView.of(r) for r in rules]


async def do_list_rules(db: Database) -> list[RuleView]:
    """Every rule in evaluation order (configuration, not PHI: reads are not audited)."""
    async with db.reader() as session:
        return [RuleView.of(r) for r in await queries.rules_in_order(session)]


async def do_set_triage_phrases(db: Database, actor: Actor, phrases: list[str]) -> list[str]:
    """Replace the urgent phrase list; removed phrases are disabled. Returns the new list."""
    wanted = check_phrases(phrases)
    async with db.transaction() as session:
        existing = {p.phrase: p for p in await queries.triage_phrases(session)}
        for phrase, row in existing.items():
            row.enabled = phrase in wanted
        for phrase in wanted:
            if phrase not in existing:
                session.add(TriagePhrase(phrase=phrase))
        await session.flush()
        detail = {"count": len(wanted)}
        await record(
            session, actor, "routing.triage.update", "routing_triage_phrase", "all", detail
        )
    return sorted(wanted)


async def do_list_triage_phrases(db: Database) -> list[str]:
    async with db.reader() as session:
        return [p.phrase for p in await queries.triage_phrases(session, enabled_only=True)]


async def do_get_setting(db: Database, key: str) -> Any:
    """The stored value, or None when the setting was never written."""
    async with db.reader() as session:
        row = await queries.setting(session, key)
        return None if row is None else row.value


async def do_set_setting(db: Database, actor: Actor, key: str, value: Any) -> None:
    check_setting(key, value)
    async with db.transaction() as session:
        row = await queries.setting(session, key)
        if row is None:
            session.add(HubSetting(key=key, value=value))
        else:
            row.value = value
        await session.flush()
        await record(session, actor, "routing.setting.update", "hub_setting", key)
