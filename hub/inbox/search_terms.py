"""What a patient search compares: normalized name tokens and prefixes, external ids and
contact points, each as a keyed blind index. Pure functions; the rows live in
``hub.inbox.patient_models`` and the SQL in ``hub.inbox.search_queries``.

The term format is a stored format: a change here needs the index rebuilt (migration 0020's
backfill shows how), or patients indexed before it are no longer found.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from hub.contact import InvalidContact, normalize_email, normalize_phone
from hub.crypto import KeyRing

MIN_PREFIX = 3
"""Shortest prefix searched by: "Jos" finds José and Joseph, "Jo" finds only Jo."""
MAX_PREFIX = 6
"""Longest prefix stored. A longer query word is looked up by its first MAX_PREFIX letters and
checked against the decrypted names; it bounds the index at four rows per name word."""
MAX_QUERY_WORDS = 5
"""Name words a query is read by; more would only narrow a search that is narrow already."""
MAX_QUERY_CHARS = 200
"""Longest query read (a pasted paragraph is not a name)."""

_WORD = re.compile(r"[^\W_]+")
_PHONE_LIKE = re.compile(r"^[+(]?[\d\s().\-/]{7,}$")


def fold(text: str) -> str:
    """Lower case without accents or ligatures: "José" and "JOSE" are one word, "Straße"
    is "strasse"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def name_words(name: str | None) -> list[str]:
    """The folded words of a name ("Mary-Jane O'Neil" -> mary, jane, o, neil), in order,
    each once."""
    if not name:
        return []
    return list(dict.fromkeys(_WORD.findall(fold(name))))


def word_keys(word: str) -> list[str]:
    """What a stored word is findable by: each prefix from MIN_PREFIX to MAX_PREFIX letters,
    and the word itself when shorter than MIN_PREFIX (a two-letter surname such as "Li")."""
    if len(word) < MIN_PREFIX:
        return [word]
    return [word[:n] for n in range(MIN_PREFIX, min(len(word), MAX_PREFIX) + 1)]


def query_key(word: str) -> str:
    """The stored key a query word looks up: itself, or its first MAX_PREFIX letters."""
    return word[:MAX_PREFIX]


def name_terms(ring: KeyRing, name: str | None) -> set[bytes]:
    """The blind indexes a patient with this name is stored under."""
    return {ring.blind_index("name", key) for w in name_words(name) for key in word_keys(w)}


def normalize_external_id(value: str) -> str:
    """An MRN as compared: trimmed, inner spaces dropped, upper case ("a 0012" = "A0012")."""
    return re.sub(r"\s+", "", value).upper()


def external_id_term(ring: KeyRing, value: str) -> bytes:
    """The blind index of an external id's value. The assigning authority is stored beside it
    in clear (it names a system, not a person), so an HL7 PID-3 or a FHIR identifier is
    matched by (system, this index)."""
    return ring.blind_index("external_id", normalize_external_id(value))


def matches_name(name: str | None, words: list[str]) -> bool:
    """Whether every query word starts some word of the name (the check after a lookup of a
    word longer than MAX_PREFIX)."""
    have = name_words(name)
    return all(any(h.startswith(w) for h in have) for w in words)


@dataclass(frozen=True)
class SearchQuery:
    """A query read for what it may be: an email address, a phone number, an external id,
    name words. One query can be several (a number is also tried as an MRN)."""

    text: str
    words: list[str] = field(default_factory=list)
    phone: str | None = None
    email: str | None = None
    external_id: str | None = None

    def __repr__(self) -> str:  # the query is PHI
        return "SearchQuery(...)"

    @property
    def empty(self) -> bool:
        return not (self.words or self.phone or self.email or self.external_id)

    @property
    def kinds(self) -> list[str]:
        """Which lookups the query made: for the audit row (the values stay out of it)."""
        found = [("name", bool(self.words)), ("phone", bool(self.phone))]
        found += [("email", bool(self.email)), ("external_id", bool(self.external_id))]
        return [kind for kind, used in found if used]


def read_query(raw: str, region: str) -> SearchQuery:
    """``raw`` as typed in the search box, read with the clinic's region for national
    phone numbers."""
    text = raw.strip()[:MAX_QUERY_CHARS]
    if not text:
        return SearchQuery(text)
    if "@" in text:
        try:
            return SearchQuery(text, email=normalize_email(text))
        except InvalidContact:
            return SearchQuery(text)
    phone = None
    if _PHONE_LIKE.match(text):
        try:
            phone = normalize_phone(text, region)
        except InvalidContact:
            phone = None
    # Anything with a digit may be a record number (MRN "A-10023", or digits); names have
    # no digits, so such a query is not read as name words.
    compact = normalize_external_id(text)
    external = compact if any(c.isdigit() for c in compact) and len(compact) <= 64 else None
    words = [] if external is not None else name_words(text)[:MAX_QUERY_WORDS]
    return SearchQuery(text, words=words, phone=phone, email=None, external_id=external)
