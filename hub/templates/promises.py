"""What a template's text invites the patient to answer: "Reply C to confirm", "Can't make it?
Reply 2", "press 1", "Reply with a number from 0 to 10", "Responda C", "oprima 2"...

Read from the text by pattern, per language, so that a test (and anyone editing a journey) can
hold every invitation to the step that sends it: a text that promises a reply its step does not
handle makes the patient's answer do nothing. Pure; the journey side decides what is handled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from jinja2 import nodes

from hub.templates.render import TEXT_ENV

Meaning = Literal["confirm", "cancel", "score", "keyword", "any"]
"""What the text says the answer does; "keyword" is a carrier word (STOP, START, HELP) that
the inbound path handles before any journey; "any" when the text does not say."""


@dataclass(frozen=True)
class Promise:
    token: str
    """What the patient is told to send or press ("C", "2", "YES", "0" and "10" for a scale)."""
    meaning: Meaning
    sentence: str
    """The sentence that makes the promise (template text, no patient data)."""


@dataclass(frozen=True)
class _Language:
    invite: re.Pattern[str]
    """Matches an invitation; group "tok" is the token to send or the key to press."""
    scale: re.Pattern[str]
    """Matches an invitation to answer with a number on a scale; groups "low" and "high"."""
    cancel: re.Pattern[str]
    confirm: re.Pattern[str]


_ANSWER = r"(?P<tok>[A-Z0-9]{1,8}|\d{1,2})(?![\w'])"
KEYWORDS = frozenset({"STOP", "START", "HELP", "UNSTOP", "INFO", "STOPALL", "UNSUBSCRIBE"})
"""Carrier keywords: answered by the inbound path (consent), never by a journey step."""

LANGUAGES: dict[str, _Language] = {
    "en": _Language(
        invite=re.compile(
            r"\b(?:(?i:reply|text|send|respond)(?:\s+(?i:with))?|(?i:press|dial))\s+" + _ANSWER
        ),
        scale=re.compile(
            r"(?i:\b(?:reply|respond|answer)\b[^.?!]*?\b(?:number|score)\b"
            r"(?:[^.?!]*?\b(?P<low>\d{1,2})\s*(?:to|-|\u2013)\s*(?P<high>\d{1,2})\b)?)"
        ),
        cancel=re.compile(r"(?i:\bcancel|can['\u2019]t make it|cannot make it|not coming)"),
        confirm=re.compile(r"(?i:\bconfirm)"),
    ),
    "es": _Language(
        invite=re.compile(
            r"\b(?:(?i:responda|conteste|escriba|env[ií]e)(?:\s+(?i:con))?|"
            r"(?i:oprima|pulse|marque|presione))\s+" + _ANSWER
        ),
        scale=re.compile(
            r"(?i:\b(?:responda|conteste)\b[^.?!]*?\b(?:n[uú]mero|nota|puntuaci[oó]n)\b"
            r"(?:[^.?!]*?\b(?P<low>\d{1,2})\s*(?:al?|-|\u2013)\s*(?P<high>\d{1,2})\b)?)"
        ),
        cancel=re.compile(r"(?i:\bcancel|no puede (?:venir|asistir)|no podr[aá])"),
        confirm=re.compile(r"(?i:\bconfirm)"),
    ),
}
"""Per base language. A shipped template in a language missing here fails the promise test,
so a new language comes with its patterns."""

_SENTENCES = re.compile(r"[^.?!\n]+[.?!]?")


def _literal(source: str) -> str:
    """The template's own words with every tag and variable taken out (both branches of an
    ``if`` are kept: either may be sent)."""
    tree = TEXT_ENV.parse(source)
    return " ".join(n.data for n in tree.find_all(nodes.TemplateData))


def promises(source: str, locale: str) -> list[Promise]:
    """Every reply the text invites, in order. Raises KeyError for a language with no
    patterns (see LANGUAGES)."""
    language = LANGUAGES[locale.split("-")[0].lower()]
    found: list[Promise] = []
    previous = ""
    for match in _SENTENCES.finditer(_literal(source)):
        sentence = " ".join(match.group(0).split())
        # "Can't make it? Reply 2": a question gives the meaning of the answer that follows.
        if previous.endswith("?"):
            sentence = f"{previous} {sentence}"
        previous = " ".join(match.group(0).split())
        scale = language.scale.search(sentence)
        if scale is not None:
            low, high = scale.group("low") or "0", scale.group("high") or "10"
            found += [Promise(low, "score", sentence), Promise(high, "score", sentence)]
            continue
        for invite in language.invite.finditer(sentence):
            token = invite.group("tok")
            meaning: Meaning = "any"
            if token.upper() in KEYWORDS:
                meaning = "keyword"
            elif language.cancel.search(sentence):
                meaning = "cancel"
            elif language.confirm.search(sentence):
                meaning = "confirm"
            found.append(Promise(token, meaning, sentence))
    return found
