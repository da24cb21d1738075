"""The YAML reader for journey definitions: walks the composed nodes (which keep their line
numbers) so every error names the source, line and field. ``yaml.load`` is never used: only
``SafeLoader`` composition, no anchors or aliases, and size and step limits."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Sequence
from datetime import time, timedelta
from importlib import resources
from typing import NoReturn, get_args

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hub.consent.models import Purpose
from hub.enums import RECEIVE_ONLY, Channel
from hub.inbox.actions.tags import normalize_tag
from hub.journeys.definitions import (
    _KEY,
    _OFFSET_HINT,
    _SCORE_BELOW,
    _STEP_FIELDS,
    _TOP_FIELDS,
    ACTIONS_BY_REPLY,
    DEFAULT_HANDLERS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_STEPS,
    JOURNEY_PURPOSES,
    MAX_OFFSET,
    SCALE_BOUNDS,
    Action,
    Anchor,
    Asks,
    ChannelPolicy,
    JourneyDefinition,
    JourneyInvalid,
    RelativeTo,
    ReplyHandler,
    Scale,
    StepDefinition,
    SurveySpec,
    parse_offset,
)
from hub.journeys.replies import ReplyKind
from hub.templates import TemplateInvalid
from hub.templates.actions import normalize_locale


def load_examples() -> dict[str, JourneyDefinition]:
    """The journeys shipped in ``hub/journeys/examples`` by key (a bad one raises: it is a bug)."""
    folder = resources.files("hub.journeys").joinpath("examples")
    examples: dict[str, JourneyDefinition] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            definition = parse_journey(entry.read_text(encoding="utf-8"), entry.name)
            examples[definition.key] = definition
    return examples


def parse_journey(
    text: str, source: str, *, templates: Collection[str] | None = None
) -> JourneyDefinition:
    """Parse and validate one journey. ``templates``, when given, are the known template keys
    (a step naming another is rejected). Raises JourneyInvalid with the first problem found."""
    return _Parser(source, templates).journey(text)


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


_WINDOW = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


def _pairs(match: re.Match[str] | None) -> list[tuple[str, str]]:
    if match is None:
        raise ValueError("not a window")
    h1, m1, h2, m2 = match.groups()
    return [(h1, m1), (h2, m2)]


_ANCHOR_WORDS = {"appointment_start": "appointment", "enrollment": "enrollment"}
_CONDITIONS = (
    "skip_if_confirmed",
    "only_if_no_reply",
    "only_if_score_below: N",
    "only_if_tagged: [tag, ...]",
    "skip_if_tagged: [tag, ...]",
)
_TAG_CONDITIONS = ("only_if_tagged", "skip_if_tagged")
_Fields = dict[str, tuple[Node, Node]]


class _Parser:
    """One parse: walks the composed YAML nodes (which keep their line) and fails on the first
    problem. Anchor and journey purpose are read before the steps that depend on them."""

    def __init__(self, source: str, templates: Collection[str] | None) -> None:
        self.source = source
        self.templates = None if templates is None else sorted(set(templates))
        self.constructor = SafeConstructor()
        self.anchor: Anchor = "enrollment"
        self.purpose = Purpose.CARE
        self.since_anchor: list[timedelta] = []
        self.questions: set[str] = set()

    def fail(self, node: Node | None, field: str, problem: str) -> NoReturn:
        line = node.start_mark.line + 1 if node is not None else 1
        raise JourneyInvalid(self.source, line, field, problem)

    def journey(self, text: str) -> JourneyDefinition:
        if len(text.encode()) > DEFAULT_MAX_BYTES:
            self.fail(None, "", f"larger than {DEFAULT_MAX_BYTES // 1024} KiB")
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            problem = " ".join(p for p in (exc.context, exc.problem) if p)
            raise JourneyInvalid(self.source, line, "", f"not valid YAML: {problem}") from None
        except yaml.YAMLError as exc:
            raise JourneyInvalid(self.source, 1, "", f"not valid YAML: {exc}") from None
        if root is None:
            self.fail(None, "", "empty: a journey needs key, purpose, anchor and steps")
        self.reject_aliases(root)
        f = self.fields(root, "", _TOP_FIELDS, ("key", "purpose", "anchor", "steps"))
        key = self.key(f["key"][1], "key")
        self.purpose = self.purpose_of(f["purpose"][1], "purpose")
        anchors = get_args(Anchor)
        anchor = self.choice(f["anchor"][1], "anchor", anchors, "an anchor")
        self.anchor = next(a for a in anchors if a == anchor)
        name = (
            self.text(f["name"][1], "name") if "name" in f else key.replace("_", " ").capitalize()
        )
        description = self.text(f["description"][1], "description") if "description" in f else ""
        fallback = None
        if "fallback_language" in f:
            node = f["fallback_language"][1]
            try:
                fallback = normalize_locale(self.text(node, "fallback_language"))
            except TemplateInvalid as exc:
                self.fail(node, "fallback_language", str(exc))
        window = self.window(f["send_window"][1]) if "send_window" in f else None
        steps_node = f["steps"][1]
        if not isinstance(steps_node, SequenceNode) or not steps_node.value:
            self.fail(steps_node, "steps", "expected a list of at least one step")
        if len(steps_node.value) > DEFAULT_MAX_STEPS:
            self.fail(steps_node, "steps", f"more than {DEFAULT_MAX_STEPS} steps")
        steps: list[StepDefinition] = []
        for i, node in enumerate(steps_node.value):
            steps.append(self.step(node, f"steps[{i}]", steps))
        return JourneyDefinition(
            key,
            name,
            self.purpose,
            self.anchor,
            tuple(steps),
            description,
            fallback,
            send_window=window,
        )

    def window(self, node: Node) -> tuple[time, time]:
        written = self.text(node, "send_window")
        match = _WINDOW.fullmatch(written)
        try:
            opens, closes = (time.fromisoformat(f"{int(h):02d}:{m}") for h, m in _pairs(match))
        except ValueError:
            self.fail(node, "send_window", f'"{written}" is not a window like 09:00-18:00')
        if opens >= closes:
            self.fail(node, "send_window", f'"{written}" closes before it opens; write 09:00-18:00')
        return opens, closes

    def reject_aliases(self, root: Node) -> None:
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                self.fail(node, "", "anchors and aliases (& and *) are not supported here")
            seen.add(id(node))
            if isinstance(node, MappingNode):
                stack.extend(n for pair in node.value for n in pair)
            elif isinstance(node, SequenceNode):
                stack.extend(node.value)

    # -- building blocks ------------------------------------------------------------------

    def fields(
        self, node: Node, path: str, allowed: Sequence[str], required: Sequence[str]
    ) -> _Fields:
        if not isinstance(node, MappingNode):
            self.fail(node, path, f"expected fields ({', '.join(required or allowed)}: ...)")
        found: _Fields = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, ScalarNode) else ""
            field_path = f"{path}.{name}" if path else name
            if name not in allowed:
                hint = _suggest(name, allowed)
                self.fail(
                    key_node, field_path, f"unknown field{hint}; expected {', '.join(allowed)}"
                )
            if name in found:
                self.fail(key_node, field_path, "appears twice")
            found[name] = (key_node, value_node)
        for name in required:
            if name not in found:
                self.fail(node, f"{path}.{name}" if path else name, "missing")
        return found

    def raw(self, node: Node, path: str) -> str:
        """The scalar as written (so `scale: 10` and `asks: yes` are reported as written)."""
        if not isinstance(node, ScalarNode):
            self.fail(node, path, "expected a single value, not a list or fields")
        if node.tag == "tag:yaml.org,2002:null":
            self.fail(node, path, "missing a value")
        return str(node.value)

    def text(self, node: Node, path: str) -> str:
        return self.raw(node, path).strip()

    def key(self, node: Node, path: str) -> str:
        value = self.raw(node, path)
        if not _KEY.fullmatch(value):
            self.fail(node, path, f'"{value}" is not a key like follow_up_1 (a-z, 0-9, _)')
        return value

    def choice(self, node: Node, path: str, choices: Sequence[str], what: str) -> str:
        value = self.raw(node, path)
        if value not in choices:
            hint = _suggest(value, choices)
            self.fail(node, path, f'"{value}" is not {what}{hint}; expected {", ".join(choices)}')
        return value

    def purpose_of(self, node: Node, path: str) -> Purpose:
        names = [p.value for p in JOURNEY_PURPOSES]
        return Purpose(self.choice(node, path, names, "a journey purpose"))

    def channel(self, node: Node, path: str) -> Channel:
        # A journey can only send: a receive-only channel (WhatsApp) is not one to offer.
        sendable = [c.value for c in Channel if c not in RECEIVE_ONLY]
        return Channel(self.choice(node, path, sendable, "a channel"))

    def template(self, node: Node, path: str) -> str:
        value = self.key(node, path)
        if self.templates is not None and value not in self.templates:
            self.fail(node, path, f'no template "{value}"{_suggest(value, self.templates)}')
        return value

    # -- steps ----------------------------------------------------------------------------

    def step(self, node: Node, path: str, earlier: list[StepDefinition]) -> StepDefinition:
        f = self.fields(node, path, _STEP_FIELDS, ("id", "offset", "template"))
        id_node = f["id"][1]
        step_id = self.key(id_node, f"{path}.id")
        if any(s.id == step_id for s in earlier):
            self.fail(id_node, f"{path}.id", f'"{step_id}" is already the id of an earlier step')
        relative_to: RelativeTo = "anchor"
        if "relative_to" in f:
            where = self.choice(
                f["relative_to"][1], f"{path}.relative_to", get_args(RelativeTo), ""
            )
            relative_to = "previous" if where == "previous" else "anchor"
            if relative_to == "previous" and not earlier:
                self.fail(
                    f["relative_to"][1],
                    f"{path}.relative_to",
                    "the first step has no previous step; use relative_to: anchor",
                )
        offset = self.offset(f["offset"][1], f"{path}.offset", relative_to)
        template = self.template(f["template"][1], f"{path}.template")
        channels = self.channels(f, path)
        purpose = self.purpose_of(f["purpose"][1], f"{path}.purpose") if "purpose" in f else None
        asks: Asks | None = None
        if "asks" in f:
            asks_node = f["asks"][1]
            what = "something a step can ask for"
            chosen = self.choice(asks_node, f"{path}.asks", get_args(Asks), what)
            asks = next(a for a in get_args(Asks) if a == chosen)
            if asks in ("confirmation", "cancellation") and self.anchor != "appointment_start":
                self.fail(
                    asks_node,
                    f"{path}.asks",
                    f"only a journey with anchor: appointment_start can ask for a {asks}",
                )
        survey = self.survey(f, path, asks, purpose, channels)
        step = StepDefinition(
            step_id, offset, template, relative_to, channels, purpose, asks=asks, survey=survey
        )
        conditions = self.conditions(f["conditions"][1], path, earlier) if "conditions" in f else ()
        handlers = self.on_reply(f["on_reply"][1] if "on_reply" in f else None, path, step)
        return StepDefinition(
            step_id,
            offset,
            template,
            relative_to,
            channels,
            purpose,
            frozenset(conditions),
            asks,
            survey,
            handlers,
        )

    def offset(self, node: Node, path: str, relative_to: RelativeTo) -> timedelta:
        written = self.raw(node, path)
        value = parse_offset(written) if node.tag == "tag:yaml.org,2002:str" else None
        if value is None:
            self.fail(node, path, f'"{written}" {_OFFSET_HINT}')
        if not written.startswith(("+", "-")):
            word = _ANCHOR_WORDS.get(self.anchor, self.anchor)
            base = word if relative_to == "anchor" else "previous step"
            self.fail(
                node,
                path,
                f'"{written}" needs a sign: -{written} for before the {base}, +{written} for after',
            )
        if relative_to == "previous" and value < timedelta(0):
            self.fail(
                node,
                path,
                f'"{written}" is negative, but a step relative to the previous '
                f"one comes after it: write +{written[1:]}",
            )
        if abs(value) > MAX_OFFSET:
            self.fail(node, path, f'"{written}" is more than 365 days')
        since = value + (self.since_anchor[-1] if relative_to == "previous" else timedelta(0))
        if self.since_anchor and since < self.since_anchor[-1]:
            index = len(self.since_anchor) - 1
            self.fail(
                node,
                path,
                f"this step would go out before steps[{index}]; list steps in "
                "the order they are sent",
            )
        self.since_anchor.append(since)
        return value

    def channels(self, f: _Fields, path: str) -> ChannelPolicy:
        if "channel" in f and "channels" in f:
            self.fail(
                f["channels"][0],
                f"{path}.channels",
                "use either channel (one fixed "
                "channel) or channels (an order of preference), not both",
            )
        if "channel" in f:
            return ChannelPolicy("fixed", (self.channel(f["channel"][1], f"{path}.channel"),))
        if "channels" not in f:
            return ChannelPolicy()
        node = f["channels"][1]
        if not isinstance(node, SequenceNode) or not node.value:
            self.fail(
                node,
                f"{path}.channels",
                "expected a list like [sms, email]; leave "
                "channels out to use the patient's own order",
            )
        order: list[Channel] = []
        for j, item in enumerate(node.value):
            channel = self.channel(item, f"{path}.channels[{j}]")
            if channel in order:
                self.fail(item, f"{path}.channels[{j}]", f"{channel.value} is listed twice")
            order.append(channel)
        return ChannelPolicy("preference", tuple(order))

    def survey(
        self,
        f: _Fields,
        path: str,
        asks: Asks | None,
        purpose: Purpose | None,
        channels: ChannelPolicy,
    ) -> SurveySpec | None:
        if asks != "survey":
            if "survey" in f:
                self.fail(f["survey"][0], f"{path}.survey", "only a step with asks: survey has one")
            return None
        if "survey" not in f:
            self.fail(
                f["asks"][1],
                f"{path}.survey",
                "missing: asks: survey needs survey: {question: nps, scale: 0-10}",
            )
        sf = self.fields(
            f["survey"][1], f"{path}.survey", ("question", "scale"), ("question", "scale")
        )
        question = self.key(sf["question"][1], f"{path}.survey.question")
        if question in self.questions:
            self.fail(
                sf["question"][1],
                f"{path}.survey.question",
                f'"{question}" is already asked by an earlier step',
            )
        self.questions.add(question)
        scales = get_args(Scale)
        scale = self.choice(sf["scale"][1], f"{path}.survey.scale", scales, "a survey scale")
        if (purpose or self.purpose) != Purpose.SURVEYS:
            node, field_path = (
                f["purpose"][1] if "purpose" in f else f["asks"][1],
                f"{path}.purpose",
            )
            self.fail(
                node,
                field_path,
                "a survey question needs purpose surveys (patients opt in "
                "to surveys separately): set it on the step or the journey",
            )
        if Channel.VOICE in channels.channels:
            name = "channel" if "channel" in f else "channels"
            self.fail(f[name][1], f"{path}.{name}", "voice cannot take a survey answer")
        return SurveySpec(question, next(s for s in scales if s == scale))

    def conditions(self, node: Node, path: str, earlier: list[StepDefinition]) -> list[str]:
        if not isinstance(node, SequenceNode):
            self.fail(node, f"{path}.conditions", "expected a list like [skip_if_confirmed]")
        found: list[str] = []
        for j, item in enumerate(node.value):
            item_path = f"{path}.conditions[{j}]"
            condition = self.condition(item, item_path, earlier)
            kind = condition.split(":")[0]
            if condition in found or (
                kind in ("only_if_score_below", *_TAG_CONDITIONS)
                and any(c.split(":")[0] == kind for c in found)
            ):
                self.fail(item, item_path, f"{condition.split(':')[0]} is listed twice")
            found.append(condition)
        return found

    def condition(self, item: Node, path: str, earlier: list[StepDefinition]) -> str:
        threshold_node: Node = item
        if isinstance(item, MappingNode) and len(item.value) == 1:
            key_node, threshold_node = item.value[0]
            name = str(key_node.value) if isinstance(key_node, ScalarNode) else ""
            if name in _TAG_CONDITIONS:
                return f"{name}:{','.join(self.tags(threshold_node, f'{path}.{name}'))}"
            written = self.raw(threshold_node, path) if name == "only_if_score_below" else ""
        else:
            name = self.raw(item, path)
            match = _SCORE_BELOW.fullmatch(name)
            name, written = ("only_if_score_below", match.group(1)) if match else (name, "")
        if name not in ("skip_if_confirmed", "only_if_no_reply", "only_if_score_below"):
            hint = _suggest(name, _CONDITIONS)
            self.fail(
                item, path, f'"{name}" is not a condition{hint}; expected {", ".join(_CONDITIONS)}'
            )
        if name == "skip_if_confirmed" and self.anchor != "appointment_start":
            self.fail(
                item,
                path,
                "only appointments are confirmed: skip_if_confirmed needs "
                "anchor: appointment_start",
            )
        if name == "only_if_no_reply" and not earlier:
            self.fail(item, path, "the first step has nothing to reply to yet")
        if name != "only_if_score_below":
            return name
        source = next(
            (s.survey for s in reversed(earlier) if s.survey and s.survey.expecting), None
        )
        if source is None:
            self.fail(
                item,
                path,
                "only_if_score_below needs an earlier step asking a 0-10 or 1-5 survey question",
            )
        low, high = SCALE_BOUNDS[source.scale]
        if not written.isdigit() or not low < int(written) <= high:
            self.fail(
                threshold_node,
                path,
                f'"{written}" is not a score between {low + 1} and '
                f"{high} (the {source.question} question's scale is {source.scale})",
            )
        return f"only_if_score_below:{int(written)}"

    def tags(self, node: Node, path: str) -> list[str]:
        """The patient tags of only_if_tagged / skip_if_tagged, normalized as tags are stored
        (any of them matches)."""
        items = node.value if isinstance(node, SequenceNode) else [node]
        if not items:
            self.fail(node, path, "expected a list of tags like [high-risk, diabetes]")
        found: list[str] = []
        for j, item in enumerate(items):
            written = self.raw(item, f"{path}[{j}]")
            tag = normalize_tag(written)
            if tag is None or "," in tag:
                self.fail(item, f"{path}[{j}]", f'"{written}" is not a tag (no commas, not empty)')
            if tag not in found:
                found.append(tag)
        return found

    def on_reply(
        self, node: Node | None, path: str, step: StepDefinition
    ) -> tuple[ReplyHandler, ...]:
        expected: list[ReplyKind] = ["text"]
        if step.asks in ("confirmation", "cancellation"):
            expected = ["confirm", "cancel", "text"]
        elif step.survey is not None and step.survey.expecting:
            expected = ["score", "text"]
        handlers: list[ReplyHandler] = []
        if node is not None:
            path = f"{path}.on_reply"
            kinds = [k for k in get_args(ReplyKind) if k in expected]
            for key_node, value_node in self.fields(node, path, get_args(ReplyKind), ()).values():
                kind = next(k for k in get_args(ReplyKind) if k == key_node.value)
                if kind not in kinds:
                    self.fail(
                        key_node,
                        f"{path}.{kind}",
                        f"this step gets no {kind} replies (it expects {', '.join(kinds)})",
                    )
                handlers.append(self.handler(value_node, f"{path}.{kind}", kind, step))
        needed: list[ReplyKind] = [k for k in expected if k != "text"]
        if step.survey is not None and step.survey.scale == "free_text":
            needed.append("text")
        for kind in needed:
            if step.handler(kind) is None and all(h.on != kind for h in handlers):
                actions = tuple(a for a in get_args(Action) if a in DEFAULT_HANDLERS[kind])
                handlers.append(ReplyHandler(kind, actions))
        return tuple(handlers)

    def handler(self, node: Node, path: str, kind: ReplyKind, step: StepDefinition) -> ReplyHandler:
        reply_template = None
        if isinstance(node, MappingNode):
            f = self.fields(node, path, ("do", "reply"), ())
            if "reply" in f:
                reply_template = self.template(f["reply"][1], f"{path}.reply")
            do_node: Node | None = f["do"][1] if "do" in f else None
        else:
            do_node = node
        actions: list[Action] = []
        if do_node is not None:
            if not isinstance(do_node, SequenceNode):
                self.fail(do_node, path, "expected a list of actions like [notify_staff]")
            allowed = ACTIONS_BY_REPLY[kind]
            for j, item in enumerate(do_node.value):
                item_path = f"{path}.do[{j}]" if isinstance(node, MappingNode) else f"{path}[{j}]"
                name = self.choice(item, item_path, allowed, f"something a {kind} reply can do")
                action = next(a for a in get_args(Action) if a == name)
                if action in actions:
                    self.fail(item, item_path, f"{action} is listed twice")
                actions.append(action)
        if not actions and reply_template is None:
            self.fail(node, path, "does nothing: list actions under do, or a template under reply")
        if "offer_reschedule" in actions and reply_template is None:
            self.fail(node, path, "offer_reschedule needs reply: <template> to carry the link")
        free_text = step.survey is not None and step.survey.scale == "free_text"
        if "record_answer" in actions and not free_text:
            self.fail(node, path, "record_answer is for a survey question with scale: free_text")
        if kind == "score" and "record_score" not in actions:
            self.fail(node, path, "a score reply must record_score, or the answer is lost")
        if kind == "text" and free_text and "record_answer" not in actions:
            self.fail(node, path, "a free_text question's reply must record_answer")
        return ReplyHandler(kind, tuple(actions), reply_template)
