"""DNS answers from a table, for sender checks (SPF, DKIM keys, DMARC policies) in tests and
the demo: the hub's ``Resolver`` protocol, so no test reaches the internet.

    dns = FakeResolver()
    dns.txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    dns.txt("_dmarc.example.org", "v=DMARC1; p=reject")
    dns.fail("slow.example.org")        # every lookup under it: a temporary error

Names not in the table do not exist (an empty answer), as NXDOMAIN reads to the checks."""

from __future__ import annotations

from collections import defaultdict

from hub.channels.email_smtp.resolver import RECORD_TYPES, DnsTempError


class FakeResolver:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.failing: set[str] = set()
        self.asked: list[tuple[str, str]] = []

    @staticmethod
    def _name(name: str) -> str:
        return name.lower().rstrip(".")

    def add(self, name: str, rdtype: str, value: str) -> FakeResolver:
        self.records[(self._name(name), rdtype)].append(value)
        return self

    def txt(self, name: str, value: str) -> FakeResolver:
        return self.add(name, "TXT", value)

    def fail(self, name: str) -> FakeResolver:
        """Lookups of ``name`` and names under it time out."""
        self.failing.add(self._name(name))
        return self

    def lookup(self, name: str, rdtype: str) -> list[str]:
        if rdtype not in RECORD_TYPES:
            raise ValueError(f"record type {rdtype} is not one the sender checks use")
        wanted = self._name(name)
        self.asked.append((wanted, rdtype))
        if any(wanted == f or wanted.endswith("." + f) for f in self.failing):
            raise DnsTempError("Timeout")
        return list(self.records.get((wanted, rdtype), []))
