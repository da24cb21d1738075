"""Routing rules as data: validation of the stored JSON, evaluation, and auto-reply rendering.

Pure (no database, no I/O), so the admin UI can validate a draft and tests can evaluate rules
without a session. Rules arrive from admins as JSON; everything here rejects unknown keys and
names the offending field in its error ("conditions.body_regex: ..."), because a typo that
silently never matches is worse than a refused save.

Regexes run on every inbound message inside the webhook, and Python's ``re`` has no timeout.
So a pattern is capped at MAX_REGEX_LENGTH characters, runs against the first
MAX_REGEX_BODY characters of the body, and is refused when a rough worst-case estimate of its
backtracking (repeats multiplied together, nested repeats) is too high: '(a+)+', '.*.*x' and
'\\w+@\\w+' are refused, 'bill(ing)?' and 'refill.*today' pass. A linear-time engine (RE2)
would remove the need for the estimate.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from hub.contact import language_tag
from hub.enums import Channel, Priority
from hub.errors import HubError
from hub.routing.triage import TRIAGE_REPLY_SETTING, PhraseMatcher, display_phrase

MAX_REGEX_LENGTH = 200
"""Longest ``conditions.body_regex`` an admin may save."""
MAX_REGEX_BODY = 2_000
"""Characters of the body a regex sees; bounds the cost of any accepted pattern."""
MAX_REGEX_COST = 10_000
"""Estimated backtracking branches per start position above which a pattern is refused."""
MAX_LIST_ITEMS = 50
"""Entries allowed in any list condition or in add_tags."""
MAX_REPLY_LENGTH = 1_600
"""Longest auto-reply (ten SMS segments)."""
PLACEHOLDERS = frozenset({"first_name", "clinic_name"})
"""The only names an auto-reply may use."""

CONDITION_KEYS = (
    "channel",
    "body_keywords",
    "body_regex",
    "patient_tags_any",
    "patient_language",
    "business_hours",
    "patient_is_new",
)
ACTION_KEYS = ("team", "priority", "add_tags", "assign_to", "auto_reply")
SETTING_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")

try:  # the stdlib's own parser, private but stable since 3.11; without it only the caps apply
    _sre: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover
    _sre = None

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


class RuleInvalid(HubError):
    """Admin routing configuration is invalid; the message starts with the field's path."""


class ReplyNotRendered(HubError):
    """An auto-reply template failed to render; the reply is skipped, never sent half-done."""


@dataclass(frozen=True)
class Conditions:
    """All set conditions must hold; an empty Conditions matches every message."""

    channel: frozenset[str] | None = None
    body_keywords: PhraseMatcher | None = None
    body_regex: re.Pattern[str] | None = None
    patient_tags_any: frozenset[str] | None = None
    patient_language: frozenset[str] | None = None
    business_hours: str | None = None
    patient_is_new: bool | None = None


@dataclass(frozen=True)
class Actions:
    team: str | None = None
    priority: Priority | None = None
    add_tags: tuple[str, ...] = ()
    assign_to: str | None = None
    auto_reply: str | None = None


@dataclass(frozen=True)
class Facts:
    """What conditions are tested against, for one inbound message."""

    channel: str
    body: str = field(repr=False)
    patient_tags: frozenset[str]
    patient_language: str
    patient_is_new: bool
    team_open: bool


@dataclass(frozen=True)
class RuleView:
    """A rule as the admin UI and API show it (the stored JSON, as saved)."""

    id: uuid.UUID
    position: int
    name: str
    enabled: bool
    conditions: dict[str, Any]
    actions: dict[str, Any]
    stop_processing: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Any) -> RuleView:
        """From a ``RoutingRule`` row; the JSON is copied so the view never aliases the row."""
        values = {f.name: getattr(row, f.name) for f in fields(cls)}
        return cls(**{**values, "conditions": dict(row.conditions), "actions": dict(row.actions)})


def _object(raw: object, path: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise RuleInvalid(f"{path}: expected an object, got {type(raw).__name__}")
    for key in raw:
        if key not in allowed:
            raise RuleInvalid(f"{path}.{key}: unknown key; expected one of {', '.join(allowed)}")
    return raw


def _strings(raw: object, path: str, *, max_length: int = 120) -> list[str]:
    if not isinstance(raw, list) or not raw:
        raise RuleInvalid(f"{path}: expected a non-empty list of text")
    if len(raw) > MAX_LIST_ITEMS:
        raise RuleInvalid(f"{path}: at most {MAX_LIST_ITEMS} entries")
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not item.strip():
            raise RuleInvalid(f"{path}[{i}]: expected non-empty text, got {item!r}")
        if len(item) > max_length:
            raise RuleInvalid(f"{path}[{i}]: at most {max_length} characters")
    return [item.strip() for item in raw]


def _text(raw: object, path: str, *, max_length: int) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise RuleInvalid(f"{path}: expected non-empty text, got {raw!r}")
    if len(raw) > max_length:
        raise RuleInvalid(f"{path}: at most {max_length} characters")
    return raw.strip()


def _regex_cost(items: Any) -> int:
    """Rough worst-case number of ways the pattern can split a text, per start position."""
    total = 1
    for op, av in items:
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            low, high, sub = av
            inner = _regex_cost(sub)
            span = min(MAX_REGEX_BODY if high == _sre.MAXREPEAT else high, MAX_REGEX_BODY)
            if op is _sre.POSSESSIVE_REPEAT:
                factor = inner
            elif inner > 1 and span > 1:
                factor = inner ** min(span, 64)  # a repeated ambiguous group: exponential
            else:
                factor = max(span - low, 0) + 1
        elif op is _sre.SUBPATTERN:
            factor = _regex_cost(av[3])
        elif op is _sre.BRANCH:
            factor = sum(_regex_cost(branch) for branch in av[1])
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            factor = _regex_cost(av[1])
        elif op is _sre.ATOMIC_GROUP:
            factor = _regex_cost(av)
        elif op is _sre.GROUPREF_EXISTS:
            factor = max(_regex_cost(av[1]), _regex_cost(av[2]) if av[2] else 1)
        else:
            factor = 1
        total = min(total * factor, MAX_REGEX_COST * 1_000)
    return total


def compile_regex(raw: object, path: str = "conditions.body_regex") -> re.Pattern[str]:
    pattern = _text(raw, path, max_length=MAX_REGEX_LENGTH)
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise RuleInvalid(f"{path}: {exc}") from None
    if _sre is not None and _regex_cost(_sre.parse(pattern)) > MAX_REGEX_COST:
        raise RuleInvalid(
            f"{path}: this pattern could take too long on a long message (nested or repeated "
            "wildcards such as '(a+)+', '.*.*' or '\\w+@\\w+'); use bounded repeats like .{0,40}"
        )
    return compiled


def parse_conditions(raw: object) -> Conditions:
    data = _object(raw, "conditions", CONDITION_KEYS)
    found: dict[str, Any] = {}
    if "channel" in data:
        channels = _strings(data["channel"], "conditions.channel")
        known = [c.value for c in Channel]
        for i, name in enumerate(channels):
            if name not in known:
                raise RuleInvalid(
                    f"conditions.channel[{i}]: unknown channel {name!r}; "
                    f"expected one of {', '.join(known)}"
                )
        found["channel"] = frozenset(channels)
    if "body_keywords" in data:
        keywords = _strings(data["body_keywords"], "conditions.body_keywords")
        matcher = PhraseMatcher(keywords)
        if not matcher:
            raise RuleInvalid("conditions.body_keywords: keywords need letters or digits")
        found["body_keywords"] = matcher
    if "body_regex" in data:
        found["body_regex"] = compile_regex(data["body_regex"])
    if "patient_tags_any" in data:
        tags = _strings(data["patient_tags_any"], "conditions.patient_tags_any")
        found["patient_tags_any"] = frozenset(t.casefold() for t in tags)
    if "patient_language" in data:
        langs = _strings(data["patient_language"], "conditions.patient_language", max_length=16)
        found["patient_language"] = frozenset(lang.casefold() for lang in langs)
    if "business_hours" in data:
        if data["business_hours"] not in ("open", "closed"):
            raise RuleInvalid(
                f'conditions.business_hours: expected "open" or "closed", '
                f"got {data['business_hours']!r}"
            )
        found["business_hours"] = data["business_hours"]
    if "patient_is_new" in data:
        if not isinstance(data["patient_is_new"], bool):
            raise RuleInvalid(
                f"conditions.patient_is_new: expected true or false, got {data['patient_is_new']!r}"
            )
        found["patient_is_new"] = data["patient_is_new"]
    return Conditions(**found)


def template_problem(text: str) -> str | None:
    """Why an auto-reply template cannot be used, or None when it can."""
    try:
        names = meta.find_undeclared_variables(_ENV.parse(text))
    except jinja2.TemplateSyntaxError as exc:
        return f"template error on line {exc.lineno}: {exc.message}"
    unknown = sorted(names - PLACEHOLDERS)
    if unknown:
        return (
            f"unknown placeholder {{{{ {unknown[0]} }}}}; "
            "use {{ first_name }} or {{ clinic_name }}"
        )
    return None


def parse_actions(raw: object) -> Actions:
    data = _object(raw, "actions", ACTION_KEYS)
    found: dict[str, Any] = {}
    if "team" in data:
        found["team"] = _text(data["team"], "actions.team", max_length=120)
    if "priority" in data:
        try:
            found["priority"] = Priority(data["priority"])
        except ValueError:
            raise RuleInvalid(
                f"actions.priority: unknown priority {data['priority']!r}; "
                f"expected one of {', '.join(p.value for p in Priority)}"
            ) from None
    if "add_tags" in data:
        found["add_tags"] = tuple(dict.fromkeys(_strings(data["add_tags"], "actions.add_tags")))
    if "assign_to" in data:
        email = _text(data["assign_to"], "actions.assign_to", max_length=254).lower()
        if "@" not in email:
            raise RuleInvalid(f"actions.assign_to: expected a staff email address, got {email!r}")
        found["assign_to"] = email
    if "auto_reply" in data:
        text = _text(data["auto_reply"], "actions.auto_reply", max_length=MAX_REPLY_LENGTH)
        if (problem := template_problem(text)) is not None:
            raise RuleInvalid(f"actions.auto_reply: {problem}")
        found["auto_reply"] = text
    return Actions(**found)


def check_rule_name(raw: object) -> str:
    return _text(raw, "name", max_length=120)


def check_flag(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise RuleInvalid(f"{path}: expected true or false, got {value!r}")
    return value


def plain_json(value: object, path: str) -> dict[str, Any]:
    """A copy of ``value`` fit to store as JSON (a deep copy, so later edits do not leak in)."""
    try:
        copied: dict[str, Any] = json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise RuleInvalid(f"{path}: must be plain JSON (text, numbers, lists, objects)") from None
    return copied


def check_position(position: object, size: int) -> int:
    """A rule position as a list index; past the end means last."""
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise RuleInvalid(f"position: expected a whole number from 0, got {position!r}")
    return min(position, size)


def check_phrases(phrases: object) -> list[str]:
    """An admin's urgent-phrase list in stored form, deduplicated, in the order given."""
    if not isinstance(phrases, list):
        raise RuleInvalid("phrases: expected a list of text")
    wanted: dict[str, None] = {}
    for i, phrase in enumerate(phrases):
        try:
            wanted[display_phrase(phrase)] = None
        except ValueError as exc:
            raise RuleInvalid(f"phrases[{i}]: {exc}") from None
    if not wanted:
        raise RuleInvalid("phrases: keep at least one phrase; urgent triage cannot be turned off")
    return list(wanted)


def check_setting(key: object, value: object) -> None:
    """Validate a hub setting; known keys get their own checks, any key must be plain JSON."""
    if not isinstance(key, str) or len(key) > 120 or not SETTING_KEY.match(key):
        raise RuleInvalid(f"key: expected a dotted lower-case name like triage.reply, got {key!r}")
    if key == TRIAGE_REPLY_SETTING:
        # One text (the clinic default language's) or texts by language, {"es": "..."}.
        texts = value if isinstance(value, dict) else {"": value}
        if not texts:
            raise RuleInvalid(f"{key}: expected the text of the emergency reply")
        for lang, text in texts.items():
            where = f"{key}.{lang}" if lang else key
            if lang and language_tag(lang) != lang:
                raise RuleInvalid(f"{where}: expected a language code like en, es or zh-Hant")
            if not isinstance(text, str) or not text.strip():
                raise RuleInvalid(f"{where}: expected the non-empty text of the emergency reply")
            if len(text) > MAX_REPLY_LENGTH:
                raise RuleInvalid(f"{where}: at most {MAX_REPLY_LENGTH} characters")
            if (problem := template_problem(text)) is not None:
                raise RuleInvalid(f"{where}: {problem}")
    plain_json({"value": value}, key)


def matches(conditions: Conditions, facts: Facts) -> bool:
    """Whether every set condition holds; cheap checks first, the regex last."""
    c = conditions
    if c.channel is not None and facts.channel not in c.channel:
        return False
    if c.patient_is_new is not None and facts.patient_is_new is not c.patient_is_new:
        return False
    if c.business_hours is not None and facts.team_open is not (c.business_hours == "open"):
        return False
    if c.patient_tags_any is not None and not (c.patient_tags_any & facts.patient_tags):
        return False
    if c.patient_language is not None:
        language = facts.patient_language.casefold()
        if language not in c.patient_language and language.split("-")[0] not in (
            c.patient_language
        ):
            return False
    if c.body_keywords is not None and c.body_keywords.find(facts.body) is None:
        return False
    return not (
        c.body_regex is not None and c.body_regex.search(facts.body[:MAX_REGEX_BODY]) is None
    )


@functools.lru_cache(maxsize=256)
def _template(text: str) -> jinja2.Template:
    return _ENV.from_string(text)


def render_reply(text: str, *, first_name: str, clinic_name: str) -> str:
    """Fill an auto-reply's placeholders in the sandbox; raises ReplyNotRendered."""
    try:
        rendered = _template(text).render(first_name=first_name, clinic_name=clinic_name)
    except jinja2.TemplateError as exc:
        raise ReplyNotRendered(f"auto-reply could not be rendered: {exc}") from None
    if not rendered.strip():
        raise ReplyNotRendered("auto-reply rendered to empty text")
    return rendered.strip()
