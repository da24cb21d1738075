"""The journey builder's model: a form's fields to the YAML the parser reads, and a parsed
definition back to those fields. Pure (no database).

The builder saves YAML, not a second model: what a coordinator builds is written as the same
text a file would hold and goes through ``parse_journey``, so the rules and their messages
are the parser's. ``problem_in_words`` turns a parser error's field path (``steps[1].offset``)
into the step and label the form shows ("Step 2 (sms_24h), when").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, get_args

import yaml

from hub.journeys.definitions import (
    ACTIONS_BY_REPLY,
    Action,
    JourneyDefinition,
    JourneyInvalid,
    StepDefinition,
)

REPLY_KINDS = ("confirm", "cancel", "score", "text")
UNITS = (("m", "minutes"), ("h", "hours"), ("d", "days"), ("w", "weeks"))
MAX_CHANNELS = 3
"""Channel choices per step in the form (the sendable channels: sms, email, voice)."""
ACTION_WORDS: dict[str, str] = {
    "confirm_appointment": "confirm the appointment",
    "cancel_remaining_asks": "stop asking to confirm",
    "cancel_appointment": "cancel the appointment",
    "cancel_remaining_steps": "stop the remaining steps",
    "notify_staff": "leave a note for staff",
    "offer_reschedule": "offer a new time",
    "record_score": "record the score",
    "record_answer": "record the answer",
}
"""How each reply action reads in the form."""
KIND_WORDS = {
    "confirm": "When the patient confirms (C, YES, 1)",
    "cancel": "When the patient cancels (2)",
    "score": "When the patient answers with a score",
    "text": "When the patient writes anything else",
}
FIELD_WORDS = {
    "send_window": "send window",
    "id": "step name",
    "offset": "when",
    "relative_to": "counted from",
    "template": "template",
    "channel": "channels",
    "channels": "channels",
    "purpose": "purpose",
    "asks": "asks for",
    "survey": "survey question",
    "survey.question": "survey question",
    "survey.scale": "survey scale",
    "conditions": "conditions",
    "on_reply": "replies",
}
_STEP_PATH = re.compile(r"steps\[(\d+)\](?:\.(.*))?")
_STEP_REF = re.compile(r"steps\[(\d+)\]")


@dataclass
class StepFields:
    """One step as the form shows it (strings, as posted)."""

    id: str = ""
    amount: str = "1"
    unit: str = "d"
    when: str = "before"
    """"before" or "after" the anchor (a step counted from the previous one is always after)."""
    relative_to: str = "anchor"
    channels: list[str] = field(default_factory=list)
    """In order; empty: the patient's own order."""
    template: str = ""
    purpose: str = ""
    asks: str = ""
    question: str = ""
    scale: str = "0-10"
    skip_if_confirmed: bool = False
    only_if_no_reply: bool = False
    score_below: str = ""
    tagged: str = ""
    """Patient tags, separated by commas: the step goes only to patients with one of them."""
    not_tagged: str = ""
    """Patient tags, separated by commas: the step skips patients with one of them."""
    actions: dict[str, list[str]] = field(default_factory=dict)
    replies: dict[str, str] = field(default_factory=dict)


@dataclass
class JourneyFields:
    key: str = ""
    name: str = ""
    description: str = ""
    purpose: str = "reminders"
    anchor: str = "appointment_start"
    fallback_language: str = ""
    window_from: str = ""
    """The send window's opening (HH:MM, the patient's wall time); empty: any time."""
    window_to: str = ""
    steps: list[StepFields] = field(default_factory=list)


def _offset_fields(offset: timedelta) -> tuple[str, str, str]:
    minutes = abs(offset) // timedelta(minutes=1)
    when = "before" if offset < timedelta(0) else "after"
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60)):
        if minutes and minutes % size == 0:
            return str(minutes // size), unit, when
    return str(minutes), "m", when


def fields_of(definition: JourneyDefinition) -> JourneyFields:
    """The form's fields for a stored definition (what the edit page starts from)."""
    return JourneyFields(
        key=definition.key,
        name=definition.name,
        description=definition.description,
        purpose=definition.purpose.value,
        anchor=definition.anchor,
        fallback_language=definition.fallback_language or "",
        window_from=definition.send_window[0].strftime("%H:%M") if definition.send_window else "",
        window_to=definition.send_window[1].strftime("%H:%M") if definition.send_window else "",
        steps=[_step_fields(s) for s in definition.steps],
    )


def _step_fields(step: StepDefinition) -> StepFields:
    amount, unit, when = _offset_fields(step.offset)
    return StepFields(
        id=step.id,
        amount=amount,
        unit=unit,
        when=when,
        relative_to=step.relative_to,
        channels=[c.value for c in step.channels.channels],
        template=step.template,
        purpose=step.purpose.value if step.purpose else "",
        asks=step.asks or "",
        question=step.survey.question if step.survey else "",
        scale=step.survey.scale if step.survey else "0-10",
        skip_if_confirmed="skip_if_confirmed" in step.conditions,
        only_if_no_reply="only_if_no_reply" in step.conditions,
        score_below=str(step.score_below) if step.score_below is not None else "",
        tagged=", ".join(step.tagged("only_if_tagged")),
        not_tagged=", ".join(step.tagged("skip_if_tagged")),
        actions={h.on: list(h.actions) for h in step.on_reply},
        replies={h.on: h.reply_template for h in step.on_reply if h.reply_template},
    )


def fields_from_form(form: Mapping[str, Sequence[str]]) -> JourneyFields:
    """The fields as posted: ``form`` maps each name to all its values (checkbox groups)."""

    def one(name: str, default: str = "") -> str:
        values = form.get(name) or ()
        return values[0].strip() if values else default

    count = int(one("step_count", "0") or 0) if one("step_count").isdigit() else 0
    steps = []
    for i in range(min(count, 50)):
        p = f"s{i}."
        channels = [one(f"{p}channel{n}") for n in range(1, MAX_CHANNELS + 1)]
        steps.append(
            StepFields(
                id=one(p + "id"),
                amount=one(p + "amount"),
                unit=one(p + "unit", "d"),
                when=one(p + "when", "before"),
                relative_to=one(p + "relative_to", "anchor"),
                channels=[c for c in channels if c],
                template=one(p + "template"),
                purpose=one(p + "purpose"),
                asks=one(p + "asks"),
                question=one(p + "question"),
                scale=one(p + "scale", "0-10"),
                skip_if_confirmed=bool(one(p + "skip_if_confirmed")),
                only_if_no_reply=bool(one(p + "only_if_no_reply")),
                score_below=one(p + "score_below"),
                tagged=one(p + "tagged"),
                not_tagged=one(p + "not_tagged"),
                actions={k: list(form.get(f"{p}on_{k}") or ()) for k in REPLY_KINDS},
                replies={k: one(f"{p}reply_{k}") for k in REPLY_KINDS if one(f"{p}reply_{k}")},
            )
        )
    return JourneyFields(
        key=one("key"),
        name=one("name"),
        description=one("description"),
        purpose=one("purpose", "reminders"),
        anchor=one("anchor", "appointment_start"),
        fallback_language=one("fallback_language"),
        window_from=one("window_from"),
        window_to=one("window_to"),
        steps=steps,
    )


def _offset_text(step: StepFields) -> str:
    sign = "-" if step.when == "before" and step.relative_to == "anchor" else "+"
    return f"{sign}{step.amount}{step.unit}"


def _replies(step: StepFields) -> dict[str, Any]:
    handlers: dict[str, Any] = {}
    for kind in REPLY_KINDS:
        actions = [a for a in step.actions.get(kind, ()) if a]
        reply = step.replies.get(kind)
        if not actions and not reply:
            continue
        handler: dict[str, Any] = {}
        if actions:
            handler["do"] = actions
        if reply:
            handler["reply"] = reply
        handlers[kind] = handler
    return handlers


def to_yaml(fields: JourneyFields) -> str:
    """The YAML text of the fields, as the parser reads it (validated only by parsing it)."""
    doc: dict[str, Any] = {"key": fields.key}
    if fields.name:
        doc["name"] = fields.name
    doc["purpose"] = fields.purpose
    doc["anchor"] = fields.anchor
    if fields.description:
        doc["description"] = fields.description
    if fields.fallback_language:
        doc["fallback_language"] = fields.fallback_language
    if fields.window_from or fields.window_to:
        doc["send_window"] = f"{fields.window_from}-{fields.window_to}"
    steps = []
    for step in fields.steps:
        item: dict[str, Any] = {"id": step.id, "offset": _offset_text(step)}
        if step.relative_to == "previous":
            item["relative_to"] = "previous"
        item["template"] = step.template
        if len(step.channels) == 1:
            item["channel"] = step.channels[0]
        elif step.channels:
            item["channels"] = list(step.channels)
        if step.purpose:
            item["purpose"] = step.purpose
        if step.asks:
            item["asks"] = step.asks
        if step.asks == "survey":
            item["survey"] = {"question": step.question, "scale": step.scale}
        conditions: list[Any] = []
        if step.skip_if_confirmed:
            conditions.append("skip_if_confirmed")
        if step.only_if_no_reply:
            conditions.append("only_if_no_reply")
        if step.score_below:
            conditions.append({"only_if_score_below": step.score_below})
        for name, written in (("only_if_tagged", step.tagged), ("skip_if_tagged", step.not_tagged)):
            tags = [t.strip() for t in written.split(",") if t.strip()]
            if tags:
                conditions.append({name: tags})
        if conditions:
            item["conditions"] = conditions
        handlers = _replies(step)
        if handlers:
            item["on_reply"] = handlers
        steps.append(item)
    doc["steps"] = steps
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def actions_for(kind: str) -> list[tuple[str, str]]:
    """(action, words) a reply of ``kind`` may do, in the parser's order."""
    allowed = ACTIONS_BY_REPLY[kind]
    return [(a, ACTION_WORDS[a]) for a in get_args(Action) if a in allowed]


@dataclass(frozen=True)
class Problem:
    step: int | None
    """0-based index of the step the problem is in, None for the journey's own fields."""
    message: str


def problem_in_words(exc: JourneyInvalid, fields: JourneyFields) -> Problem:
    """The parser's error as the form says it: the step by number and name, the field by its
    label, and other steps by number ("before step 1") instead of YAML paths."""

    def step_name(index: int) -> str:
        name = fields.steps[index].id if index < len(fields.steps) else ""
        return f"Step {index + 1}" + (f" ({name})" if name else "")

    problem = _STEP_REF.sub(lambda m: f"step {int(m.group(1)) + 1}", exc.problem)
    match = _STEP_PATH.fullmatch(exc.field)
    if match is None:
        label = exc.field.replace("_", " ") if exc.field else "The journey"
        return Problem(None, f"{label[:1].upper()}{label[1:]}: {problem}")
    index = int(match.group(1))
    rest = match.group(2) or ""
    base = re.sub(r"\[\d+\]", "", rest)
    label = FIELD_WORDS.get(base) or FIELD_WORDS.get(base.split(".")[0], base.replace("_", " "))
    if base.startswith("on_reply."):
        kind = base.split(".")[1]
        label = KIND_WORDS.get(kind, "replies").lower()
    if base.startswith("conditions"):
        label = "conditions"
    where = f"{step_name(index)}, {label}" if label else step_name(index)
    return Problem(index, f"{where}: {problem}")
