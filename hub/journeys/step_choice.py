"""How a journey step reaches one patient: the channel the consent gate allows, walked in the
step's order, and the template variant in the patient's language. Decided here for both the
dispatch (``hub.journeys.dispatch``, which sends) and the launch dry run
(``hub.journeys.preview``, which only counts), so what a coordinator is warned about at launch
is what the worker later does.

The language rule: a patient is written to in their own language (its variant, else its base
language's: "es-MX", then "es"). A channel whose template has no such variant is passed over
like a refused one, so the step goes on the next channel that has it. When consent would have
allowed a channel but none of them has the language, the step is skipped with the reason
"no vi variant of nps_survey for sms, email" and counted in the funnel's "no translation"
column: a message in a language the patient did not choose is not sent silently. A journey
may name a ``fallback_language``; then such a patient gets that language's variant instead
and the run is counted as "in fallback language".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent import actions as consent
from hub.consent.models import ConsentRecord, Purpose
from hub.consent.policy import CapUsage
from hub.consent.rules import ConsentPolicy
from hub.consent.schemas import ChannelChoice, Decision, Outcome
from hub.enums import Channel
from hub.errors import HubError
from hub.inbox.models import Patient
from hub.journeys.definitions import StepDefinition
from hub.templates import TemplateInvalid
from hub.templates.actions import find_variant, locale_chain, normalize_locale
from hub.templates.render import DEFAULT_LOCALE, VariantText

NO_VARIANT_CODE = "no_variant"
"""Decision code of a channel passed over because its variant is not in the patient's language."""
UNTRANSLATED_PATTERN = "no % variant of % for %"
"""SQL LIKE pattern of a run skipped for want of a variant in the patient's language (the
funnel's "untranslated" column); ``untranslated_reason`` writes reasons of this shape."""
FALLBACK_NOTE = "sent in the fallback language"
"""Written in the reason of a run sent in the journey's fallback language (the funnel's
"fallback" column finds it there)."""
_SHOWN_LANGUAGE = re.compile(r"[A-Za-z0-9_-]{1,20}")


@lru_cache(maxsize=1024)
def own_locales(language: str | None) -> tuple[str, ...] | None:
    """The locales that are the patient's own language, best first ("es-MX" -> es-MX, es);
    None when the patient stated none (any variant will do). A value that is not a language
    tag has no locale of its own: no variant is in it."""
    if not language or not language.strip():
        return None
    try:
        normalize_locale(language)
    except TemplateInvalid:
        return ()
    # The clinic default closes every chain; it is the patient's own only if their tag leads there.
    chain = locale_chain(language, default_locale="und")
    return tuple(c for c in chain if c != "und")


@lru_cache(maxsize=1024)
def language_label(language: str | None) -> str:
    """The patient's language as a coordinator may read it on a screen or in a reason: the
    tag, or "unrecognised" for a value that is not one (it may be text typed by mistake)."""
    if not language:
        return DEFAULT_LOCALE
    try:
        return normalize_locale(language)
    except TemplateInvalid:
        shown = language.strip()
        return f"'{shown}'" if _SHOWN_LANGUAGE.fullmatch(shown) else "unrecognised"


def untranslated_reason(language: str | None, template: str, channels: Iterable[Channel]) -> str:
    """ "no vi variant of nps_survey for sms, email" (shaped as UNTRANSLATED_PATTERN)."""
    names = ", ".join(c.value for c in channels)
    return f"no {language_label(language)} variant of {template} for {names}"


class VariantCache:
    """Variants looked up once per (template, channel, language) within one session: a
    dispatch batch or a dry run meets the same few combinations thousands of times."""

    def __init__(self, session: AsyncSession, fallback_default: str = DEFAULT_LOCALE) -> None:
        self.session, self.fallback_default = session, fallback_default
        self._found: dict[tuple[str, str, str, str], VariantText | HubError] = {}

    async def get(
        self, template: str, channel: Channel, language: str | None, fallback: str | None
    ) -> VariantText | HubError:
        """The variant ``find_variant`` picks (the patient's chain, then ``fallback`` or the
        clinic default), or the error it raised (no such template or channel)."""
        last = fallback or self.fallback_default
        key = (template, channel.value, language or "", last)
        if key not in self._found:
            try:
                self._found[key] = await find_variant(
                    self.session, template, channel.value, language, default_locale=last
                )
            except HubError as exc:
                self._found[key] = exc
        return self._found[key]


@dataclass(frozen=True)
class StepChoice:
    decision: Decision | None
    """The channel to use (allowed, or deferred by quiet hours or caps); None: none may be."""
    passed: tuple[Decision, ...] = ()
    """Each channel before it that was passed over, with the reason, in the step's order."""
    notes: list[str] = field(default_factory=list)
    """``passed`` as ``Decision.summary`` lines, and a fallback-language note."""
    variant: VariantText | HubError | None = None
    """The chosen channel's variant, or the error finding it raised (the send fails with it)."""
    untranslated: str | None = None
    """Set when consent allowed a channel but none had the patient's language: the reason."""
    fallback: str | None = None
    """The journey's fallback locale the variant is in, when it is not the patient's own."""


async def choose_for_step(
    variants: VariantCache,
    patient: Patient,
    step: StepDefinition,
    purpose: Purpose,
    at: datetime,
    *,
    fallback_language: str | None,
    policy: ConsentPolicy,
    available: Iterable[Channel],
    latest: Mapping[Channel, dict[Purpose, ConsentRecord]],
    caps: CapUsage | None,
    excluded: Mapping[Channel, str] | None = None,
) -> StepChoice:
    """The channel and variant of ``step`` for ``patient`` at ``at`` (see the module's rule).
    Pure over what the caller loaded, apart from the variant lookups (cached, read-only)."""
    usable = set(available)
    order = step.channel_order(patient.channels())
    own = own_locales(patient.language)
    found: dict[Channel, VariantText | HubError] = {}
    missing: dict[Channel, Decision] = {}
    for channel in order:
        if channel not in usable or (excluded and channel in excluded):
            continue
        variant = found[channel] = await variants.get(
            step.template, channel, patient.language, fallback_language
        )
        if (
            isinstance(variant, VariantText)
            and own is not None
            and variant.locale not in own
            and fallback_language is None
        ):
            why = untranslated_reason(patient.language, step.template, [channel])
            missing[channel] = Decision(
                Outcome.REFUSED, patient.id, channel, purpose, at, NO_VARIANT_CODE, why
            )

    def gate(channels: Iterable[Channel]) -> ChannelChoice:
        return consent.choose_from(
            patient,
            purpose,
            at,
            policy=policy,
            available=usable,
            order=list(channels),
            excluded=excluded,
            latest=latest,
            caps=caps,
        )

    # A channel consent refuses anyway is passed over for that (the plainer reason); only the
    # ones it would allow are passed over for the language.
    untranslatable = {c: d for c, d in missing.items() if gate([c]).decision is not None}
    choice = gate(c for c in order if c not in untranslatable)
    chosen = choice.decision.channel if choice.decision else None
    passed = {d.channel: d for d in (*choice.passed_over, *untranslatable.values())}
    before: list[Decision] = []
    for channel in order:
        if channel == chosen:
            break
        if channel in passed:
            before.append(passed[channel])
    notes = [d.summary() for d in before]
    if choice.decision is None:
        untranslated = None
        if untranslatable:
            untranslated = untranslated_reason(patient.language, step.template, untranslatable)
        return StepChoice(None, tuple(before), notes, None, untranslated)
    assert chosen is not None
    variant = found[chosen]
    fallback = None
    if isinstance(variant, VariantText) and own is not None and variant.locale not in own:
        fallback = variant.locale
        label = language_label(patient.language)
        notes.append(
            f"{FALLBACK_NOTE} ({fallback}): no {label} variant of {step.template} "
            f"for {chosen.value}"
        )
    return StepChoice(choice.decision, tuple(before), notes, variant, None, fallback)
