"""Urgent triage: does a message contain one of the configured emergency phrases?

Pure. Matching is deliberately simple, so that staff can predict it:
- case-insensitive and Unicode-normalised (NFKC, casefold);
- apostrophes are ignored, so "can't", the curly "can\u2019t" phones type and "cant" match alike;
- hyphens, dashes and runs of whitespace count as one space ("CHEST  PAIN", "chest-pain");
- a phrase matches only as whole words: "stroke" does not fire on "strokes of luck", and
  "chest pain" not on "painting my chest of drawers".

There is no negation handling ("no chest pain") on purpose: a false alarm costs a minute of a
coordinator's time, a missed emergency can cost a life. Triage never looks at business hours.
Rule keywords (``conditions.body_keywords``) use the same matcher, so both behave alike.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

DEFAULT_TRIAGE_PHRASES = (
    "chest pain",
    "chest pains",
    "heart attack",
    "can't breathe",
    "can't breath",
    "cannot breathe",
    "can not breathe",
    "difficulty breathing",
    "trouble breathing",
    "not breathing",
    "choking",
    "suicide",
    "suicidal",
    "kill myself",
    "end my life",
    "want to die",
    "overdose",
    "overdosed",
    "stroke",
    "severe bleeding",
    "bleeding heavily",
    "unconscious",
    "passed out",
    "seizure",
    "seizures",
    "anaphylaxis",
    "anaphylactic",
)
"""What a fresh install treats as urgent (the 0004 migration seeds the same list)."""
DEFAULT_TRIAGE_REPLY = (
    "If this is an emergency, call 911 or your local emergency number now. "
    "A member of our care team has been alerted."
)
"""The emergency reply when the ``triage.reply`` setting is missing or unusable."""
TRIAGE_REPLY_SETTING = "triage.reply"
MAX_PHRASE_LENGTH = 120
"""Longest phrase an admin may add (the column's width)."""

_APOSTROPHES = re.compile("['\u2018\u2019\u201b\u02bc\u2032\u00b4`]")
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015_]+")
_CURLY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u02bc": "'"})


def normalize_text(text: str) -> str:
    """The form both phrases and message bodies are compared in."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _APOSTROPHES.sub("", text)
    return _SEPARATORS.sub(" ", text).strip()


def display_phrase(phrase: str) -> str:
    """The stored form of an admin's phrase: lower case, straight apostrophes, single spaces.
    Raises ValueError with a sentence a person can act on."""
    if not isinstance(phrase, str):
        raise ValueError(f"expected text, got {phrase!r}")
    shown = " ".join(unicodedata.normalize("NFKC", phrase).translate(_CURLY).split()).casefold()
    if not shown or not re.search(r"\w", shown):
        raise ValueError("a phrase needs at least one letter or digit")
    if len(shown) > MAX_PHRASE_LENGTH:
        raise ValueError(f"a phrase may be at most {MAX_PHRASE_LENGTH} characters")
    return shown


class PhraseMatcher:
    """Finds the first of a set of phrases in a text, as whole words (see module docstring)."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self._original: dict[str, str] = {}
        for phrase in phrases:
            normalized = normalize_text(phrase)
            if normalized:
                self._original.setdefault(normalized, phrase)
        # Longest first, so "chest pains" is reported rather than its prefix "chest pain".
        ordered = sorted(self._original, key=len, reverse=True)
        alternatives = "|".join(re.escape(p) for p in ordered)
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)") if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def find(self, text: str) -> str | None:
        """The phrase (as given) found in ``text``, or None."""
        if self._pattern is None:
            return None
        match = self._pattern.search(normalize_text(text))
        return None if match is None else self._original[match.group(0)]


def find_urgent_phrase(body: str, phrases: Iterable[str]) -> str | None:
    """The triage phrase in ``body``, or None; the default list when ``phrases`` is empty, so a
    misconfiguration can never switch triage off."""
    matcher = PhraseMatcher(phrases)
    if not matcher:
        matcher = PhraseMatcher(DEFAULT_TRIAGE_PHRASES)
    return matcher.find(body)
