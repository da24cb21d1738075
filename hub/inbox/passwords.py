"""Staff password hashing (Argon2id with argon2-cffi's RFC 9106 low-memory profile)."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hub.inbox.exceptions import WeakPassword

MIN_PASSWORD_LENGTH = 12
"""Shortest password a staff member may set (NIST 800-63B allows 8; PHI warrants more)."""

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(set(password)) < 4:
        raise WeakPassword("password repeats too few characters; choose a passphrase")
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


OTP_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789"
"""One-time passwords are read off a screen or a phone and typed: no l/I/1, O/o/0, no symbols."""
OTP_LENGTH = 16
"""About 92 bits from OTP_ALPHABET; enough for a password that lives until first sign-in."""


def one_time_password() -> str:
    """A random password to hand over once (new staff, a reset), easy to read back aloud."""
    while True:
        password = "".join(secrets.choice(OTP_ALPHABET) for _ in range(OTP_LENGTH))
        if len(set(password)) >= 4:  # hash_password's floor; a miss is astronomically rare
            return password
