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


def one_time_password() -> str:
    """A random password to print once (demo admin, `hub user add` without --password)."""
    return secrets.token_urlsafe(15)
