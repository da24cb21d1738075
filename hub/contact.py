"""Normalisation of patient contact points, so every spelling of one number meets one index;
and of what the hub needs to read them right: the patient's country and language."""

from __future__ import annotations

import functools
import re

import phonenumbers
from babel import Locale, localedata
from babel.core import get_global

from hub.errors import HubError

DEFAULT_REGION = "US"
"""Region used to read national-format numbers when HUB_DEFAULT_REGION is unset."""
LANGUAGE_EXAMPLES = "en, es, zh-Hant"
"""Named in the refusal of a language code, so the writer sees what a code looks like."""

_Source = phonenumbers.CountryCodeSource
_EXPLICIT = frozenset({_Source.FROM_NUMBER_WITH_PLUS_SIGN, _Source.FROM_NUMBER_WITH_IDD})
_PUNCTUATION = re.compile(r"[\s().\-/\u00a0]")
_SUBTAG = re.compile(r"^[A-Za-z0-9]{1,8}$")


class InvalidContact(HubError):
    """A phone number or email address that cannot be normalised."""


class InvalidLanguage(HubError):
    """A language that is not a BCP-47 tag of a language the hub knows."""


class InvalidCountry(HubError):
    """A country that is neither an ISO 3166 code nor a country's name."""


def normalize_phone(raw: str, region: str = DEFAULT_REGION) -> str:
    """Return the E.164 form of ``raw`` ("+1 (555) 123-4567" -> "+15551234567").

    For numbers a provider or a person at the desk hands over (Twilio's From is E.164
    already; staff search by any spelling). ``is_possible_number`` rather than
    ``is_valid_number``: validity depends on number-plan metadata that lags reality, and
    refusing a real patient's number is worse than storing one that later bounces. Numbers
    read from records kept elsewhere go through ``read_phone``.
    """
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise InvalidContact("not a phone number") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidContact("not a possible phone number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def read_phone(raw: str, region: str) -> str:
    """E.164 of a number from a record (a cohort row, a FHIR Patient, the enrollment API) of a
    patient who lives in ``region`` (ISO 3166 alpha-2).

    A number written internationally (``+86 …``, or after the international prefix of the
    patient's country: ``011`` in North America, ``0011`` in Australia, ``00`` in most of the
    world, and ``00`` from anywhere when that makes a valid number) names its own country and
    only has to be possible there. Anything else is read as a number of ``region`` (its
    national form, or its digits after that country's own code) and must be *valid* there: a
    national number read with the wrong country is usually still possible, and would then
    reach a stranger (a Chinese mobile, 138 0013 8000, is a possible but invalid US number;
    8613800138000 without its + is no US number at all). Messages never repeat the number
    (it is PHI)."""
    try:
        parsed = phonenumbers.parse(raw.strip(), region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        raise InvalidContact("not a phone number") from None
    if parsed.country_code_source in _EXPLICIT:
        # Fully possible: a number dialable only inside its own area ("local only") is not.
        reason = phonenumbers.is_possible_number_with_reason(parsed)
        if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
            code = parsed.country_code or 0
            where = phonenumbers.region_code_for_country_code(code)
            raise InvalidContact(
                f"phone has the wrong number of digits for +{code} ({country_name(where)})"
            )
    elif not phonenumbers.is_valid_number(parsed):
        abroad = _after_00(raw)
        if abroad is None:
            raise InvalidContact(
                f"phone is not a valid number in {country_name(region)} ({region}); give the "
                "patient's country, or write the number with + and its country code"
            )
        parsed = abroad
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _after_00(raw: str) -> phonenumbers.PhoneNumber | None:
    """``raw`` read after "00", the international prefix of most of the world, when that is
    not the prefix of the patient's country (a US clinic's file with 0086…); only a valid
    number counts, since the prefix is a guess there."""
    compact = _PUNCTUATION.sub("", raw)
    if not (compact.startswith("00") and compact[2:].isdigit()):
        return None
    try:
        parsed = phonenumbers.parse("+" + compact[2:], None)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_valid_number(parsed) else None


def normalize_email(raw: str) -> str:
    """Lower-case and trim; reject anything without exactly one @ and a dotted domain."""
    value = raw.strip().lower()
    local, sep, domain = value.rpartition("@")
    if not sep or not local or "." not in domain or " " in value or "@" in local:
        raise InvalidContact("not an email address")
    return value


# -- countries -------------------------------------------------------------------------------


def country_name(region: str) -> str:
    """ "Germany" for DE (the code itself when babel has no name for it)."""
    return str(Locale("en").territories.get(region, region))


def read_country(raw: str) -> str:
    """The ISO 3166 alpha-2 code of ``raw``: an alpha-2 code (``de``), an alpha-3 code
    (``DEU``, as Cerner writes Patient.address.country), or a country's name in English or a
    language of its own (``Germany``, ``Deutschland``). Raises InvalidCountry otherwise, and
    for a place that has no phone numbering plan of its own."""
    value = raw.strip()
    key = value.replace(".", "").casefold()
    code = None
    if re.fullmatch(r"[a-z]{2,3}", key):
        upper = key.upper()
        if len(upper) == 2 and upper in Locale("en").territories:
            code = upper
        else:
            aliases = get_global("territory_aliases").get(upper)
            code = aliases[0] if aliases and len(aliases) == 1 else None
    if code is None:
        found = _country_names().get(key)
        if found is not None and len(found) > 1:
            raise InvalidCountry(
                f"country {value!r} names more than one country; use an ISO 3166 code "
                "such as US, GB or DE"
            )
        code = next(iter(found)) if found else None
    if code is None or code not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidCountry(
            f"country {value!r} is not a country; use an ISO 3166 code such as US, GB or DE"
        )
    return code


@functools.cache
def _country_names() -> dict[str, frozenset[str]]:
    """Country names in every language babel has (built once, on the first name seen: about a
    second), casefolded, to the countries they name (a few names fit two)."""
    names: dict[str, set[str]] = {}
    for ident in localedata.locale_identifiers():
        if "_" in ident or ident == "root":
            continue
        for code, name in Locale.parse(ident).territories.items():
            if len(code) == 2:  # "419" (Latin America) and friends are regions, not countries
                names.setdefault(name.replace(".", "").casefold(), set()).add(code)
    return {name: frozenset(codes) for name, codes in names.items()}


# -- languages -------------------------------------------------------------------------------


def language_tag(raw: str) -> str | None:
    """The normalised BCP-47 tag of ``raw`` (``ES`` -> ``es``, ``pt_BR`` -> ``pt-BR``,
    ``zh-hant-tw`` -> ``zh-Hant-TW``), or None when it is not a tag of a language babel knows.

    The language subtag must be one babel (CLDR) has locale data for, or a two-letter code
    CLDR knows by another name (``tl``, ``iw``): that is what templates and dates can be
    rendered in. A three-letter code with a two-letter equivalent (``spa``, ``eng``) is not a
    BCP-47 language subtag; vendor codes such as Epic's ``SPA`` or Cerner's ``151`` fail."""
    parts = raw.strip().replace("_", "-").split("-")
    if not all(_SUBTAG.match(p) for p in parts):
        return None
    language, rest = parts[0].lower(), parts[1:]
    known = len(language) in (2, 3) and language.isalpha() and language != "root"
    if not known or not (
        localedata.exists(language)
        or (len(language) == 2 and language in get_global("language_aliases"))
    ):
        return None
    english = Locale("en")
    tag = [language]
    if rest and len(rest[0]) == 4 and rest[0].isalpha():
        script = rest.pop(0).title()
        if script not in english.scripts:
            return None
        tag.append(script)
    if rest and (
        (len(rest[0]) == 2 and rest[0].isalpha()) or (len(rest[0]) == 3 and rest[0].isdigit())
    ):
        region = rest.pop(0).upper()
        if region not in english.territories:
            return None
        tag.append(region)
    for variant in rest:
        if variant.upper() not in english.variants:
            return None  # also extensions and private use (-u-, -x-): nothing reads them
        tag.append(variant.lower())
    return "-".join(tag)


def normalize_language(raw: str) -> str:
    """``language_tag`` or InvalidLanguage, in words a coordinator can act on."""
    tag = language_tag(raw)
    if tag is None:
        raise InvalidLanguage(
            f"language {raw.strip()!r} is not a language code; use e.g. {LANGUAGE_EXAMPLES}"
        )
    return tag


def language_named(text: str) -> str | None:
    """The tag of a language written out ("Spanish", "Español", "Traditional Chinese"), for
    records that give a name instead of a code; None when no language is called that."""
    return _language_names().get(text.strip().casefold())


@functools.cache
def _language_names() -> dict[str, str]:
    """Each language babel has locale data for, by its English name and by its own name."""
    english = Locale("en")
    names: dict[str, str] = {}
    for ident in localedata.locale_identifiers():
        if ident == "root" or ("_" in ident and len(ident.split("_")[1]) != 4):
            continue  # languages and their scripts (zh_Hant), not every country's variant
        tag = language_tag(ident)
        if tag is None:
            continue
        locale = Locale.parse(ident)
        for name in (english.languages.get(ident), locale.get_display_name(locale)):
            if name:
                names.setdefault(name.casefold(), tag)
    for code in get_global("language_aliases"):
        # Codes CLDR files under another name keep theirs: "Tagalog" is tl, not fil.
        if len(code) == 2 and (name := english.languages.get(code)) and language_tag(code):
            names.setdefault(name.casefold(), code)
    return names
