"""Normalisation of patient contact points, so every spelling of one number meets one index."""

from __future__ import annotations

import phonenumbers

from hub.errors import HubError

DEFAULT_REGION = "US"
"""Region used to read national-format numbers when HUB_DEFAULT_REGION is unset."""


class InvalidContact(HubError):
    """A phone number or email address that cannot be normalised."""


def normalize_phone(raw: str, region: str = DEFAULT_REGION) -> str:
    """Return the E.164 form of ``raw`` ("+1 (555) 123-4567" -> "+15551234567").

    ``is_possible_number`` rather than ``is_valid_number``: validity depends on number-plan
    metadata that lags reality, and refusing a real patient's number is worse than storing one
    that later bounces.
    """
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise InvalidContact("not a phone number") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidContact("not a possible phone number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    """Lower-case and trim; reject anything without exactly one @ and a dotted domain."""
    value = raw.strip().lower()
    local, sep, domain = value.rpartition("@")
    if not sep or not local or "." not in domain or " " in value or "@" in local:
        raise InvalidContact("not an email address")
    return value
