"""Is the From address of an inbound mail really the sender's? SPF, DKIM and DMARC alignment
(RFC 7208, 6376, 7489) for mail the built-in receiver takes straight from the sender's server.

Anyone can write any From address. A mail counts as verified only when the From domain itself
vouches for it, as DMARC defines it: a DKIM signature that verifies with a ``d=`` domain
aligned with the From domain, or an SPF pass for the MAIL FROM (or, for the null sender, the
HELO) domain aligned with it; relaxed alignment compares organizational domains (the public
suffix plus one label), strict alignment the exact names, as the domain's DMARC record asks.
A domain without a DMARC record is held to relaxed alignment too: a pass for some other domain
says nothing about this one.

SPF is pyspf and DKIM is dkimpy (both maintained by the same long-standing authors, and dkimpy
already signs our outbound mail); the organizational domain comes from publicsuffixlist, which
ships the Public Suffix List and is released as the list changes. DMARC itself is the few
lines below, over the same resolver: checkdmarc would bring its own DNS stack and a web of
dependencies for a record of five tags."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any

import dkim
import spf
from publicsuffixlist import PublicSuffixList

from hub.channels.email_smtp.resolver import DEFAULT_DNS_TIMEOUT_S, DnsTempError, Resolver

log = logging.getLogger(__name__)

DEFAULT_CHECK_DEADLINE_S = 10.0
"""Seconds all lookups of one mail's check may take together (SPF alone may need ten)."""
MAX_DKIM_SIGNATURES = 5
"""Signatures tried per mail: each costs a key lookup and an RSA verify."""

REASON_WORDS = {
    "dkim_pass": "signed by the sender's domain (DKIM)",
    "spf_pass": "sent by a server the sender's domain allows (SPF)",
    "relay_pass": "the clinic's mail provider verified the sender",
    "dmarc_fail": "it failed the sender's domain's DMARC check: the From address may be forged",
    "spf_fail": "the sender's domain does not allow the server that sent it (SPF fail)",
    "spf_softfail": "the sender's domain calls the server that sent it suspicious (SPF soft fail)",
    "not_aligned": "it was authenticated for a different domain than its From address",
    "no_auth": "nothing in it proves its From address (no signature, no sender record)",
    "no_from": "it has no single From address to check",
    "temperror": "the sender's domain could not be checked in time (DNS did not answer)",
    "relay_fail": "the clinic's mail provider could not verify the sender",
    "relay_missing": "the clinic's mail provider gave no verdict on the sender",
    "not_checked": "the sender was not checked",
}
"""Reason code (stored on the message) -> what staff read after "Sender not verified:"."""


@dataclass(frozen=True)
class SenderCheck:
    verified: bool
    reason: str
    """A key of ``REASON_WORDS``: short, stored, never PHI."""

    @property
    def words(self) -> str:
        return REASON_WORDS.get(self.reason, self.reason)


NOT_CHECKED = SenderCheck(False, "not_checked")
"""For mail whose path ran no check: it is held like any other unverified mail."""


@dataclass(frozen=True)
class Policy:
    """The parts of a DMARC record alignment needs (RFC 7489 6.3)."""

    p: str
    adkim_strict: bool = False
    aspf_strict: bool = False


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list the package ships: no download at run time


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label ("mail.clinic.co.uk" -> "clinic.co.uk");
    a name that is itself a public suffix is its own."""
    name = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(name) or name


def aligned(identifier: str, from_domain: str, *, strict: bool) -> bool:
    a, b = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if strict:
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def from_domain_of(raw: bytes) -> str | None:
    """The domain of the one RFC5322.From address; None when there are none or several
    (RFC 7489 6.6.1: such mail cannot pass)."""
    try:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        values = headers.get_all("From") or []
        found = getaddresses([str(v) for v in values])
    except Exception:  # hostile header bytes: nothing to check against
        return None
    specs = [spec for _, spec in found if spec]
    if len(values) != 1 or len(specs) != 1 or "@" not in specs[0]:
        return None
    domain = specs[0].rpartition("@")[2].strip().lower().rstrip(".")
    return domain or None


def _parse_policy(text: str) -> Policy | None:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip().lower())
    if tags.get("v") != "dmarc1":
        return None
    p = tags.get("p")
    if p not in ("none", "quarantine", "reject"):
        # 6.6.3: a record with a reporting address but a bad or missing p is read as none.
        if "rua" not in tags:
            return None
        p = "none"
    return Policy(p, tags.get("adkim") == "s", tags.get("aspf") == "s")


def _policy_at(resolver: Resolver, domain: str) -> Policy | None:
    records = [
        r for r in resolver.lookup(f"_dmarc.{domain}", "TXT") if r.lower().startswith("v=dmarc1")
    ]
    if len(records) != 1:
        return None  # 6.6.3: none, or several (then none applies)
    return _parse_policy(records[0])


def dmarc_policy(resolver: Resolver, domain: str) -> Policy | None:
    """6.6.3: the From domain's record, else its organizational domain's."""
    found = _policy_at(resolver, domain)
    org = organizational_domain(domain)
    if found is None and org != domain:
        found = _policy_at(resolver, org)
    return found


def dkim_domains(raw: bytes, resolver: Resolver) -> tuple[list[str], bool]:
    """(``d=`` domains of the signatures that verify, whether a key lookup failed)."""

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        answers = resolver.lookup(name.decode("ascii", "replace").rstrip("."), "TXT")
        return answers[0].encode() if answers else None

    try:
        signer = dkim.DKIM(raw, timeout=int(DEFAULT_DNS_TIMEOUT_S))
        count = sum(1 for name, _ in signer.headers if name.lower() == b"dkim-signature")
    except Exception:  # not a message dkimpy can read: no signature can verify
        return [], False
    passed: list[str] = []
    temp = False
    for index in range(min(count, MAX_DKIM_SIGNATURES)):
        try:
            if signer.verify(index, dnsfunc=txt):
                passed.append(signer.domain.decode("ascii", "replace").lower())
        except DnsTempError:
            temp = True
        except Exception:  # noqa: S112 - a malformed signature or key fails, nothing more
            continue
    return passed, temp


_spf_resolver: contextvars.ContextVar[Resolver] = contextvars.ContextVar("spf_resolver")


def _spf_lookup(
    name: str, qtype: str, tcpfallback: bool = True, timeout: float = 30
) -> list[tuple[tuple[str, str], Any]]:
    """pyspf looks names up through its module-level ``DNSLookup``; pointed here once, it
    asks the resolver of the check running in this context (its own default calls a
    dnspython function deprecated since 2.0, without our time box)."""
    try:
        answers = _spf_resolver.get().lookup(name, qtype)
    except DnsTempError as exc:
        raise spf.TempError(f"DNS {exc}") from None
    out: list[tuple[tuple[str, str], Any]] = []
    for value in answers:
        if qtype == "TXT":
            out.append(((name, qtype), [value.encode()]))
        elif qtype == "MX":
            preference, _, host = value.partition(" ")
            out.append(((name, qtype), (int(preference), host)))
        else:
            out.append(((name, qtype), value))
    return out


spf.DNSLookup = _spf_lookup


def spf_result(resolver: Resolver, ip: str, mail_from: str, helo: str) -> tuple[str, str | None]:
    """(pyspf result, the domain it is about): MAIL FROM's domain, or HELO's for the null
    sender (RFC 7208 2.4)."""
    sender = mail_from.strip("<>")
    domain = sender.rpartition("@")[2].lower() if sender else helo.lower()
    if not domain or not ip:
        return "none", None
    token = _spf_resolver.set(resolver)
    try:
        query = spf.query(
            i=ip,
            s=sender,
            h=helo,
            timeout=DEFAULT_DNS_TIMEOUT_S,
            querytime=DEFAULT_CHECK_DEADLINE_S,
        )
        result, _code, _why = query.check()
    except Exception:  # pyspf on input it cannot read (a bad address): no SPF verdict
        log.info("SPF check could not run on this envelope")
        return "none", domain
    finally:
        _spf_resolver.reset(token)
    return str(result), domain


def check_direct(
    raw: bytes,
    resolver: Resolver,
    *,
    ip: str | None,
    mail_from: str | None,
    helo: str | None,
) -> SenderCheck:
    """DMARC's verdict on mail from the sender's own server (no ``ip``: DKIM alone, as for
    mail handed on by a provider we do not take a verdict from)."""
    domain = from_domain_of(raw)
    if domain is None:
        return SenderCheck(False, "no_from")
    temp = False
    try:
        found = dmarc_policy(resolver, domain)
    except DnsTempError:
        found, temp = None, True
    # Without the record, relaxed alignment is the RFC's default; when the lookup failed we
    # cannot know the domain asked for strict, so only an exact match counts.
    adkim_strict = found.adkim_strict if found else temp
    aspf_strict = found.aspf_strict if found else temp
    passed, dkim_temp = dkim_domains(raw, resolver)
    temp = temp or dkim_temp
    if any(aligned(d, domain, strict=adkim_strict) for d in passed):
        return SenderCheck(True, "dkim_pass")
    spf_verdict, spf_domain = (
        spf_result(resolver, ip, mail_from or "", helo or "") if ip else ("none", None)
    )
    if spf_verdict == "pass" and spf_domain and aligned(spf_domain, domain, strict=aspf_strict):
        return SenderCheck(True, "spf_pass")
    if temp or spf_verdict == "temperror":
        return SenderCheck(False, "temperror")
    if found is not None:
        return SenderCheck(False, "dmarc_fail")
    if spf_verdict in ("fail", "softfail"):
        return SenderCheck(False, f"spf_{spf_verdict}")
    if passed or spf_verdict == "pass":
        return SenderCheck(False, "not_aligned")
    return SenderCheck(False, "no_auth")


async def run_check(check: Callable[[], SenderCheck]) -> SenderCheck:
    """Run a check off the event loop (DNS waits and RSA work), within the deadline; past
    it the mail is kept as not verified ("temperror")."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(check), DEFAULT_CHECK_DEADLINE_S + 2)
    except TimeoutError:
        return SenderCheck(False, "temperror")
    except Exception:
        # A fault in a check (a resolver or library bug) must not lose the mail or make the
        # sender retry for days: it is kept, not verified, and the fault is logged.
        log.exception("sender check failed; the mail is kept as not verified")
        return SenderCheck(False, "temperror")
