"""What a patient's reply means for the step that is waiting on it (pure).

Only a reply that is one short token counts as an answer: "C", "yes!", " 1 ", "9/10". Anything
longer ("yes but can we move it to 3pm?") is text, because a person should read it; every reply
lands in the inbox whatever its kind, the kind only decides what the journey does besides.

The SMS word CANCEL never gets here: it is a carrier opt-out keyword (STOP family) that the
inbound path handles before journeys, so on SMS only "2" cancels. On the other channels the
words CANCEL / CANCELLED cancel as well. YES reaches here only when the patient is opted in (for
an opted-out patient it is the carrier's opt-in word).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from hub.enums import Channel

ReplyKind = Literal["confirm", "cancel", "score", "text"]
Expecting = Literal["confirmation", "survey:0-10", "survey:1-5"]

CONFIRM_WORDS = frozenset({"c", "confirm", "confirmed", "yes", "y", "1"})
"""Single tokens that confirm an appointment when a step asks for a confirmation."""
CANCEL_DIGITS = frozenset({"2"})
"""Cancels on every channel (on SMS the only way: CANCEL there is the carrier's opt-out)."""
CANCEL_WORDS = frozenset({"cancel", "cancelled", "canceled"})
"""Cancel too, but only off SMS, where they are not carrier keywords."""
SCALES: dict[str, tuple[int, int]] = {"survey:0-10": (0, 10), "survey:1-5": (1, 5)}

_SCORE = re.compile(r"(\d{1,2})(?:\s*(?:/|out of|of)\s*(\d{1,2}))?")
_EDGE_PUNCTUATION = "\"'`.,;:!?¡¿()[]{}*_~"
"""Stripped from both ends; not "-" or "+", so "-1" stays out of range instead of reading 1."""


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind
    score: int | None = None
    """The number, only when kind is "score"."""


TEXT = Reply("text")


def normalize_reply(text: str) -> str:
    """Case, width, surrounding whitespace and surrounding punctuation removed ("  Yes! " -> yes).

    Inner spaces are collapsed to one, so "8 / 10" and "8/10" read alike.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.split()).strip(_EDGE_PUNCTUATION + " ")


def classify_reply(
    text: str, expecting: Expecting | None, *, channel: Channel | None = None
) -> Reply:
    """The meaning of ``text`` for a step that expects ``expecting`` (None: nothing pending).

    ``channel`` None is read as SMS (the strictest): CANCEL is then text, never a cancel.
    """
    if expecting is None:
        return TEXT
    token = normalize_reply(text)
    if expecting == "confirmation":
        if token in CONFIRM_WORDS:
            return Reply("confirm")
        if token in CANCEL_DIGITS:
            return Reply("cancel")
        if token in CANCEL_WORDS and channel not in (None, Channel.SMS):
            return Reply("cancel")
        return TEXT
    low, high = SCALES[expecting]
    match = _SCORE.fullmatch(token)
    if match is None:
        return TEXT
    score = int(match.group(1))
    out_of = match.group(2)
    if out_of is not None and int(out_of) != high:
        return TEXT  # "4/5" on a 0-10 question is not a score we can place on the scale
    if not low <= score <= high:
        return TEXT
    return Reply("score", score)
