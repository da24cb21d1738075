"""Routing of inbound messages, and the admin actions that edit rules, phrases and settings.

``apply_routing`` runs inside intake's transaction (it opens none): the routing decision, the
replies it queues and the message itself commit or roll back together, and the caller releases
``outcome.effect_ids`` after its commit. It never raises for bad configuration (an unknown team
in a rule, a broken stored template, malformed hours): a webhook must answer, so the problem is
reported in ``outcome.skipped`` and the rest of the routing goes on.

Order: urgent triage first (never waits for business hours), then the rules by position, then
the default team, then the after-hours reply (once per conversation, never on urgent messages,
which already got the emergency reply).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, record
from hub.consent import actions as consent
from hub.consent.models import Purpose
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, Priority
from hub.inbox import queries as inbox_queries
from hub.inbox.actions.delivery import queue_outbound
from hub.inbox.actions.patients import FIRST_RESPONSE_TARGETS
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, Patient, Team
from hub.outbox import add_effect
from hub.routing import queries
from hub.routing.hours import HoursInvalid, is_open
from hub.routing.models import HubSetting, RoutingRule, TriagePhrase
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
    clinic_name: str
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


def _set_priority(conversation: Conversation, priority: Priority, now: datetime) -> None:
    """Set the priority and pull the first-response deadline in; never push it out, so
    reprioritising can never hide an overdue conversation."""
    conversation.priority = priority
    due = now + FIRST_RESPONSE_TARGETS[priority]
    current = conversation.first_response_due_at
    if priority is Priority.URGENT and conversation.first_responded_at is not None:
        conversation.first_response_due_at = due  # a new emergency restarts the clock
    elif conversation.first_responded_at is None and (current is None or due < current):
        conversation.first_response_due_at = due


def _add_tags(run: _Run, tags: tuple[str, ...]) -> None:
    new = [t for t in tags if t not in run.conversation.tags]
    if new:
        run.conversation.tags = [*run.conversation.tags, *new]  # reassign: JSON is not tracked
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
    """Queue ``body`` on the conversation's channel if consent for care messages allows. A
    voicemail is answered by text, not by the hub phoning the caller back to read it out."""
    channel = run.conversation.channel
    if channel is Channel.VOICE:
        channel = Channel.SMS
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


async def _triage(run: _Run, body: str) -> None:
    phrases = [p.phrase for p in await queries.triage_phrases(run.session, enabled_only=True)]
    found = find_urgent_phrase(body, phrases)
    if found is None:
        return
    run.outcome.urgent, run.outcome.triage_phrase = True, found
    _set_priority(run.conversation, Priority.URGENT, run.now)
    _add_tags(run, (URGENT_TAG,))
    run.conversation.last_activity_at = run.now  # to the top of every activity-sorted list
    stored = await queries.setting(run.session, TRIAGE_REPLY_SETTING)
    template = stored.value if stored is not None and isinstance(stored.value, str) else ""
    try:
        text = render_reply(template, first_name=run.first_name, clinic_name=run.clinic_name)
    except ReplyNotRendered as exc:
        # An emergency reply must go out: fall back to the built-in text.
        run.skip("triage", "reply_text", f"{exc}; the default emergency reply was sent")
        text = DEFAULT_TRIAGE_REPLY
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
            _set_priority(conversation, actions.priority, run.now)
    _add_tags(run, actions.add_tags)
    if actions.assign_to is not None:
        staff = await inbox_queries.staff_by_email(run.session, actions.assign_to)
        if staff is None or not staff.active:
            run.skip(source, "assign_to", f"no active staff user {actions.assign_to}")
        else:
            run.outcome.assign_to_staff_id = staff.id
    if actions.auto_reply is not None:
        if run.outcome.urgent:
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
) -> RoutingOutcome:
    """Route one inbound message inside the caller's transaction (see the module docstring).

    ``conversation`` must be flushed (it needs its id); ``now`` must be timezone-aware.
    """
    run = _Run(session, ring, patient, conversation, clinic_name, now, RoutingOutcome())
    before = (conversation.priority, conversation.team_id, list(conversation.tags))
    await _triage(run, message_body)
    facts = Facts(
        channel=channel.value,
        body=message_body,
        patient_tags=frozenset(t.casefold() for t in patient.tags),
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
    if not run.outcome.urgent and conversation.after_hours_replied_at is None:
        team = await _team(run, conversation.team_id) if conversation.team_id else None
        if (
            team is not None
            and team.after_hours_reply
            and not await _team_open(run, team)
            and await _reply(run, "after_hours", team.after_hours_reply)
        ):
            conversation.after_hours_replied_at = now
    run.outcome.team_id, run.outcome.priority = conversation.team_id, conversation.priority
    if (conversation.priority, conversation.team_id, list(conversation.tags)) != before:
        payload: dict[str, Any] = {
            "conversation_id": str(conversation.id),
            "team_id": str(conversation.team_id) if conversation.team_id else None,
            "priority": conversation.priority.value,
            "tags": list(conversation.tags),
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
