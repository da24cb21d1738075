"""Bounds on what one template render may build, so a template saved by an admin (or a stolen
admin session) cannot exhaust a worker's memory or hold it in a loop.

Jinja's sandbox stops attribute tricks but not size: ``'x' * 10**9``, ``10**10**9``, a
``namespace`` value doubled in a loop, a filter given a width of a billion, nested loops over a
long range. The sandbox here refuses each before it allocates, counts the steps a render takes
(loop iterations and calls) and the characters it outputs, and stops at the first bound passed
with RenderTooLarge, naming the problem (never a value).

Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.utils import Namespace, generate_lorem_ipsum

DEFAULT_MAX_RENDER_CHARS = 200_000
"""Largest text one template part may output, and largest string or list an expression in it
may build (an email's HTML is tens of KB; mail clients clip messages past about 100 KB)."""
DEFAULT_MAX_RENDER_STEPS = 20_000
"""Most loop iterations and calls one render may take: a message loops over a few items."""
DEFAULT_MAX_POWER_BITS = 4_096
"""Largest number, in bits, that ``**`` may compute (a 1,233-digit number; a message needs
nothing near it, and ``10**10**9`` would hold the worker for minutes)."""
COUNTED_FILTER = "_counted"
"""The filter every ``for`` loop's sequence is passed through, to count its iterations."""

_SPEC_NUMBERS = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d*))?|\{[^{}]*:[^{}\d]*(\d+)(?:\.(\d+))?")


class RenderTooLarge(jinja2.TemplateRuntimeError):
    """A render passed one of the bounds; the message names which and where, never values."""


@dataclass
class _Budget:
    steps: int = 0
    chars: int = 0


_budget: ContextVar[_Budget | None] = ContextVar("template_render_budget", default=None)


@contextlib.contextmanager
def render_budget() -> Iterator[None]:
    """Count the steps and output of the renders inside (one template part)."""
    token = _budget.set(_Budget())
    try:
        yield
    finally:
        _budget.reset(token)


def _step() -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps > DEFAULT_MAX_RENDER_STEPS:
        raise RenderTooLarge(
            f"takes more than {DEFAULT_MAX_RENDER_STEPS:,} loop steps and calls to render"
        )


def count_output(chars: int) -> None:
    """Add text a render produced (top-level output and every ``{{ }}``, even inside a block
    that is captured rather than output) to its total; refuse past the bound."""
    budget = _budget.get()
    if budget is None:
        return
    budget.chars += chars
    if budget.chars > DEFAULT_MAX_RENDER_CHARS:
        raise RenderTooLarge(f"renders more than {DEFAULT_MAX_RENDER_CHARS:,} characters")


def check_size(size: int, what: str) -> None:
    if size > DEFAULT_MAX_RENDER_CHARS:
        raise RenderTooLarge(
            f"{what} would make {size:,} characters or items, over the limit of "
            f"{DEFAULT_MAX_RENDER_CHARS:,}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sized(value: Any) -> bool:
    return isinstance(value, (str, list, tuple))


def weight(value: Any) -> int:
    """Characters and items in a value, lists counted with what they hold (``[s] * 1000`` is
    a thousand times ``s``); stops counting once past the bound, so shared nesting is cheap."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, (list, tuple)):
        return 0
    total = len(value)
    for item in value:
        if total > DEFAULT_MAX_RENDER_CHARS:
            break
        total += weight(item)
    return total


def _check_format(text: str, what: str) -> None:
    # A width or precision is how "%999999999s" or "{:>999999999}" builds a huge string.
    for match in _SPEC_NUMBERS.finditer(text):
        for number in match.groups():
            if number and int(number) > DEFAULT_MAX_RENDER_CHARS:
                check_size(int(number), what)


def check_binop(op: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would pass a bound, before computing it."""
    if op == "*":
        if _sized(left) and _is_int(right):
            check_size(weight(left) * right, "repeating text or a list")
        elif _sized(right) and _is_int(left):
            check_size(weight(right) * left, "repeating text or a list")
    elif op == "+" and _sized(left) and _sized(right):
        check_size(weight(left) + weight(right), "joining text or lists")
    elif op == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        if right * math.log2(abs(left)) > DEFAULT_MAX_POWER_BITS:
            raise RenderTooLarge(
                f"a power would make a number over {DEFAULT_MAX_POWER_BITS:,} bits long"
            )
    elif op == "%" and isinstance(left, str):
        _check_format(left, "formatting text")
        args = right if isinstance(right, tuple) else (right,)
        check_arguments("formatting text", args, {})


def check_arguments(what: str, args: Iterable[Any], kwargs: dict[str, Any]) -> None:
    """A number handed to a filter or method is a width, a count or a length: bound it."""
    for value in (*args, *kwargs.values()):
        if _is_int(value) and abs(value) > DEFAULT_MAX_RENDER_CHARS:
            check_size(abs(value), what)


def _check_text_call(name: str, text: str, args: tuple[Any, ...], what: str) -> None:
    """Methods and filters on text whose result can be far longer than their inputs."""
    if name in ("format", "format_map"):
        _check_format(text, what)
    elif name == "replace" and len(args) >= 2:
        check_size(len(text) + text.count(str(args[0])) * len(str(args[1])), what)
    elif name in ("indent", "wordwrap"):
        # Each line (at most one per character) may gain the longest text argument.
        longest = max((len(a) for a in args if isinstance(a, str)), default=0)
        check_size(len(text) * (1 + longest), what)


def _check_result(what: str, value: Any) -> Any:
    check_size(weight(value), what)
    return value


def check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Before a template calls a function or method (``'x'.ljust(n)``, a macro): one step,
    and its arguments bounded."""
    _step()
    inner = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    name = getattr(inner, "__name__", "a call")
    what = f"{name}()"
    check_arguments(what, args, kwargs)
    target = getattr(inner, "__self__", None)
    if isinstance(target, str):
        if name == "join" and args:
            check_size(len(target) * _count(args[0]) + weight(args[0]), what)
        _check_text_call(name, target, args, what)


def _count(value: Any) -> int:
    return len(value) if isinstance(value, Sized) else 0


def bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose arguments and result are bounded like a method call's."""
    pass_arg = getattr(func, "jinja_pass_arg", None)
    what = f"the {name} filter"

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        rest = args[1:] if pass_arg is not None else args
        value, params = (rest[0], tuple(rest[1:])) if rest else (None, ())
        check_arguments(what, params, kwargs)
        if name == "join":
            joiner = str(params[0] if params else kwargs.get("d", ""))
            check_size(len(joiner) * _count(value) + weight(value), what)
        if isinstance(value, str):
            _check_text_call(name, value, (*params, *kwargs.values()), what)
        return _check_result(what, func(*args, **kwargs))

    return wrapper


def counted(sequence: Any) -> Iterator[Any]:
    """The ``_counted`` filter: each iteration of a loop is a step."""
    for item in sequence:
        _step()
        yield item


def bounded_join(text: Any) -> Any:
    """``a ~ b``: the joined text must stay within the bound (its parts already are)."""
    return _check_result("joining text with ~", text)


def lipsum(*args: Any, **kwargs: Any) -> Any:
    """Jinja's ``lipsum(n=5, html=True, min=20, max=100)``, within the bound (no message needs
    it, but an existing template may use it as filler)."""
    names = ("n", "html", "min", "max")
    given = {**dict(zip(names, args, strict=False)), **kwargs}
    paragraphs, words = given.get("n", 5), given.get("max", 100)
    if _is_int(paragraphs) and _is_int(words):
        check_size(paragraphs * words * 12, "lipsum()")  # 12: a long Latin word and a space
    return generate_lorem_ipsum(*args, **kwargs)


class BoundedNamespace(Namespace):
    """``namespace()``, whose values must stay within the bound: it is the one place a value can
    grow from one loop iteration to the next."""

    def __setitem__(self, name: str, value: Any) -> None:
        _check_result("a namespace value", value)
        super().__setitem__(name, value)


class BoundedCodeGenerator(CodeGenerator):
    """Routes ``~`` joins, ``for`` sequences and the template's own text through the checks
    above; Jinja compiles them to plain Python the sandbox never sees."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(
                loop.iter, COUNTED_FILTER, [], [], None, None, lineno=loop.iter.lineno
            )
        super().visit_Template(node, frame)

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.counted_text({super()._output_const_repr(group)})"

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join(")
        super().visit_Concat(node, frame)
        self.write(")")


BINOPS = frozenset({"*", "**", "+", "%"})
"""Operators the sandbox hands to check_binop before applying."""
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul,
    "**": operator.pow,
    "+": operator.add,
    "%": operator.mod,
}


def check_output(total: int) -> None:
    """The text a template part outputs, counted as it is generated."""
    if total > DEFAULT_MAX_RENDER_CHARS:
        raise RenderTooLarge(f"renders more than {DEFAULT_MAX_RENDER_CHARS:,} characters")


def counted_text(text: str) -> str:
    """The template's own text as it is output: in a loop inside a captured block it is as
    much output as a ``{{ }}``."""
    count_output(len(text))
    return text


def finalize(value: Any) -> Any:
    """Jinja's hook on every ``{{ }}``: counts text produced even where it is captured."""
    if isinstance(value, str):
        count_output(len(value))
    return value
