"""A trusted relay's verdict on the sender: its Authentication-Results header (RFC 8601).

When mail reaches the hub through the clinic's own provider (a relay the receiver is told to
trust, or the provider's signed inbound-mail webhook), the hub cannot check SPF itself: the
connection comes from the provider, not the sender. The provider did check, and wrote what it
found in an Authentication-Results header named by its authserv-id.

Only the topmost header with the trusted authserv-id is read: the relay adds its own above
everything the sender wrote, and RFC 8601 5 has it remove any the sender forged under its
name. Headers under any other authserv-id are the sender's words and are ignored. The
parser is authres, the RFC's reference implementation by dkimpy's maintainers."""

from __future__ import annotations

import logging
from email import policy
from email.parser import BytesHeaderParser

import authres

from hub.channels.email_smtp.sender_auth import SenderCheck, aligned, from_domain_of

log = logging.getLogger(__name__)


def _trusted_header(raw: bytes, authserv_id: str) -> authres.AuthenticationResultsHeader | None:
    try:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        values = headers.get_all("Authentication-Results") or []
    except Exception:  # hostile header bytes: no verdict to read
        return None
    wanted = authserv_id.strip().lower()
    for value in values:
        text = " ".join(str(value).split())
        try:
            parsed = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {text}")
        except Exception:  # noqa: S112 - one unreadable header must not hide the relay's
            continue
        if str(parsed.authserv_id).lower() == wanted:
            return parsed
    return None


def _property(result: authres.AuthenticationResult, ptype: str, name: str) -> str | None:
    for prop in result.properties:
        if prop.type.lower() == ptype and prop.name.lower() == name and prop.value:
            return str(prop.value).strip().lower()
    return None


def check_relayed(raw: bytes, authserv_id: str) -> SenderCheck:
    """The trusted relay's verdict: its DMARC result when it gives one, else an aligned
    DKIM or SPF pass it reports (relaxed alignment: a domain without DMARC asks no more)."""
    header = _trusted_header(raw, authserv_id)
    if header is None:
        return SenderCheck(False, "relay_missing")
    domain = from_domain_of(raw)
    if domain is None:
        return SenderCheck(False, "no_from")
    results: dict[str, list[authres.AuthenticationResult]] = {}
    for r in header.results:
        results.setdefault((r.method or "").lower(), []).append(r)
    dmarc = [(r.result or "").lower() for r in results.get("dmarc", [])]
    if "pass" in dmarc:
        return SenderCheck(True, "relay_pass")
    if "fail" in dmarc:
        return SenderCheck(False, "dmarc_fail")
    for r in results.get("dkim", []):
        signer = (
            _property(r, "header", "d") or (_property(r, "header", "i") or "").partition("@")[2]
        )
        if (r.result or "").lower() == "pass" and signer and aligned(signer, domain, strict=False):
            return SenderCheck(True, "relay_pass")
    spf_results = [(r.result or "").lower() for r in results.get("spf", [])]
    for r in results.get("spf", []):
        mail_from = _property(r, "smtp", "mailfrom") or _property(r, "smtp", "helo") or ""
        identity = mail_from.rpartition("@")[2]
        if (
            (r.result or "").lower() == "pass"
            and identity
            and aligned(identity, domain, strict=False)
        ):
            return SenderCheck(True, "relay_pass")
    if "temperror" in dmarc or "temperror" in spf_results:
        return SenderCheck(False, "temperror")
    if "fail" in spf_results:
        return SenderCheck(False, "spf_fail")
    if "softfail" in spf_results:
        return SenderCheck(False, "spf_softfail")
    return SenderCheck(False, "relay_fail")
