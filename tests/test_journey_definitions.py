"""Journey definitions: the shipped examples parse; errors name the file, line and field a
coordinator must fix; due times keep the local wall time across DST; late steps are skipped
rather than sent late; and a patient's reply is read the way the reminder asked for it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from zoneinfo import ZoneInfo

import pytest

from hub.consent.models import Purpose
from hub.enums import Channel
from hub.journeys import (
    ChannelPolicy,
    JourneyInvalid,
    PlannedStep,
    Reply,
    classify_reply,
    load_examples,
    parse_journey,
    plan,
)
from hub.journeys.definitions import parse_offset, shift

NEW_YORK = ZoneInfo("America/New_York")

MISSING_TEMPLATES: set[str] = set()
"""Keys the examples use that hub/templates/seed does not ship (none: every example runs)."""


def seeded_template_keys() -> set[str]:
    seed = resources.files("hub.templates").joinpath("seed")
    return {
        json.loads(entry.read_text(encoding="utf-8"))["key"]
        for entry in seed.iterdir()
        if entry.name.endswith(".json")
    }


def local(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


# -- the shipped examples -------------------------------------------------------------------


def test_the_three_examples_parse_with_their_key_fields() -> None:
    examples = load_examples()
    assert set(examples) == {"appointment_reminders", "post_visit_follow_up", "screening_recall"}

    reminders = examples["appointment_reminders"]
    assert (reminders.purpose, reminders.anchor) == (Purpose.REMINDERS, "appointment_start")
    assert [(s.id, s.offset) for s in reminders.steps] == [
        ("email_72h", timedelta(hours=-72)),
        ("sms_24h", timedelta(hours=-24)),
        ("sms_2h", timedelta(hours=-2)),
    ]
    assert [s.channels for s in reminders.steps] == [
        ChannelPolicy("fixed", (Channel.EMAIL,)),
        ChannelPolicy("fixed", (Channel.SMS,)),
        ChannelPolicy("fixed", (Channel.SMS,)),
    ]
    sms_24h = reminders.step("sms_24h")
    assert sms_24h.expecting == "confirmation"
    assert sms_24h.conditions == {"skip_if_confirmed"}
    confirm, cancel = sms_24h.handler("confirm"), sms_24h.handler("cancel")
    assert confirm is not None and cancel is not None
    assert confirm.actions == ("confirm_appointment", "cancel_remaining_asks")
    assert confirm.reply_template == "appointment_confirmed"
    assert "notify_staff" in cancel.actions and "offer_reschedule" in cancel.actions
    # The day-of text says "Can't make it? Reply 2": it takes a cancel without asking again.
    day_of = reminders.step("sms_2h")
    assert (day_of.asks, day_of.conditions) == ("cancellation", frozenset())
    assert day_of.handled("2", Channel.SMS) == "cancel"

    survey = examples["post_visit_follow_up"]
    assert (survey.purpose, survey.anchor) == (Purpose.SURVEYS, "discharge")
    nps, better = survey.steps
    assert (nps.offset, nps.expecting) == (timedelta(days=1), "survey:0-10")
    assert better.relative_to == "previous" and better.score_below == 7
    assert better.survey is not None and better.survey.scale == "free_text"
    assert better.expecting is None  # a free-text answer is read as text

    recall = examples["screening_recall"]
    assert (recall.purpose, recall.anchor) == (Purpose.CARE, "enrollment")
    assert recall.steps[0].channels.order([Channel.CHAT, Channel.SMS]) == (
        Channel.CHAT,
        Channel.SMS,
    )  # no list: the patient's own order
    assert all("only_if_no_reply" in s.conditions for s in recall.steps[1:])


def test_examples_are_named_after_their_key_and_use_known_or_listed_templates() -> None:
    folder = resources.files("hub.journeys").joinpath("examples")
    stems = {e.name.removesuffix(".yaml") for e in folder.iterdir() if e.name.endswith(".yaml")}
    examples = load_examples()
    assert stems == set(examples)
    used = set().union(*(d.template_keys() for d in examples.values()))
    assert used - seeded_template_keys() == MISSING_TEMPLATES


def test_a_known_templates_list_rejects_a_step_naming_another() -> None:
    text = JOURNEY.format(purpose="reminders", anchor="appointment_start") + STEP
    parse_journey(text, "ok.yaml", templates={"appointment_reminder"})
    with pytest.raises(JourneyInvalid) as caught:
        parse_journey(text, "x.yaml", templates={"appointment_reminders", "nps_survey"})
    assert str(caught.value) == (
        'x.yaml line 7: steps[0].template: no template "appointment_reminder" '
        '(did you mean "appointment_reminders"?)'
    )


# -- validation errors: file, line, field -----------------------------------------------------

JOURNEY = "key: demo\npurpose: {purpose}\nanchor: {anchor}\nsteps:\n"
"""Lines 1-4; the first step starts on line 5."""
STEP = "  - id: first\n    offset: -24h\n    template: appointment_reminder\n"
"""Lines 5-7 when first."""


def steps(body: str, purpose: str = "reminders", anchor: str = "appointment_start") -> str:
    return JOURNEY.format(purpose=purpose, anchor=anchor) + body


INVALID = [
    (
        "offset in words",
        steps(STEP + "  - id: second\n    offset: 24 hours\n    template: x\n"),
        9,
        "steps[1].offset",
        '"24 hours" is not an offset like -24h, +1d, -90m',
    ),
    (
        "misspelled top field",
        "key: demo\npurpsoe: reminders\nanchor: enrollment\nsteps: []\n",
        2,
        "purpsoe",
        'unknown field (did you mean "purpose"?)',
    ),
    (
        "misspelled step field",
        steps("  - id: first\n    offset: -24h\n    tempalte: x\n"),
        7,
        "steps[0].tempalte",
        'did you mean "template"?',
    ),
    (
        "missing template",
        steps("  - id: first\n    offset: -24h\n"),
        5,
        "steps[0].template",
        "missing",
    ),
    (
        "duplicate step id",
        steps(STEP + "  - id: first\n    offset: -2h\n    template: x\n"),
        8,
        "steps[1].id",
        '"first" is already the id of an earlier step',
    ),
    (
        "unknown channel",
        steps(STEP + "    channel: emial\n"),
        8,
        "steps[0].channel",
        '"emial" is not a channel (did you mean "email"?); expected sms, email, voice, chat',
    ),
    (
        "unknown channel in a preference list",
        steps(STEP + "    channels: [sms, fax]\n"),
        8,
        "steps[0].channels[1]",
        '"fax" is not a channel',
    ),
    (
        "channel and channels",
        steps(STEP + "    channel: sms\n    channels: [email]\n"),
        9,
        "steps[0].channels",
        "not both",
    ),
    (
        "unknown purpose",
        steps(STEP, purpose="billing"),
        2,
        "purpose",
        '"billing" is not a journey purpose; expected care, reminders, surveys, marketing',
    ),
    (
        "service is not a journey purpose",
        steps(STEP, purpose="service"),
        2,
        "purpose",
        "is not a journey purpose",
    ),
    (
        "unknown anchor",
        steps(STEP, anchor="appointment"),
        3,
        "anchor",
        'did you mean "appointment_start"?',
    ),
    (
        "offset beyond a year",
        steps("  - id: first\n    offset: -400d\n    template: x\n"),
        6,
        "steps[0].offset",
        '"-400d" is more than 365 days',
    ),
    (
        "offset without a sign",
        steps("  - id: first\n    offset: 72h\n    template: x\n"),
        6,
        "steps[0].offset",
        '"72h" needs a sign: -72h for before the appointment, +72h for after',
    ),
    (
        "offset as a bare number",
        steps("  - id: first\n    offset: -24\n    template: x\n"),
        6,
        "steps[0].offset",
        '"-24" is not an offset',
    ),
    (
        "first step relative to previous",
        steps(STEP + "    relative_to: previous\n"),
        8,
        "steps[0].relative_to",
        "the first step has no previous step",
    ),
    (
        "negative offset from the previous step",
        steps(STEP + "  - id: b\n    relative_to: previous\n    offset: -1h\n    template: x\n"),
        10,
        "steps[1].offset",
        "write +1h",
    ),
    (
        "steps out of order",
        steps(STEP + "  - id: b\n    offset: -72h\n    template: x\n"),
        9,
        "steps[1].offset",
        "would go out before steps[0]",
    ),
    (
        "survey scale 1-10",
        steps(
            "  - id: q\n    offset: +1d\n    template: nps_survey\n    asks: survey\n"
            "    survey:\n      question: nps\n      scale: 1-10\n",
            purpose="surveys",
            anchor="discharge",
        ),
        11,
        "steps[0].survey.scale",
        '"1-10" is not a survey scale (did you mean "0-10"?); expected 0-10, 1-5, free_text',
    ),
    (
        "survey without the surveys purpose",
        steps(
            "  - id: q\n    offset: +1d\n    template: t\n    asks: survey\n"
            "    survey: {question: nps, scale: 0-10}\n",
            purpose="care",
        ),
        8,
        "steps[0].purpose",
        "a survey question needs purpose surveys",
    ),
    (
        "survey over voice",
        steps(
            "  - id: q\n    offset: +1d\n    template: t\n    channel: voice\n    asks: survey\n"
            "    survey: {question: nps, scale: 0-10}\n",
            purpose="surveys",
        ),
        8,
        "steps[0].channel",
        "voice cannot take a survey answer",
    ),
    (
        "confirmation outside appointments",
        steps(
            "  - id: a\n    offset: +1h\n    template: t\n    asks: confirmation\n",
            anchor="enrollment",
        ),
        8,
        "steps[0].asks",
        "anchor: appointment_start",
    ),
    (
        "skip_if_confirmed outside appointments",
        steps(
            "  - id: a\n    offset: +1h\n    template: t\n    conditions: [skip_if_confirmed]\n",
            anchor="discharge",
        ),
        8,
        "steps[0].conditions[0]",
        "skip_if_confirmed needs anchor: appointment_start",
    ),
    (
        "misspelled condition",
        steps(STEP + "    conditions: [skip_if_confirm]\n"),
        8,
        "steps[0].conditions[0]",
        'did you mean "skip_if_confirmed"?',
    ),
    (
        "score condition without an earlier survey",
        steps(STEP + "    conditions:\n      - only_if_score_below: 7\n"),
        9,
        "steps[0].conditions[0]",
        "needs an earlier step asking a 0-10 or 1-5 survey question",
    ),
    (
        "score threshold off the scale",
        steps(
            "  - id: q\n    offset: +1d\n    template: t\n    asks: survey\n"
            "    survey: {question: csat, scale: 1-5}\n"
            "  - id: r\n    offset: +2d\n    template: t\n"
            "    conditions: [only_if_score_below: 9]\n",
            purpose="surveys",
        ),
        13,
        "steps[1].conditions[0]",
        '"9" is not a score between 2 and 5',
    ),
    (
        "score handler on a confirmation step",
        steps(STEP + "    asks: confirmation\n    on_reply:\n      score: [record_score]\n"),
        10,
        "steps[0].on_reply.score",
        "this step gets no score replies (it expects confirm, cancel, text)",
    ),
    (
        "action the reply kind cannot take",
        steps(
            STEP + "    asks: confirmation\n    on_reply:\n      confirm: [cancel_appointment]\n"
        ),
        10,
        "steps[0].on_reply.confirm[0]",
        '"cancel_appointment" is not something a confirm reply can do',
    ),
    (
        "reschedule link without a reply template",
        steps(
            STEP + "    asks: confirmation\n    on_reply:\n      cancel:\n"
            "        do: [cancel_appointment, offer_reschedule]\n"
        ),
        11,
        "steps[0].on_reply.cancel",
        "offer_reschedule needs reply: <template>",
    ),
    (
        "a key written twice",
        steps(STEP + "    offset: -2h\n"),
        8,
        "steps[0].offset",
        "appears twice",
    ),
    (
        "key with capitals",
        "key: Demo Journey\npurpose: care\nanchor: enrollment\nsteps: []\n",
        1,
        "key",
        '"Demo Journey" is not a key',
    ),
    (
        "no steps",
        "key: demo\npurpose: care\nanchor: enrollment\nsteps: []\n",
        4,
        "steps",
        "at least one step",
    ),
    (
        "aliases",
        steps("  - &s\n    id: a\n    offset: +1h\n    template: t\n  - *s\n", anchor="enrollment"),
        5,
        "",
        "anchors and aliases",
    ),
    (
        "broken YAML",
        steps("  - id: a\n    offset: [+1h\n    template: t\n"),
        7,
        "",
        "not valid YAML",
    ),
    ("empty document", "# nothing yet\n", 1, "", "empty"),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_definitions_name_the_line_and_field(
    text: str, line: int, field: str, fragment: str
) -> None:
    with pytest.raises(JourneyInvalid) as caught:
        parse_journey(text, "demo.yaml")
    error = caught.value
    assert (error.source, error.line, error.field) == ("demo.yaml", line, field), str(error)
    assert fragment in error.problem
    prefix = f"demo.yaml line {line}: {field}: " if field else f"demo.yaml line {line}: "
    assert str(error) == prefix + error.problem


def test_the_offset_error_reads_like_the_issue_asks() -> None:
    text = steps(STEP + "  - id: second\n    offset: 24 hours\n    template: x\n")
    with pytest.raises(JourneyInvalid) as caught:
        parse_journey(text, "appointment_reminders.yaml")
    assert str(caught.value) == (
        'appointment_reminders.yaml line 9: steps[1].offset: "24 hours" is not an offset like '
        "-24h, +1d, -90m"
    )


def test_score_condition_written_as_one_word_and_surveys_never_go_by_voice() -> None:
    text = steps(
        "  - id: q\n    offset: +1d\n    template: t\n    asks: survey\n"
        "    survey: {question: csat, scale: 1-5}\n"
        "  - id: r\n    relative_to: previous\n    offset: +1h\n    template: t\n"
        "    conditions: [only_if_score_below:4]\n",
        purpose="surveys",
        anchor="discharge",
    )
    first, second = parse_journey(text, "d.yaml").steps
    assert second.score_below == 4 and second.conditions == {"only_if_score_below:4"}
    patient_order = [Channel.VOICE, Channel.SMS, Channel.EMAIL]
    assert first.channel_order(patient_order) == (Channel.SMS, Channel.EMAIL)
    assert second.channel_order(patient_order) == tuple(patient_order)  # not a survey step


def test_replies_a_step_asks_for_get_default_handlers() -> None:
    text = steps(STEP + "    asks: confirmation\n")
    step = parse_journey(text, "d.yaml").steps[0]
    confirm, cancel = step.handler("confirm"), step.handler("cancel")
    assert confirm is not None and confirm.actions == (
        "confirm_appointment",
        "cancel_remaining_asks",
    )
    assert cancel is not None and "notify_staff" in cancel.actions


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("-72h", timedelta(hours=-72)),
        ("+1d", timedelta(days=1)),
        ("-90m", timedelta(minutes=-90)),
        ("+1d12h", timedelta(hours=36)),
        ("+2w", timedelta(days=14)),
        ("+0h", timedelta(0)),
        ("24 hours", None),
        ("-", None),
        ("1h1d", None),
        ("-2.5h", None),
    ],
)
def test_parse_offset(written: str, expected: timedelta | None) -> None:
    assert parse_offset(written) == expected


# -- planning -------------------------------------------------------------------------------


def test_reminders_keep_the_local_wall_time_across_the_fall_dst_change() -> None:
    # DST ends in New York at 02:00 on 2026-11-01; the appointment is Monday 09:00 EST.
    appointment = local(2026, 11, 2, 9, 0)
    reminders = load_examples()["appointment_reminders"]
    planned = plan(reminders, appointment, local(2026, 10, 20, 12, 0), zone="America/New_York")
    assert [(p.step_id, p.due_at.astimezone(NEW_YORK)) for p in planned] == [
        ("email_72h", local(2026, 10, 30, 9, 0)),  # 09:00 EDT: 73 real hours before
        ("sms_24h", local(2026, 11, 1, 9, 0)),
        ("sms_2h", local(2026, 11, 2, 7, 0)),
    ]
    assert planned[0].due_at == datetime(2026, 10, 30, 13, 0, tzinfo=UTC)
    assert appointment - planned[0].due_at == timedelta(hours=73)
    assert all(p.due_at.tzinfo is UTC and not p.skipped for p in planned)


def test_minus_24h_is_the_same_wall_time_the_day_before_across_either_dst_change() -> None:
    reminders = load_examples()["appointment_reminders"]
    # DST starts in New York at 02:00 on 2026-03-08 (a 23-hour day) and ends at 02:00 on
    # 2026-11-01 (a 25-hour day).
    for appointment, day_before, real_hours in [
        (local(2026, 3, 8, 9, 0), local(2026, 3, 7, 9, 0), 23),
        (local(2026, 11, 1, 9, 0), local(2026, 10, 31, 9, 0), 25),
    ]:
        planned = plan(reminders, appointment, appointment - timedelta(days=30), zone=NEW_YORK)
        sms_24h = planned[1].due_at
        assert sms_24h.astimezone(NEW_YORK) == day_before
        assert appointment - sms_24h == timedelta(hours=real_hours)
        # Under a day is elapsed time: two real hours, whatever the clock did overnight.
        assert appointment - planned[2].due_at == timedelta(hours=2)


def test_a_wall_time_lost_to_spring_forward_moves_forward_by_the_gap() -> None:
    moment = local(2026, 3, 9, 2, 30)
    assert shift(moment, timedelta(days=-1), NEW_YORK).astimezone(NEW_YORK) == local(
        2026, 3, 8, 3, 30
    )


def test_steps_already_due_at_enrollment_are_skipped_not_sent_late() -> None:
    appointment = local(2026, 6, 10, 9, 0)
    enrolled = local(2026, 6, 9, 15, 0)  # after the -72h and -24h reminders' times
    planned = plan(load_examples()["appointment_reminders"], appointment, enrolled, zone=NEW_YORK)
    assert [(p.step_id, p.skip_reason) for p in planned] == [
        ("email_72h", "due before enrollment"),
        ("sms_24h", "due before enrollment"),
        ("sms_2h", None),
    ]


def test_a_step_due_moments_before_enrollment_is_still_sent() -> None:
    appointment = local(2026, 6, 10, 9, 0)
    enrolled = appointment - timedelta(hours=2) + timedelta(minutes=5)
    planned = plan(load_examples()["appointment_reminders"], appointment, enrolled, zone=NEW_YORK)
    assert planned[2] == PlannedStep("sms_2h", local(2026, 6, 10, 7, 0).astimezone(UTC))


def test_previous_relative_steps_chain_from_the_planned_time() -> None:
    enrolled = local(2026, 10, 25, 10, 0)
    planned = plan(load_examples()["screening_recall"], enrolled, enrolled, zone=NEW_YORK)
    assert [p.due_at.astimezone(NEW_YORK) for p in planned] == [
        local(2026, 10, 25, 10, 0),
        local(2026, 11, 8, 10, 0),  # 14 days later, still 10:00 after the DST change
        local(2026, 11, 22, 10, 0),
    ]
    assert not any(p.skipped for p in planned)

    discharge = local(2026, 5, 4, 16, 30)
    survey = plan(load_examples()["post_visit_follow_up"], discharge, discharge, zone=NEW_YORK)
    assert [p.due_at.astimezone(NEW_YORK) for p in survey] == [
        local(2026, 5, 5, 16, 30),
        local(2026, 5, 5, 18, 30),
    ]


def test_plan_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="anchor_time must be timezone-aware"):
        plan(
            load_examples()["screening_recall"], datetime(2026, 1, 1), datetime.now(UTC), zone="UTC"
        )


# -- replies ------------------------------------------------------------------------------

CLASSIFY = [
    # (text, expecting, channel, expected)
    ("C", "confirmation", Channel.SMS, Reply("confirm")),
    ("c", "confirmation", Channel.SMS, Reply("confirm")),
    ("  Confirm ", "confirmation", Channel.SMS, Reply("confirm")),
    ("CONFIRMED.", "confirmation", Channel.EMAIL, Reply("confirm")),
    ("Yes!", "confirmation", Channel.SMS, Reply("confirm")),
    ("y", "confirmation", Channel.CHAT, Reply("confirm")),
    ("1", "confirmation", Channel.VOICE, Reply("confirm")),
    ("\uff11", "confirmation", Channel.SMS, Reply("confirm")),  # full-width digit one
    ("2", "confirmation", Channel.SMS, Reply("cancel")),
    ("2.", "confirmation", Channel.VOICE, Reply("cancel")),
    ("CANCEL", "confirmation", Channel.SMS, Reply("text")),  # the carrier's opt-out on SMS
    ("CANCEL", "confirmation", None, Reply("text")),
    ("cancel", "confirmation", Channel.EMAIL, Reply("cancel")),
    ("Cancelled", "confirmation", Channel.CHAT, Reply("cancel")),
    ("yes but can we move it to 3pm?", "confirmation", Channel.SMS, Reply("text")),
    ("3", "confirmation", Channel.SMS, Reply("text")),
    ("", "confirmation", Channel.SMS, Reply("text")),
    ("C", None, Channel.SMS, Reply("text")),
    ("2", None, Channel.SMS, Reply("text")),
    ("9", "survey:0-10", Channel.SMS, Reply("score", 9)),
    ("0", "survey:0-10", Channel.SMS, Reply("score", 0)),
    ("10/10", "survey:0-10", Channel.SMS, Reply("score", 10)),
    ("8 / 10", "survey:0-10", Channel.EMAIL, Reply("score", 8)),
    ("7 out of 10", "survey:0-10", Channel.CHAT, Reply("score", 7)),
    ("9!", "survey:0-10", Channel.SMS, Reply("score", 9)),
    (" 10. ", "survey:0-10", Channel.SMS, Reply("score", 10)),
    ("11", "survey:0-10", Channel.SMS, Reply("text")),
    ("-1", "survey:0-10", Channel.SMS, Reply("text")),
    ("9.5", "survey:0-10", Channel.SMS, Reply("text")),
    ("4/5", "survey:0-10", Channel.SMS, Reply("text")),
    ("C", "survey:0-10", Channel.SMS, Reply("text")),
    ("2", "survey:0-10", Channel.SMS, Reply("score", 2)),  # a score, not a cancel, here
    ("great, 10", "survey:0-10", Channel.SMS, Reply("text")),
    ("5", "survey:1-5", Channel.SMS, Reply("score", 5)),
    ("4/5", "survey:1-5", Channel.SMS, Reply("score", 4)),
    ("0", "survey:1-5", Channel.SMS, Reply("text")),
    ("6", "survey:1-5", Channel.SMS, Reply("text")),
]


@pytest.mark.parametrize(("text", "expecting", "channel", "expected"), CLASSIFY)
def test_classify_reply(
    text: str, expecting: str | None, channel: Channel | None, expected: Reply
) -> None:
    assert classify_reply(text, expecting, channel=channel) == expected  # type: ignore[arg-type]
