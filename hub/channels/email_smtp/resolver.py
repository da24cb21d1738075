"""DNS for sender checks (SPF, DKIM keys, DMARC policies) behind a small protocol, so tests
answer from a table and never reach the internet, and every lookup is time-boxed.

A lookup that cannot be answered (timeout, no server answering, SERVFAIL) raises
``DnsTempError``: the check says "temperror" (sender not verified, mail kept), never that the
sender is forged, and never drops the mail."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import dns.exception
import dns.resolver

DEFAULT_DNS_TIMEOUT_S = 3.0
"""Seconds one DNS lookup may take before the check calls it a temporary error."""

RECORD_TYPES = frozenset({"A", "AAAA", "MX", "TXT", "PTR"})
"""What the sender checks ask for (SPF mechanisms, DKIM keys, DMARC policies)."""


class DnsTempError(Exception):
    """A lookup that got no answer in time, or an answer saying the server failed."""


class Resolver(Protocol):
    def lookup(self, name: str, rdtype: str) -> list[str]:
        """The records of ``name``, as text: an A/AAAA address, "10 mx.example.org" for MX,
        a host name for PTR, and for TXT one string per record with its parts joined.

        An empty list when the name or the type does not exist; ``DnsTempError`` when it
        could not be found out."""
        ...


class DnsResolver:
    """The system's resolvers (/etc/resolv.conf) through dnspython, each lookup time-boxed."""

    def __init__(
        self,
        timeout_s: float = DEFAULT_DNS_TIMEOUT_S,
        *,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
    ) -> None:
        """``nameservers``: ask these instead of the system's (tests run a server of their own)."""
        self.timeout_s = timeout_s
        self._resolver = dns.resolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            self._resolver.nameservers = list(nameservers)
            self._resolver.port = port

    def lookup(self, name: str, rdtype: str) -> list[str]:
        if rdtype not in RECORD_TYPES:
            raise ValueError(f"record type {rdtype} is not one the sender checks use")
        try:
            answer = self._resolver.resolve(
                name, rdtype, lifetime=self.timeout_s, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException as exc:
            # Timeouts, SERVFAIL from every server, malformed answers: none says the
            # record is absent, so none may count against the sender.
            raise DnsTempError(type(exc).__name__) from None
        values: list[str] = []
        for rdata in answer.rrset or ():
            if rdtype == "TXT":
                values.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            elif rdtype == "MX":
                values.append(f"{rdata.preference} {rdata.exchange.to_text(True)}")
            elif rdtype == "PTR":
                values.append(rdata.target.to_text(True))
            else:
                values.append(rdata.address)
        return values
