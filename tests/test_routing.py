"""Routing: rules, urgent triage, business hours and after-hours replies, as a patient and the
staff inbox would notice them (team, priority, tags, the replies actually queued)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import Actor, AuditEvent
from hub.consent.actions import ConsentChange, revoke_channel
from hub.consent.models import ConsentSource
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, ConversationStatus, Direction, Priority
from hub.inbox import queries as inbox_queries
from hub.inbox.actions import build_patient
from hub.inbox.actions.tags import set_patient_tags_in, tags_of_conversation_in
from hub.inbox.exceptions import NotFound
from hub.inbox.models import Conversation, Patient, StaffUser, Team
from hub.inbox.schemas import NewPatient
from hub.routing import hours, rules, triage
from hub.routing.actions import (
    RoutingOutcome,
    apply_routing,
    do_create_rule,
    do_delete_rule,
    do_get_setting,
    do_list_rules,
    do_list_triage_phrases,
    do_move_rule,
    do_set_setting,
    do_set_triage_phrases,
    do_update_rule,
)
from hub.routing.models import RoutingRule
from hub.routing.rules import Facts, RuleInvalid

ADMIN = Actor.system("routing-test-admin")
CLINIC = "Sample Family Clinic"
NY = "America/New_York"
WEEKDAYS_9_TO_5 = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
EVERY_DAY_9_TO_5 = {d: [["09:00", "17:00"]] for d in hours.DAYS}
WED_NOON_NY = datetime(2026, 11, 18, 17, 0, tzinfo=UTC)  # Wednesday 12:00 in New York (EST)
WED_NIGHT_NY = datetime(2026, 11, 19, 3, 0, tzinfo=UTC)  # Wednesday 22:00 in New York


# --- helpers -------------------------------------------------------------------------------


async def make_team(session: AsyncSession, label: str, **fields: Any) -> Team:
    team = Team(name=f"{label} {uuid.uuid4().hex[:6]}", **fields)
    session.add(team)
    await session.flush()
    return team


async def without_default_teams(session: AsyncSession) -> None:
    """Other tests may have committed a default team; this test's transaction ignores them."""
    await session.execute(update(Team).values(is_default=False))


async def make_patient(session: AsyncSession, ring: KeyRing, **fields: Any) -> Patient:
    fields.setdefault("name", "Ana Sample")
    fields.setdefault("phone", f"+1555010{uuid.uuid4().int % 10000:04d}")
    patient = build_patient(ring, NewPatient(**fields), "US")
    session.add(patient)
    await session.flush()
    await set_patient_tags_in(session, ring, patient.id, fields.get("tags", ()))
    return patient


async def make_conversation(
    session: AsyncSession, patient: Patient, *, at: datetime = WED_NOON_NY, **fields: Any
) -> Conversation:
    """A conversation as intake opens it for a first message at ``at``."""
    fields.setdefault("channel", Channel.SMS)
    conversation = Conversation(
        patient_id=patient.id,
        channel_address="+15550100000",
        status=ConversationStatus.OPEN,
        priority=Priority.NORMAL,
        created_at=at,
        last_activity_at=at,
        first_response_due_at=at + timedelta(hours=4),
        **fields,
    )
    session.add(conversation)
    await session.flush()
    return conversation


async def route(
    session: AsyncSession,
    ring: KeyRing,
    patient: Patient,
    conversation: Conversation,
    body: str,
    *,
    now: datetime = WED_NOON_NY,
    is_new: bool = False,
) -> RoutingOutcome:
    return await apply_routing(
        session,
        ring,
        patient=patient,
        conversation=conversation,
        message_body=body,
        channel=conversation.channel,
        is_new_patient=is_new,
        clinic_name=CLINIC,
        now=now,
    )


async def replies_of(session: AsyncSession, ring: KeyRing, conversation: Conversation) -> list[str]:
    """The texts queued to the patient, as they will receive them."""
    return [
        m.unseal(ring, "body") or ""
        for m in await inbox_queries.messages_of(session, conversation.id)
        if m.direction is Direction.OUTBOUND
    ]


def facts(**overrides: Any) -> Facts:
    base: dict[str, Any] = {
        "channel": "sms",
        "body": "Can I get a refill of my metformin?",
        "patient_tags": frozenset({"diabetes"}),
        "patient_language": "es-MX",
        "patient_is_new": False,
        "team_open": True,
    }
    return Facts(**{**base, **overrides})


# --- business hours ------------------------------------------------------------------------


def test_the_same_instant_is_open_in_new_york_and_closed_in_tokyo() -> None:
    assert hours.is_open(WEEKDAYS_9_TO_5, [], NY, WED_NOON_NY)
    assert not hours.is_open(WEEKDAYS_9_TO_5, [], "Asia/Tokyo", WED_NOON_NY)  # 02:00 Thursday
    assert not hours.is_open(WEEKDAYS_9_TO_5, [], NY, WED_NIGHT_NY)
    assert hours.is_open(WEEKDAYS_9_TO_5, [], NY, datetime(2026, 11, 18, 14, 0, tzinfo=UTC))
    assert not hours.is_open(WEEKDAYS_9_TO_5, [], NY, datetime(2026, 11, 18, 22, 0, tzinfo=UTC))


def test_hours_follow_the_wall_clock_on_dst_change_days() -> None:
    # 2026-03-08: New York moves from UTC-5 to UTC-4 at 02:00. A fixed offset would get both
    # of these wrong by an hour.
    assert hours.is_open(EVERY_DAY_9_TO_5, [], NY, datetime(2026, 3, 8, 13, 30, tzinfo=UTC))
    assert not hours.is_open(EVERY_DAY_9_TO_5, [], NY, datetime(2026, 3, 8, 21, 30, tzinfo=UTC))
    assert not hours.is_open(EVERY_DAY_9_TO_5, [], NY, datetime(2026, 3, 7, 13, 30, tzinfo=UTC))
    # 2026-11-01: 01:30 happens twice; both are inside 01:00-02:00.
    night = {"sun": [["01:00", "02:00"]]}
    assert hours.is_open(night, [], NY, datetime(2026, 11, 1, 5, 30, tzinfo=UTC))
    assert hours.is_open(night, [], NY, datetime(2026, 11, 1, 6, 30, tzinfo=UTC))


def test_holidays_close_the_whole_local_day_even_for_an_always_open_team() -> None:
    holiday = ["2026-11-18"]
    assert not hours.is_open(WEEKDAYS_9_TO_5, holiday, NY, WED_NOON_NY)
    assert hours.is_open({}, [], NY, WED_NIGHT_NY)
    assert not hours.is_open({}, holiday, NY, WED_NIGHT_NY)  # still the 18th in New York
    assert hours.is_open({}, holiday, "Asia/Tokyo", WED_NIGHT_NY)  # already the 19th there


def test_an_overnight_shift_is_two_intervals_and_24_00_ends_a_day() -> None:
    overnight = {"wed": [["22:00", "24:00"]], "thu": [["00:00", "06:00"]]}
    assert hours.is_open(overnight, [], NY, WED_NIGHT_NY)
    assert hours.is_open(overnight, [], NY, datetime(2026, 11, 19, 10, 0, tzinfo=UTC))
    assert not hours.is_open(overnight, [], NY, datetime(2026, 11, 19, 12, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("hours_json", "message"),
    [
        ({"mon": [["18:00", "09:00"]]}, "business_hours.mon[0]: start 18:00 is not before end"),
        ({"monday": [["09:00", "17:00"]]}, "business_hours.monday: unknown day"),
        ({"tue": [["9am", "17:00"]]}, "business_hours.tue[0]: expected a time like"),
        ({"fri": [["24:00", "24:00"]]}, "24:00 may only end a day"),
    ],
)
def test_malformed_hours_name_the_field(hours_json: dict[str, Any], message: str) -> None:
    with pytest.raises(hours.HoursInvalid, match=message.replace("[", r"\[").replace("]", r"\]")):
        hours.is_open(hours_json, [], NY, WED_NOON_NY)


def test_unknown_time_zone_and_naive_datetimes_are_refused() -> None:
    with pytest.raises(hours.HoursInvalid, match="time_zone: unknown time zone 'Mars/Base'"):
        hours.is_open({}, [], "Mars/Base", WED_NOON_NY)
    with pytest.raises(ValueError, match="naive"):
        hours.is_open({}, [], NY, datetime(2026, 11, 18, 12, 0))


def test_next_open_skips_the_weekend_and_holidays() -> None:
    friday_evening = datetime(2026, 11, 20, 23, 0, tzinfo=UTC)  # 18:00 Friday in New York
    monday_nine = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
    assert hours.next_open(WEEKDAYS_9_TO_5, [], NY, friday_evening) == monday_nine
    assert hours.next_open(WEEKDAYS_9_TO_5, ["2026-11-23"], NY, friday_evening) == (
        monday_nine + timedelta(days=1)
    )
    assert hours.next_open(WEEKDAYS_9_TO_5, [], NY, WED_NOON_NY) == WED_NOON_NY
    assert hours.next_open({"mon": []}, [], NY, WED_NOON_NY) is None


def test_next_open_inside_a_spring_forward_gap_is_the_end_of_the_gap() -> None:
    early = {"sun": [["02:30", "05:00"]]}  # 02:30 does not exist on 2026-03-08 in New York
    opens = hours.next_open(early, [], NY, datetime(2026, 3, 8, 5, 0, tzinfo=UTC))
    assert opens == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    assert hours.is_open(early, [], NY, opens)
    assert not hours.is_open(early, [], NY, opens - timedelta(minutes=1))


# --- triage phrases ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "I have chest pain",
        "CHEST  PAIN since this morning",
        "i can\u2019t breathe",
        "cant breathe!!",
        "my dad had a stroke",
        "Took an overdose.",
        "chest-pain",
    ],
)
def test_emergency_phrases_are_found(body: str) -> None:
    assert triage.find_urgent_phrase(body, triage.DEFAULT_TRIAGE_PHRASES) is not None


@pytest.mark.parametrize(
    "body",
    [
        "painting my chest of drawers this weekend",
        "two strokes of luck today",
        "I'm breathing fine now, thanks",
        "Can I reschedule my appointment?",
    ],
)
def test_ordinary_messages_are_not_urgent(body: str) -> None:
    assert triage.find_urgent_phrase(body, triage.DEFAULT_TRIAGE_PHRASES) is None


def test_an_empty_phrase_list_falls_back_to_the_defaults() -> None:
    assert triage.find_urgent_phrase("chest pain", []) == "chest pain"


# --- rule validation and conditions (pure) --------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "actions", "message"),
    [
        (
            {"body_regex": "bil)l"},
            {},
            "conditions.body_regex: unbalanced parenthesis at position 3",
        ),
        ({"body_regex": "(a+)+b"}, {}, "conditions.body_regex: this pattern could take too long"),
        ({"body_regex": "x" * 201}, {}, "conditions.body_regex: at most 200 characters"),
        ({"chanel": ["sms"]}, {}, "conditions.chanel: unknown key"),
        ({"channel": ["sms", "fax"]}, {}, "conditions.channel[1]: unknown channel 'fax'"),
        ({"business_hours": "sometimes"}, {}, 'conditions.business_hours: expected "open"'),
        ({"patient_is_new": "yes"}, {}, "conditions.patient_is_new: expected true or false"),
        ({"body_keywords": []}, {}, "conditions.body_keywords: expected a non-empty list"),
        ([], {}, "conditions: expected an object"),
        ({}, {"priority": "asap"}, "actions.priority: unknown priority 'asap'"),
        ({}, {"colour": "red"}, "actions.colour: unknown key"),
        ({}, {"assign_to": "nurse"}, "actions.assign_to: expected a staff email"),
        ({}, {"auto_reply": "Hi {{ name }}"}, "actions.auto_reply: unknown placeholder"),
        ({}, {"auto_reply": "Hi {{ first_name "}, "actions.auto_reply: template error"),
    ],
)
def test_invalid_rules_say_which_field_is_wrong(
    conditions: Any, actions: Any, message: str
) -> None:
    with pytest.raises(RuleInvalid) as caught:
        rules.parse_conditions(conditions)
        rules.parse_actions(actions)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("conditions", "holds", "fails"),
    [
        ({"channel": ["sms", "email"]}, {}, {"channel": "voice"}),
        ({"body_keywords": ["refill"]}, {}, {"body": "refills are great"}),
        ({"body_regex": "(?i)METFORMIN"}, {}, {"body": "insulin please"}),
        ({"patient_tags_any": ["Diabetes", "asthma"]}, {}, {"patient_tags": frozenset()}),
        ({"patient_language": ["es"]}, {}, {"patient_language": "en"}),
        ({"business_hours": "open"}, {}, {"team_open": False}),
        ({"business_hours": "closed"}, {"team_open": False}, {"team_open": True}),
        ({"patient_is_new": True}, {"patient_is_new": True}, {"patient_is_new": False}),
        ({"patient_is_new": False}, {}, {"patient_is_new": True}),
    ],
)
def test_each_condition_holds_or_fails(
    conditions: dict[str, Any], holds: dict[str, Any], fails: dict[str, Any]
) -> None:
    parsed = rules.parse_conditions(conditions)
    assert rules.matches(parsed, facts(**holds))
    assert not rules.matches(parsed, facts(**{**holds, **fails}))


def test_regexes_only_see_the_start_of_a_long_body() -> None:
    parsed = rules.parse_conditions({"body_regex": "needle"})
    assert rules.matches(parsed, facts(body="needle " + "x" * 5000))
    assert not rules.matches(parsed, facts(body="x" * 5000 + " needle"))


# --- urgent triage through apply_routing ----------------------------------------------------


@pytest.mark.parametrize("body", ["I have chest pain", "CHEST  PAIN", "I can\u2019t breathe"])
async def test_triage_makes_the_conversation_urgent_and_replies_at_once_even_after_hours(
    db: Database, ring: KeyRing, body: str
) -> None:
    async with db.transaction() as session:
        closed = await make_team(
            session,
            "Front desk",
            time_zone=NY,
            business_hours=WEEKDAYS_9_TO_5,
            after_hours_enabled=True,
            after_hours_replies={"en": "We are closed and will answer tomorrow."},
        )
        patient = await make_patient(session, ring)
        conversation = await make_conversation(session, patient, at=WED_NIGHT_NY, team_id=closed.id)
        outcome = await route(session, ring, patient, conversation, body, now=WED_NIGHT_NY)

        assert outcome.urgent and outcome.priority is Priority.URGENT
        assert conversation.priority is Priority.URGENT
        assert conversation.first_response_due_at == WED_NIGHT_NY + timedelta(minutes=15)
        tags = await tags_of_conversation_in(session, ring, conversation.id)
        assert "urgent" in tags and outcome.tags_added == ["urgent"]
        assert conversation.last_activity_at >= WED_NIGHT_NY  # to the top of the inbox
        # The emergency reply is queued in this transaction; no after-hours reply on top.
        assert await replies_of(session, ring, conversation) == [triage.DEFAULT_TRIAGE_REPLY]
        assert outcome.replies == ["triage"] and conversation.after_hours_replied_at is None
        assert len(outcome.effect_ids) >= 2  # the send job and the broadcasts
        assert "chest" not in repr(outcome).lower() and "breath" not in repr(outcome).lower()


async def test_ordinary_message_stays_normal_and_gets_no_reply(db: Database, ring: KeyRing) -> None:
    async with db.transaction() as session:
        await without_default_teams(session)
        patient = await make_patient(session, ring)
        conversation = await make_conversation(session, patient)
        outcome = await route(session, ring, patient, conversation, "painting my chest of drawers")
        assert not outcome.urgent and conversation.priority is Priority.NORMAL
        assert await replies_of(session, ring, conversation) == []


async def test_triage_respects_an_sms_opt_out_and_says_so(db: Database, ring: KeyRing) -> None:
    async with db.transaction() as session:
        patient = await make_patient(session, ring)
        conversation = await make_conversation(session, patient)
        await revoke_channel(
            session, patient.id, Channel.SMS, ConsentChange(ConsentSource.KEYWORD, "t", "STOP")
        )
        outcome = await route(session, ring, patient, conversation, "I think I overdosed")
        assert outcome.urgent and conversation.priority is Priority.URGENT
        assert await replies_of(session, ring, conversation) == []
        refused = [s for s in outcome.skipped if s.source == "triage"]
        assert refused and "opted_out" in refused[0].reason


async def test_admins_edit_the_phrase_list_and_the_emergency_reply(
    db: Database, ring: KeyRing
) -> None:
    assert await do_list_triage_phrases(db) == sorted(triage.DEFAULT_TRIAGE_PHRASES)
    assert await do_get_setting(db, "triage.reply") == triage.DEFAULT_TRIAGE_REPLY
    assert await do_set_triage_phrases(db, ADMIN, ["  Bee  STING ", "chest pain"]) == [
        "bee sting",
        "chest pain",
    ]
    await do_set_setting(db, ADMIN, "triage.reply", "{{ clinic_name }}: call 911 now.")
    with pytest.raises(RuleInvalid, match=r"phrases: keep at least one phrase"):
        await do_set_triage_phrases(db, ADMIN, [])
    with pytest.raises(RuleInvalid, match=r"phrases\[0\]: a phrase needs at least one letter"):
        await do_set_triage_phrases(db, ADMIN, ["!!"])
    with pytest.raises(RuleInvalid, match=r"triage.reply: unknown placeholder \{\{ phone \}\}"):
        await do_set_setting(db, ADMIN, "triage.reply", "Call {{ phone }}")
    async with db.transaction() as session:
        patient = await make_patient(session, ring)
        conversation = await make_conversation(session, patient)
        stroke = await route(session, ring, patient, conversation, "I had a stroke")
        sting = await route(session, ring, patient, conversation, "Bee sting, face swelling")
        assert not stroke.urgent and sting.urgent
        assert await replies_of(session, ring, conversation) == [f"{CLINIC}: call 911 now."]
    async with db.reader() as session:
        actions = set(
            await session.scalars(select(AuditEvent.action).where(AuditEvent.actor == str(ADMIN)))
        )
    assert {"routing.triage.update", "routing.setting.update"} <= actions


# --- rules through apply_routing ------------------------------------------------------------


async def test_rules_run_in_order_and_stop_processing_stops(db: Database, ring: KeyRing) -> None:
    async with db.transaction() as session:
        pharmacy = await make_team(session, "Pharmacy")
        desk = await make_team(session, "Front desk")
    refill = await do_create_rule(
        db,
        ADMIN,
        name="Refills to pharmacy",
        conditions={"body_keywords": ["refill"]},
        actions={"team": pharmacy.name, "add_tags": ["refill"]},
        stop_processing=True,
    )
    catch_all = await do_create_rule(
        db, ADMIN, name="Everything else", conditions={}, actions={"team": desk.name}
    )
    assert [r.id for r in await do_list_rules(db)] == [refill.id, catch_all.id]
    async with db.transaction() as session:
        patient = await make_patient(session, ring)
        first = await make_conversation(session, patient)
        outcome = await route(session, ring, patient, first, "Refill please")
        assert outcome.matched_rule_names == ["Refills to pharmacy"]
        assert first.team_id == pharmacy.id
        assert await tags_of_conversation_in(session, ring, first.id) == ["refill"]
        second = await make_conversation(session, patient)
        outcome = await route(session, ring, patient, second, "hello")
        assert outcome.matched_rule_ids == [catch_all.id] and second.team_id == desk.id

    moved = await do_move_rule(db, ADMIN, catch_all.id, 0)
    assert [(r.name, r.position) for r in moved] == [
        ("Everything else", 0),
        ("Refills to pharmacy", 1),
    ]
    async with db.transaction() as session:
        third = await make_conversation(session, patient)
        outcome = await route(session, ring, patient, third, "refill please")
        assert outcome.matched_rule_names == ["Everything else", "Refills to pharmacy"]
        assert third.team_id == pharmacy.id  # the later rule's team wins

    await do_update_rule(db, ADMIN, refill.id, enabled=False)
    await do_delete_rule(db, ADMIN, catch_all.id)
    assert [(r.name, r.position, r.enabled) for r in await do_list_rules(db)] == [
        ("Refills to pharmacy", 0, False)
    ]
    with pytest.raises(NotFound):
        await do_delete_rule(db, ADMIN, catch_all.id)
    async with db.reader() as session:
        logged = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action.like("routing.rule.%"), AuditEvent.actor == str(ADMIN))
        )
    assert logged == 5


async def test_actions_set_priority_tags_assignee_and_auto_reply(
    db: Database, ring: KeyRing
) -> None:
    async with db.transaction() as session:
        billing = await make_team(session, "Billing")
        staff = StaffUser(
            email=f"{uuid.uuid4().hex[:8]}@staff.clinic.example.org",
            display_name="Bea",
            password_hash="not-a-real-hash",
        )
        session.add(staff)
        await session.flush()
    await do_create_rule(
        db,
        ADMIN,
        name="Spanish billing",
        conditions={
            "body_regex": "(?i)bill(ing)?",
            "patient_language": ["es"],
            "patient_tags_any": ["vip"],
            "channel": ["sms"],
            "patient_is_new": False,
        },
        actions={
            "team": billing.name,
            "priority": "high",
            "add_tags": ["billing", "spanish"],
            "assign_to": staff.email.upper(),
            "auto_reply": "Hola {{ first_name }}, {{ clinic_name }} answers bills in 2 days.",
        },
    )
    async with db.transaction() as session:
        patient = await make_patient(session, ring, language="es-MX", tags=["VIP"])
        conversation = await make_conversation(session, patient)
        outcome = await route(session, ring, patient, conversation, "Question about my BILL")
        assert conversation.team_id == billing.id == outcome.team_id
        assert conversation.priority is Priority.HIGH
        assert conversation.first_response_due_at == WED_NOON_NY + timedelta(hours=1)
        assert await tags_of_conversation_in(session, ring, conversation.id) == [
            "billing",
            "spanish",
        ]
        assert outcome.assign_to_staff_id == staff.id and conversation.assignee_id is None
        assert await replies_of(session, ring, conversation) == [
            f"Hola Ana, {CLINIC} answers bills in 2 days."
        ]
        # The same message from a new patient, or in English, matches nothing.
        newcomer = await make_conversation(session, patient)
        outcome = await route(session, ring, patient, newcomer, "bill", is_new=True)
        assert outcome.matched_rule_ids == [] and newcomer.team_id != billing.id


async def test_a_voicemail_is_answered_by_text_never_by_a_call_back(
    db: Database, ring: KeyRing
) -> None:
    """An auto-reply rule or the emergency reply matching a voicemail goes by SMS: the hub
    phoning a caller back to read a canned text out would be worse than no answer."""
    await do_create_rule(
        db,
        ADMIN,
        name="Acknowledge everything",
        conditions={},
        actions={"auto_reply": "Thanks {{ first_name }}, we got your message."},
    )
    async with db.transaction() as session:
        patient = await make_patient(session, ring)
        conversation = await make_conversation(session, patient, channel=Channel.VOICE)
        await route(session, ring, patient, conversation, "")
        [reply] = [
            m
            for m in await inbox_queries.messages_of(session, conversation.id)
            if m.direction is Direction.OUTBOUND
        ]
        assert reply.channel is Channel.SMS
        assert reply.unseal(ring, "body") == "Thanks Ana, we got your message."


async def test_unknown_team_or_staff_is_reported_and_routing_goes_on(
    db: Database, ring: KeyRing
) -> None:
    async with db.transaction() as session:
        await without_default_teams(session)
        fallback = await make_team(session, "Default", is_default=True)
    await do_create_rule(
        db,
        ADMIN,
        name="Ghost team",
        conditions={},
        actions={"team": "Nobody's team", "assign_to": "ghost@clinic.example.org"},
    )
    await do_create_rule(db, ADMIN, name="Tagger", conditions={}, actions={"add_tags": ["seen"]})
    async with db.transaction() as session:
        patient = await make_patient(session, ring)
        conversation = await make_conversation(session, patient)
        outcome = await route(session, ring, patient, conversation, "hello")
        reasons = {(s.source, s.action): s.reason for s in outcome.skipped}
        assert reasons[("rule:Ghost team", "team")] == 'no team named "Nobody\'s team"'
        assert "ghost@clinic.example.org" in reasons[("rule:Ghost team", "assign_to")]
        assert await tags_of_conversation_in(session, ring, conversation.id) == ["seen"]
        assert conversation.team_id == fallback.id  # the default team, since no rule placed it


async def test_a_broken_stored_rule_is_skipped_not_fatal(db: Database, ring: KeyRing) -> None:
    async with db.transaction() as session:
        session.add(RoutingRule(name="Hand-edited", position=0, conditions={"body_regex": "("}))
        await without_default_teams(session)
        patient = await make_patient(session, ring)
        conversation = await make_conversation(session, patient)
        outcome = await route(session, ring, patient, conversation, "hello")
        skipped = {(s.source, s.action) for s in outcome.skipped}
        assert ("rule:Hand-edited", "rule") in skipped
        assert ("default_team", "team") in skipped  # and nothing to fall back to: reported


async def test_business_hours_condition_uses_the_default_team(db: Database, ring: KeyRing) -> None:
    async with db.transaction() as session:
        await without_default_teams(session)
        await make_team(
            session, "Default", is_default=True, time_zone=NY, business_hours=WEEKDAYS_9_TO_5
        )
        nurse_line = await make_team(session, "Nurse line")
    await do_create_rule(
        db,
        ADMIN,
        name="After hours to the nurse line",
        conditions={"business_hours": "closed"},
        actions={"team": nurse_line.name},
    )
    async with db.transaction() as session:
        patient = await make_patient(session, ring)
        day = await make_conversation(session, patient)
        night = await make_conversation(session, patient)
        await route(session, ring, patient, day, "hello", now=WED_NOON_NY)
        await route(session, ring, patient, night, "hello", now=WED_NIGHT_NY)
        assert day.team_id != nurse_line.id and night.team_id == nurse_line.id


async def test_invalid_rules_are_refused_by_the_admin_actions(db: Database) -> None:
    with pytest.raises(RuleInvalid, match=r"^conditions.body_regex: missing \), unterminated"):
        await do_create_rule(db, ADMIN, name="Bad", conditions={"body_regex": "(bill"}, actions={})
    rule = await do_create_rule(db, ADMIN, name="Good", conditions={}, actions={})
    with pytest.raises(RuleInvalid, match=r"^actions.team: expected non-empty text"):
        await do_update_rule(db, ADMIN, rule.id, actions={"team": ""})
    with pytest.raises(RuleInvalid, match=r"^position: expected a whole number"):
        await do_move_rule(db, ADMIN, rule.id, -1)
    with pytest.raises(RuleInvalid, match=r"^name: expected non-empty text"):
        await do_update_rule(db, ADMIN, rule.id, name="  ")
    assert [r.name for r in await do_list_rules(db)] == ["Good"]


# --- after-hours replies and the default team -----------------------------------------------


async def test_after_hours_reply_goes_once_per_conversation(db: Database, ring: KeyRing) -> None:
    async with db.transaction() as session:
        await without_default_teams(session)
        await make_team(
            session,
            "Front desk",
            is_default=True,
            time_zone=NY,
            business_hours=WEEKDAYS_9_TO_5,
            after_hours_enabled=True,
            after_hours_replies={"en": "Hi {{ first_name }}, {{ clinic_name }} opens at 9."},
        )
        patient = await make_patient(session, ring, name=None)
        conversation = await make_conversation(session, patient)
        first = await route(session, ring, patient, conversation, "hello?", now=WED_NIGHT_NY)
        later = WED_NIGHT_NY + timedelta(minutes=5)
        second = await route(session, ring, patient, conversation, "anyone?", now=later)
        assert first.replies == ["after_hours"] and second.replies == []
        assert conversation.after_hours_replied_at == WED_NIGHT_NY
        assert await replies_of(session, ring, conversation) == [f"Hi there, {CLINIC} opens at 9."]

        daytime = await make_conversation(session, patient)
        outcome = await route(session, ring, patient, daytime, "hello", now=WED_NOON_NY)
        assert outcome.replies == [] and daytime.after_hours_replied_at is None
