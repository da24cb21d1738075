"""What a password a person chooses must be: long, and not one an attacker tries early.

The guessability check is zxcvbn (Dropbox's estimator, maintained on PyPI as ``zxcvbn``): it
scores a password by the guesses a cracker ordering its tries by frequency would need, using
its own lists of common passwords, names, words and keyboard patterns, and says in plain words
what is wrong. A blocklist alone passes "Password1234!"; a character-class rule passes it too
and annoys people with long passphrases, which zxcvbn rewards (NIST 800-63B 5.1.1.2).

One-time passwords the hub generates (``passwords.one_time_password``) are not checked here:
they are random, and their owner replaces them at first sign-in with one that is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from zxcvbn import zxcvbn

from hub.inbox.exceptions import WeakPassword
from hub.inbox.passwords import MIN_PASSWORD_LENGTH

DEFAULT_MIN_SCORE = 3
"""zxcvbn score (0-4) a chosen password must reach: 3 is "safely unguessable", about 10^8
guesses or more, beyond an online attacker and a slow-hash offline one for a while."""
MAX_PASSWORD_LENGTH = 256
"""Longest password accepted: room for any passphrase, not for a megabyte to hash."""
SCORED_PREFIX = 72
"""zxcvbn refuses longer input (its matching grows quickly with length); a password past it
is scored on its first 72 characters, which already decide whether it is guessable."""

_WORDS = re.compile(r"[^\W_]{3,}")


def _personal_words(user_inputs: Iterable[str]) -> list[str]:
    """The person's own email and name, whole and in pieces: "dana.agent2026" is guessable
    for Dana Agent even though neither word is common on its own."""
    found: list[str] = []
    for value in user_inputs:
        words = [w.lower() for w in _WORDS.findall(value.split("@")[0])]
        found += [value.lower(), "".join(words), *words]
        found += [w.lower() for w in _WORDS.findall(value)]
    return [w for w in found if w]


def check_new_password(password: str, *, user_inputs: Iterable[str] = ()) -> None:
    """Raise ``WeakPassword`` saying what is wrong and what to do; never echo the password.

    ``user_inputs`` are the person's email and display name, counted as easy guesses."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(
            f"Use at least {MIN_PASSWORD_LENGTH} characters: three or four unrelated words "
            "make a long password that is easy to remember."
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"Use at most {MAX_PASSWORD_LENGTH} characters.")
    result = zxcvbn(password[:SCORED_PREFIX], user_inputs=_personal_words(user_inputs))
    feedback = result["feedback"]
    hints = " ".join(s for s in [feedback.get("warning", ""), *feedback["suggestions"]] if s)
    sequence = result["sequence"]
    whole_listed = (
        len(sequence) == 1
        and sequence[0].get("pattern") == "dictionary"
        and sequence[0].get("dictionary_name") == "passwords"
    )
    if whole_listed:
        raise WeakPassword(
            "This password is too common: it is on the lists attackers try first. "
            "Choose another, such as three or four unrelated words."
        )
    if result["score"] < DEFAULT_MIN_SCORE:
        raise WeakPassword(
            "This password is too easy to guess. "
            + (hints + " " if hints else "")
            + "Choose another, such as three or four unrelated words."
        )
