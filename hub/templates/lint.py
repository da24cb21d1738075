"""Checks on a template's text when it is saved.

``check_for_save`` refuses what would fail sends later: a variable its key does not declare
(``patient.frist_name``), a filter or test Jinja does not have, and an optional variable used
as if every send had it (it renders the text with each optional variable missing, using the
same declaration the senders render with). ``lint_variant`` only warns, saving still works:
clinical details on a channel others may read or hear (by variable name, and by the words of
the text against a clinical-terms list the clinic can extend), SMS length and encoding.

Pure: no I/O. Messages name variables, filters, terms and lines, never rendered values.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

import jinja2
from jinja2 import nodes

from hub.templates import TemplateInvalid, TemplateRenderError
from hub.templates.limits import DEFAULT_MAX_POWER_BITS, DEFAULT_MAX_RENDER_CHARS
from hub.templates.render import (
    HTML_ENV,
    TEXT_ENV,
    VariantText,
    check_variant,
    render_variant,
    variables_used,
)
from hub.templates.segments import non_gsm_characters, segment_info
from hub.templates.variables import RENDERING, Declared, declared_for

DEFAULT_MAX_SMS_SEGMENTS = 3
"""Above this many segments an SMS draws a lint warning (each segment is billed and may arrive
out of order on older phones)."""
SENSITIVE_FIELDS = frozenset({"appointment.reason", "patient.conditions", "patient.medications"})
"""Variable paths holding clinical details, which must not be sent by SMS or read out by voice."""
SENSITIVE_NAMES = frozenset(
    {"diagnosis", "diagnoses", "medication", "medications", "lab", "labs", "lab_results"}
)
"""Variable names that are clinical wherever they appear in a path."""
INSECURE_CHANNELS = frozenset({"sms", "voice"})
"""Channels where a message may be read or heard by someone other than the patient."""
CLINICAL_TERMS_SETTING = "templates.clinical_terms"
"""Hub setting: the clinic's own terms, added to DEFAULT_CLINICAL_TERMS (a JSON list)."""
MAX_CLINICAL_TERMS = 500
"""Most terms a clinic may add (each one is a pattern tried on every save)."""
MAX_TERM_LENGTH = 60
DEFAULT_CLINICAL_TERMS = (
    # Diagnoses and conditions
    "HIV", "VIH", "STD", "STI", "chlamydia", "clamidia", "gonorrhea", "gonorrea", "syphilis",
    "sífilis", "herpes", "HPV", "VPH", "hepatitis", "tuberculosis", "cancer", "cáncer", "tumor",
    "tumour", "diabetes", "dementia", "depression", "bipolar", "schizophrenia", "psychosis",
    "eating disorder", "overdose", "substance use", "addiction", "miscarriage", "abortion",
    "pregnancy", "pregnant", "embarazo", "embarazada", "diagnosis", "diagnosed", "diagnóstico",
    # Tests and results
    "positive", "negative", "test result", "test results", "lab", "labs", "lab results",
    "resultados", "biopsy", "biopsia", "pregnancy test", "prueba de embarazo", "A1C", "HbA1c",
    "PSA", "pap smear", "mammogram", "colonoscopy", "genetic test", "viral load",
    # Treatments and medications
    "chemotherapy", "chemo", "quimioterapia", "radiation therapy", "dialysis", "oncology",
    "oncología", "psychiatry", "psychiatric", "rehab", "methadone", "buprenorphine",
    "suboxone", "naloxone", "metformin", "insulin", "sertraline", "fluoxetine", "lithium",
    "antidepressant", "antidepressants", "antiretroviral", "PEP", "IVF", "fertility",
    "prenatal", "vasectomy",
)  # fmt: skip
"""Words and phrases that disclose a diagnosis, a test or a treatment when a text is read on a
lock screen or heard by whoever answers the phone. Matched as whole words, any case."""

_FORM_GLOBALS = frozenset({"loop", "super", "caller", "varargs", "kwargs"})


@dataclass(frozen=True)
class _Use:
    path: str
    line: int


def clinical_terms(extra: Iterable[str] | None) -> tuple[str, ...]:
    """The shipped terms plus the clinic's, without duplicates (compared case-insensitively)."""
    seen: dict[str, str] = {}
    for term in (*DEFAULT_CLINICAL_TERMS, *(extra or ())):
        cleaned = " ".join(str(term).split())
        if cleaned:
            seen.setdefault(cleaned.casefold(), cleaned)
    return tuple(seen.values())


def check_terms(value: object) -> list[str]:
    """The clinic's term list as stored; raises TemplateInvalid naming what is wrong."""
    if isinstance(value, str):
        value = [t for t in re.split(r"[\n,;]", value)]
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise TemplateInvalid("clinical terms: expected a list of words or phrases")
    terms = list(dict.fromkeys(" ".join(t.split()) for t in value if t.strip()))
    if len(terms) > MAX_CLINICAL_TERMS:
        raise TemplateInvalid(f"clinical terms: at most {MAX_CLINICAL_TERMS} terms")
    for term in terms:
        if len(term) > MAX_TERM_LENGTH:
            raise TemplateInvalid(
                f"clinical terms: {term[:20]!r}… is longer than {MAX_TERM_LENGTH}"
            )
        if not any(ch.isalnum() for ch in term):
            raise TemplateInvalid(f"clinical terms: {term!r} has no letters or digits")
    return terms


def _term_pattern(term: str) -> str:
    words = (re.escape(w) for w in term.split())
    # Lookarounds instead of \b: a term may start or end with a non-word character ("A1C+").
    return r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"


def _matcher(terms: Collection[str]) -> re.Pattern[str]:
    longest_first = sorted(terms, key=len, reverse=True)
    return re.compile("|".join(_term_pattern(t) for t in longest_first), re.IGNORECASE)


def _literal_text(source: str) -> Iterator[str]:
    """The words a template writes itself: its text between tags and its string constants
    (``| default("...")``), not variable names."""
    tree = TEXT_ENV.parse(source)
    for data in tree.find_all(nodes.TemplateData):
        yield data.data
    for const in tree.find_all(nodes.Const):
        if isinstance(const.value, str):
            yield const.value


def clinical_words(source: str, terms: Collection[str]) -> list[str]:
    """The clinical terms the template's own words contain, as written, in order, once each."""
    if not terms:
        return []
    pattern = _matcher(terms)
    found: dict[str, str] = {}
    for text in _literal_text(source):
        for match in pattern.finditer(unicodedata.normalize("NFKC", text)):
            written = " ".join(match.group(0).split())
            found.setdefault(written.casefold(), written)
    return list(found.values())


def is_sensitive(path: str) -> bool:
    parts = path.split(".")
    prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
    return bool(prefixes & SENSITIVE_FIELDS) or any(p in SENSITIVE_NAMES for p in parts)


def lint_variant(
    template_key: str,
    channel: str,
    text: str,
    *,
    rendered: str | None = None,
    max_segments: int = DEFAULT_MAX_SMS_SEGMENTS,
    terms: Collection[str] = DEFAULT_CLINICAL_TERMS,
) -> list[str]:
    """Warnings about a variant's text (saving still works): clinical details on an insecure
    channel, by variable name or by the text's own words (``terms``); an SMS longer than
    ``max_segments`` (measured on ``rendered`` when given, else on the template text) or
    written with characters that force UCS-2."""
    try:
        used = variables_used(text)
        words = clinical_words(text, terms) if channel in INSECURE_CHANNELS else []
    except jinja2.TemplateSyntaxError as exc:
        return [f"{template_key} ({channel}): template error on line {exc.lineno}: {exc.message}"]
    warnings = []
    sensitive = sorted(p for p in used if is_sensitive(p))
    if channel in INSECURE_CHANNELS and sensitive:
        warnings.append(
            f"{template_key} ({channel}) uses {', '.join(sensitive)}: {channel} is not a secure "
            "channel, so leave clinical details out and ask the patient to call or sign in"
        )
    if words:
        quoted = ", ".join(f'"{w}"' for w in words)
        warnings.append(
            f"{template_key} ({channel}) mentions {quoted}: {channel} is not a secure channel "
            "(a lock screen or whoever answers may see or hear it), so leave clinical details "
            "out and ask the patient to call or sign in"
        )
    if channel == "sms":
        info = segment_info(rendered if rendered is not None else text)
        if info.segments > max_segments:
            warnings.append(
                f"{template_key} (sms) is {info}, more than {max_segments}: shorten it, each "
                "segment is billed"
            )
        outside = non_gsm_characters(text)
        if outside:
            warnings.append(
                f"{template_key} (sms) contains {' '.join(outside)}, outside GSM-7: every "
                "segment then holds 67 characters instead of 153"
            )
    return warnings


# --- the save check ---------------------------------------------------------------------


def _chain(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _chain(node.node)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _chain(node.node)
        return None if base is None else f"{base}.{node.arg.value}"
    return None


def _uses(tree: nodes.Template) -> tuple[list[_Use], set[str]]:
    """Outermost variable paths read, with their line, and the names the template assigns
    itself (``{% set %}``, loop targets, macro arguments)."""
    local = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    uses: list[_Use] = []
    inner: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) in inner:
            continue
        path = _chain(node)
        if path is None or (isinstance(node, nodes.Name) and node.ctx != "load"):
            continue
        # The chain's own inner nodes are prefixes of this path: checked through it.
        child = node
        while isinstance(child, (nodes.Getattr, nodes.Getitem)):
            child = child.node
            inner.add(id(child))
        uses.append(_Use(path, node.lineno))
    return uses, local


def _known(path: str, declared: frozenset[str]) -> bool:
    if path in declared or path in RENDERING:
        return True
    # A group ("appointment is defined") or an attribute of a declared value (a str method).
    return any(d.startswith(path + ".") or path.startswith(d + ".") for d in declared)


def _unknown_variables(
    key: str, part: str, tree: nodes.Template, declared: Declared, env: jinja2.Environment
) -> None:
    uses, local = _uses(tree)
    paths = declared.paths
    for use in sorted(uses, key=lambda u: u.line):
        root = use.path.split(".", 1)[0]
        if root in local or root in _FORM_GLOBALS or root in env.globals:
            continue
        if _known(use.path, paths):
            continue
        close = difflib.get_close_matches(use.path, sorted(paths), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise TemplateInvalid(
            f"the {part}, line {use.line}: {use.path} is not a variable of {key}{hint}; "
            f"its sends provide {', '.join(sorted(paths))}",
            name=use.path,
            line=use.line,
            part=part,
        )


def _unknown_filters(part: str, tree: nodes.Template, env: jinja2.Environment) -> None:
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        kind, known = (
            ("filter", env.filters) if isinstance(node, nodes.Filter) else ("test", env.tests)
        )
        if node.name in known:
            continue
        close = difflib.get_close_matches(node.name, sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise TemplateInvalid(
            f"the {part}, line {node.lineno}: there is no {kind} named {node.name!r}{hint}",
            name=node.name,
            line=node.lineno,
            part=part,
        )


def _literal_int(node: nodes.Node) -> int | None:
    """The value of a whole-number literal (``10**9`` included), or None. A power past the
    bound counts as just past it: enough to refuse, without computing it."""
    if isinstance(node, nodes.Const) and type(node.value) is int:
        return node.value
    if isinstance(node, nodes.Neg):
        inner = _literal_int(node.node)
        return None if inner is None else -inner
    if isinstance(node, (nodes.Mul, nodes.Pow)):
        left, right = _literal_int(node.left), _literal_int(node.right)
        if left is None or right is None:
            return None
        if isinstance(node, nodes.Mul):
            return left * right
        if right < 0 or abs(left) < 2:
            return None
        if right * math.log2(abs(left)) > DEFAULT_MAX_POWER_BITS:
            return 1 << DEFAULT_MAX_POWER_BITS
        return int(left**right)
    return None


def _literal_size(node: nodes.Node) -> int | None:
    """Characters of a text literal, items of a list literal, or what a literal repetition of
    one makes."""
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return len(node.value)
    if isinstance(node, (nodes.List, nodes.Tuple)):
        return len(node.items)
    if isinstance(node, nodes.Mul):
        for sized, count in ((node.left, node.right), (node.right, node.left)):
            size, times = _literal_size(sized), _literal_int(count)
            if size is not None and times is not None:
                return size * times
    return None


def _huge_literals(part: str, tree: nodes.Template) -> None:
    """Refuse a literal repetition or power past the render bounds wherever it is written,
    even in a branch the trial renders do not take (``'x' * 10**9``)."""
    for node in tree.find_all((nodes.Mul, nodes.Pow)):
        size = _literal_size(node) if isinstance(node, nodes.Mul) else None
        if size is not None and size > DEFAULT_MAX_RENDER_CHARS:
            raise TemplateInvalid(
                f"the {part}, line {node.lineno}: this repetition makes {size:,} characters or "
                f"items; a template may render at most {DEFAULT_MAX_RENDER_CHARS:,}",
                line=node.lineno,
                part=part,
            )
        number = _literal_int(node)
        if number is not None and abs(number).bit_length() > DEFAULT_MAX_POWER_BITS:
            raise TemplateInvalid(
                f"the {part}, line {node.lineno}: this number is over "
                f"{DEFAULT_MAX_POWER_BITS:,} bits long",
                line=node.lineno,
                part=part,
            )


def _trial_renders(text: VariantText, declared: Declared) -> None:
    """Render with every variable, with every optional one missing, and with each missing
    alone: what a send may meet. The first failure is the reason the text is refused."""
    optional = declared.optional
    trials = [frozenset(), frozenset(optional), *(frozenset({p}) for p in optional)]
    for missing in dict.fromkeys(trials):
        try:
            render_variant(text, declared.sample(missing))
        except TemplateRenderError as exc:
            raise _refusal(exc, missing) from None


def _refusal(exc: TemplateRenderError, missing: frozenset[str]) -> TemplateInvalid:
    problem = str(exc).split(") ", 1)[-1]
    where = f"line {exc.line}: " if exc.line else ""
    if exc.missing and exc.missing in missing:
        path = exc.missing
        return TemplateInvalid(
            f"{where}{path} is not known for every send (it may be missing), and the text "
            f"fails without it: write {{% if {path} is defined %}}…{{% endif %}} or "
            f'{{{{ {path} | default("…") }}}}',
            name=path,
            line=exc.line,
        )
    if missing:
        listed = ", ".join(sorted(missing))
        return TemplateInvalid(f"{where}without {listed} (a send may lack it) the text {problem}")
    return TemplateInvalid(f"{where}the text {problem}", name=exc.missing, line=exc.line)


def check_for_save(
    key: str, channel: str, locale: str, subject: str | None, body: str, html: str | None
) -> None:
    """Raise TemplateInvalid, naming the variable, filter or test and its line, when a variant
    cannot be saved: missing parts, bad syntax, a variable its key's sends do not provide, an
    unknown filter or test, or a failure when an optional variable is missing."""
    check_variant(channel, subject, body, html)
    declared = declared_for(key)
    for part, source in (("subject", subject), ("text", body), ("HTML", html)):
        if source is None:
            continue
        env = HTML_ENV if part == "HTML" else TEXT_ENV
        tree = env.parse(source)
        _unknown_filters(part, tree, env)
        _huge_literals(part, tree)
        _unknown_variables(key, part, tree, declared, env)
    _trial_renders(VariantText(key, channel, locale, body, subject, html), declared)
