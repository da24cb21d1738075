"""The second factor's rules: TOTP codes (RFC 6238, through pyotp), recovery codes, and the
clinic's "admins must use one" setting. No transactions here; ``actions/second_factor.py``
applies these to accounts."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.settings_store import setting_value

TOTP_PERIOD_S = 30
"""Seconds per code (RFC 6238's default; every authenticator app assumes it)."""
TOTP_DIGITS = 6
DEFAULT_TOTP_TOLERANCE_STEPS = 1
"""Codes of one step before or after now are accepted too: a phone clock half a minute off,
or a code typed just as it rolled over (RFC 6238 section 5.2 recommends at most one)."""

RECOVERY_CODE_COUNT = 10
"""Recovery codes handed out at once; each works one time."""
RECOVERY_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
"""The one-time-password alphabet's capitals and digits (no I/1, O/0, L): codes are written on
paper and typed back, so case must not matter either."""
RECOVERY_CODE_LENGTH = 10
"""About 50 bits from RECOVERY_ALPHABET, shown as two groups of five."""

REQUIRED_FOR_ADMINS_KEY = "staff.second_factor_required_for_admins"
"""Settings-store key: when true, an admin must set up a second factor before anything else."""

# Recovery codes are random (about 50 bits), unlike chosen passwords, and a sign-in may verify
# all ten: OWASP's Argon2id baseline (19 MiB, 2 passes) keeps that well under a second while a
# stolen table still costs an attacker an Argon2 run per guess.
_code_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


def new_totp_secret() -> str:
    """A fresh shared secret: 160 random bits in base32, as RFC 4226 recommends."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, email: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S).provisioning_uri(
        name=email, issuer_name=issuer
    )


def time_step(at: datetime) -> int:
    return int(at.timestamp()) // TOTP_PERIOD_S


def is_totp_shape(code: str) -> bool:
    return len(code) == TOTP_DIGITS and code.isascii() and code.isdigit()


@dataclass(frozen=True)
class TotpCheck:
    step: int | None
    """The time step the code belongs to when it is accepted; None when refused."""
    replayed: bool = False
    """Refused because the code was right but its step was already used."""


def check_totp(secret: str, code: str, at: datetime, last_step: int | None) -> TotpCheck:
    """Accept ``code`` if it is right within the tolerance and of a step newer than
    ``last_step``: a step already used is refused, so a code works once."""
    if not is_totp_shape(code):
        return TotpCheck(None)
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S)
    now = time_step(at)
    for step in range(now - DEFAULT_TOTP_TOLERANCE_STEPS, now + DEFAULT_TOTP_TOLERANCE_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            if last_step is not None and step <= last_step:
                return TotpCheck(None, replayed=True)
            return TotpCheck(step)
    return TotpCheck(None)


def normalize_code(text: str) -> str:
    """What was typed, without spaces and dashes; recovery codes in capitals."""
    cleaned = "".join(c for c in text if not c.isspace() and c != "-")
    return cleaned if cleaned.isdigit() else cleaned.upper()


def new_recovery_codes() -> list[str]:
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def hash_recovery_code(code: str) -> str:
    return _code_hasher.hash(normalize_code(code))


def recovery_code_matches(stored_hash: str, code: str) -> bool:
    """Whether the typed ``code`` (any case, spaces or dashes) is the one behind the hash."""
    normalized = normalize_code(code)
    if len(normalized) != RECOVERY_CODE_LENGTH:
        return False
    try:
        return _code_hasher.verify(stored_hash, normalized)
    except (VerificationError, InvalidHashError):
        return False


async def required_for_admins_in(session: AsyncSession) -> bool:
    return bool(await setting_value(session, REQUIRED_FOR_ADMINS_KEY))
