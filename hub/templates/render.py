"""Rendering message templates: the sandbox, date filters, errors that name what is missing.

Templates are Jinja2 run in an immutable sandbox with strict undefined: a variable the context
does not have (or holds as ``None``) is an error, never a blank, so a send fails with a reason
instead of going out as "Your appointment is on  at ". ``{{ x | default("...") }}`` and
``{% if x is defined %}`` are how a template says a variable is optional.

Pure: no I/O. Error messages name templates, channels, locales, variable paths and types, never
the values, so they can be stored as a send's failure reason and logged.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, match_skeleton
from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from hub.templates import TemplateInvalid, TemplateRenderError, limits
from hub.templates.variables import DECLARED

log = logging.getLogger(__name__)

DEFAULT_LOCALE = "en"
"""The clinic's default locale: the last fallback when a patient's language has no variant."""
# Babel's CLDR data puts narrow no-break spaces in times ("10:00\u202fAM"); outside GSM-7 they
# would turn an SMS into UCS-2 and halve its room, for no visible difference.
_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " ", "\u2009": " "})
_AT_TIME = {"en": "{1} 'at' {0}"}
"""Date-and-time joiners where CLDR's default ("{1}, {0}") reads worse in a sentence."""


class MissingVariable(jinja2.UndefinedError):
    """Raised by the sandbox when a template uses a variable it was not given."""


class _FormatProblem(jinja2.TemplateRuntimeError):
    """A filter could not format its value (the message names types, never values)."""


_JINJA_PROBES = frozenset({"jinja_pass_arg", "unsafe_callable", "alters_data"})
"""Attributes Jinja looks up on any object it calls; not variables a template uses."""


class _Missing(StrictUndefined):
    """Strict undefined that knows its dotted path (``appointment.start``), for the message."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[jinja2.TemplateRuntimeError] = jinja2.UndefinedError,
    ) -> None:
        super().__init__(hint, obj, name, MissingVariable if exc is jinja2.UndefinedError else exc)

    @property
    def _path(self) -> str:
        name = str(self._undefined_name)
        if isinstance(self._undefined_obj, _Scope):
            return f"{self._undefined_obj._path}.{name}"
        if self._undefined_obj is missing:
            return name
        return f"<{type(self._undefined_obj).__name__}>.{name}"

    @property
    def _undefined_message(self) -> str:
        return self._undefined_hint or self._path

    def __getattr__(self, name: str) -> Any:
        # `appointment.start` with no appointment reports the full path, not just "appointment".
        if name[:2] == "__" or name in _JINJA_PROBES:
            raise AttributeError(name)
        if self._undefined_hint:
            return self._fail_with_undefined_error()
        return _Missing(name=f"{self._path}.{name}")

    def __getitem__(self, key: Any) -> Any:
        name = str(key)
        if self._undefined_hint or name[:2] == "__":
            return self._fail_with_undefined_error()
        return self.__getattr__(name)


class _Scope:
    """A group of variables (``patient``, ``clinic``...): attribute access only, no dict methods
    to shadow a variable named ``items`` or ``keys``, and it knows its path for messages."""

    __slots__ = ("_path", "_values")

    def __init__(self, path: str, values: dict[str, Any]) -> None:
        self._path = path
        self._values = values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __str__(self) -> str:
        raise jinja2.TemplateRuntimeError(
            f"{self._path} is a group of variables; use one of them, such as {self._path}.name"
        )

    def __repr__(self) -> str:
        return f"_Scope({self._path})"


_LEAF_TYPES = frozenset({str, int, float, bool, datetime, date})
"""Types of most context values: never mappings, so they skip the costly ABC check."""


def _scoped(value: Any, path: str) -> Any:
    """Mappings become scopes; ``None`` values are left out, so using them is an error."""
    kind = type(value)
    if kind is dict or (kind not in _LEAF_TYPES and isinstance(value, Mapping)):
        return _Scope(
            path,
            {str(k): _scoped(v, f"{path}.{k}") for k, v in value.items() if v is not None},
        )
    return value


@functools.lru_cache(maxsize=64)
def babel_locale(tag: str) -> Locale:
    """The Babel locale for a BCP 47 tag ("es-MX"); the default locale when Babel has none."""
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return Locale.parse(DEFAULT_LOCALE)


def format_locale(patient_language: str | None, variant_locale: str) -> str:
    """Dates follow the variant's language (an English text gets English month names), with
    the patient's regional conventions when they speak that language ("en-GB": 26 November)."""
    if patient_language and babel_locale(patient_language).language == (
        babel_locale(variant_locale).language
    ):
        return patient_language
    return variant_locale


def _widen(pattern: str) -> str:
    """Spell out weekday and month names ("Thursday, November 26"), leaving quoted text alone."""
    parts = pattern.split("'")
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"(?<![ML])(MMM|LLL)(?![ML])", r"\1M", re.sub(r"E+", "EEEE", parts[i]))
    return "'".join(parts)


@functools.lru_cache(maxsize=64)
def _patterns(tag: str) -> dict[str, str]:
    loc = babel_locale(tag)
    skeletons = loc.datetime_skeletons
    best = match_skeleton("MMMMEEEEd", skeletons) or "MMMEd"
    day = _widen(str(skeletons[best].pattern)) if best in skeletons else "EEEE, MMMM d"
    time = str(loc.time_formats["short"].pattern)
    joiner = _AT_TIME.get(loc.language) or str(loc.datetime_formats["full"])
    return {"date": day, "time": time, "datetime": joiner.replace("{1}", day).replace("{0}", time)}


def _format(ctx: Context, value: Any, kind: str, fmt: str | None) -> str:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # names the variable, as printing it would
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _FormatProblem(f"the {kind} filter needs a date and time; got text") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _FormatProblem(f"the {kind} filter needs a date and time with a time zone")
    elif not (kind == "date" and isinstance(value, date)):
        raise _FormatProblem(f"the {kind} filter needs a date and time; got {type(value).__name__}")
    tz_name, tag = ctx.get("tz"), ctx.get("locale")
    if not isinstance(tz_name, str):
        raise MissingVariable("tz")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _FormatProblem("the tz variable is not a known IANA time zone") from None
    loc = babel_locale(tag if isinstance(tag, str) else DEFAULT_LOCALE)
    if fmt is None:
        pattern = _patterns(str(loc))[kind]
    elif fmt in ("short", "medium", "long", "full"):
        day, time = str(loc.date_formats[fmt].pattern), str(loc.time_formats[fmt].pattern)
        joined = str(loc.datetime_formats[fmt]).replace("{1}", day).replace("{0}", time)
        pattern = {"date": day, "time": time, "datetime": joined}[kind]
    else:
        pattern = fmt
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, 12, tzinfo=tz)
    # Keyed on exactly what Babel reads (the wall time, its zone and fold), not on the instant:
    # a time given in the target zone is printed as given, even in a DST gap.
    return _formatted(value.replace(tzinfo=None), value.tzinfo, value.fold, tz_name, loc, pattern)


@functools.lru_cache(maxsize=1024)
def _formatted(
    wall: datetime, zone: Any, fold: int, tz_name: str, loc: Locale, pattern: str
) -> str:
    """Babel's formatting, remembered: a batch of reminders repeats a few appointment slots,
    and each call costs more than the rest of a render."""
    value = wall.replace(tzinfo=zone, fold=fold)
    return format_datetime(value, pattern, tzinfo=ZoneInfo(tz_name), locale=loc).translate(_SPACES)


@pass_context
def _date(ctx: Context, value: Any, fmt: str | None = None) -> str:
    return _format(ctx, value, "date", fmt)


@pass_context
def _time(ctx: Context, value: Any, fmt: str | None = None) -> str:
    return _format(ctx, value, "time", fmt)


@pass_context
def _datetime(ctx: Context, value: Any, fmt: str | None = None) -> str:
    return _format(ctx, value, "datetime", fmt)


class _Sandbox(ImmutableSandboxedEnvironment):
    # Size is the sandbox's blind spot: see hub.templates.limits for what each hook bounds.
    intercepted_binops = limits.BINOPS
    code_generator_class = limits.BoundedCodeGenerator
    bounded_join = staticmethod(limits.bounded_join)
    counted_text = staticmethod(limits.counted_text)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        limits.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        limits.check_call(obj, args, kwargs)
        return super().call(context, obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Most lookups in a message are a variable of a group (patient.first_name): answer
        # them from the group's values. The generic path would probe the object and run the
        # safety checks, which never refuse a public name of a _Scope (it has no methods).
        if type(obj) is _Scope and attribute[:1] != "_":
            try:
                value = obj._values[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
            fmt = self.wrap_str_format(value)
            return value if fmt is None else fmt
        return super().getattr(obj, attribute)


def _environment(*, html: bool) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        undefined=_Missing,
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=limits.finalize,
    )
    env.filters.update(date=_date, time=_time, datetime=_datetime)
    env.filters = {name: limits.bounded_filter(name, f) for name, f in env.filters.items()}
    env.filters[limits.COUNTED_FILTER] = limits.counted
    env.globals["namespace"] = limits.BoundedNamespace
    env.globals["lipsum"] = limits.lipsum
    return env


TEXT_ENV = _environment(html=False)
"""For SMS, chat, voice, email subjects and email text: nothing is escaped."""
HTML_ENV = _environment(html=True)
"""For email HTML: every value is HTML-escaped unless a template marks it safe."""


@functools.lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> jinja2.Template:
    return (HTML_ENV if html else TEXT_ENV).from_string(source)


@dataclass(frozen=True)
class VariantText:
    """One variant's template text, as render_variant needs it (models convert to this)."""

    key: str
    channel: str
    locale: str
    body: str
    subject: str | None = None
    html: str | None = None


@dataclass(frozen=True)
class Rendered:
    """A rendered message. Holds PHI (the patient's name at least): never log it."""

    body: str
    subject: str | None = None
    html: str | None = None

    def __repr__(self) -> str:
        return f"Rendered(body=<{len(self.body)} chars>)"


def _template_line(tb: TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render_part(variant: VariantText, part: str, source: str, values: dict[str, Any]) -> str:
    def fail(problem: str, **extra: Any) -> TemplateRenderError:
        return TemplateRenderError(variant.key, variant.channel, variant.locale, problem, **extra)

    try:
        with limits.render_budget():
            chunks, total = [], 0
            for chunk in _compile(source, part == "html").generate(values):
                total += len(chunk)
                limits.check_output(total)
                chunks.append(chunk)
            return "".join(chunks)
    except jinja2.TemplateSyntaxError as exc:
        raise fail(
            f"has a syntax error in its {part} on line {exc.lineno}: {exc.message}"
        ) from None
    except MissingVariable as exc:
        path = str(exc)
        line = _template_line(exc.__traceback__)
        raise fail(
            f"needs {path}, which this send does not have", missing=path, line=line
        ) from None
    except (SecurityError, jinja2.TemplateError) as exc:
        line = _template_line(exc.__traceback__)
        raise fail(f"failed in its {part} on line {line}: {exc}", line=line) from None
    except RecursionError:
        raise fail(f"calls a macro within itself too deeply in its {part}") from None
    except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
        # Python's own messages may quote the values (PHI): name the kind of error only.
        line = _template_line(exc.__traceback__)
        raise fail(
            f"failed in its {part} on line {line} ({type(exc).__name__})", line=line
        ) from None


def render_variant(variant: VariantText, context: Mapping[str, Any]) -> Rendered:
    """Render every part of a variant; raises TemplateRenderError naming what went wrong.

    ``context`` is a dict of dicts (see hub.templates.actions.template_context) plus ``tz``
    (IANA zone) and ``locale`` (the patient's language) for the date filters. Only what the
    key declares (hub.templates.variables) reaches the template, as when it was saved.
    """
    declared = DECLARED.get(variant.key)
    given = context if declared is None else declared.keep(context)
    values = {k: _scoped(v, k) for k, v in given.items() if v is not None}
    raw_language = context.get("locale")
    language = raw_language if isinstance(raw_language, str) else None
    values["locale"] = format_locale(language, variant.locale)
    body = _render_part(variant, "body", variant.body, values).strip()
    subject = html = None
    if variant.subject is not None:
        subject = " ".join(_render_part(variant, "subject", variant.subject, values).split())
        if not subject:
            raise TemplateRenderError(
                variant.key, variant.channel, variant.locale, "rendered an empty subject"
            )
    if variant.html is not None:
        html = _render_part(variant, "html", variant.html, values).strip()
    if not body:
        raise TemplateRenderError(
            variant.key, variant.channel, variant.locale, "rendered an empty message"
        )
    return Rendered(body=body, subject=subject, html=html)


def _path(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name if node.ctx == "load" else None
    if isinstance(node, nodes.Getattr):
        base = _path(node.node)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _path(node.node)
        return None if base is None else f"{base}.{node.arg.value}"
    return None


def variables_used(source: str) -> frozenset[str]:
    """Every variable path a template reads ("appointment.start" and its prefix "appointment").

    Raises jinja2.TemplateSyntaxError for text that does not parse.
    """
    tree = TEXT_ENV.parse(source)
    found = (_path(n) for n in tree.find_all((nodes.Name, nodes.Getattr, nodes.Getitem)))
    return frozenset(p for p in found if p is not None)


def check_variant(channel: str, subject: str | None, body: str, html: str | None) -> None:
    """Raise TemplateInvalid when a variant cannot be saved: missing parts or bad syntax."""
    if not body.strip():
        raise TemplateInvalid(f"the {channel} text is empty; write the message to send")
    if channel == "email" and not (subject and subject.strip()):
        raise TemplateInvalid("an email variant needs a subject")
    if channel != "email" and (subject is not None or html is not None):
        raise TemplateInvalid(f"only email variants have a subject and HTML, not {channel}")
    for part, source in (("subject", subject), ("text", body), ("HTML", html)):
        if source is None:
            continue
        try:
            (HTML_ENV if part == "HTML" else TEXT_ENV).parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateInvalid(
                f"the {part} has a template error on line {exc.lineno}: {exc.message}",
                line=exc.lineno,
                part=part,
            ) from None


def log_render_failure(error: TemplateRenderError, *, sender: str) -> None:
    """One warning for a send that failed to render: the template key, channel, locale, the
    variable path and line; never a value (the message itself names paths and types only)."""
    log.warning(
        "template %s (%s, %s) failed to render; nothing was sent",
        error.key,
        error.channel,
        error.locale,
        extra={
            "template": error.key,
            "channel": error.channel,
            "locale": error.locale,
            "variable": error.missing,
            "line": error.line,
            "sender": sender,
        },
    )
