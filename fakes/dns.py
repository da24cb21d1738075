"""DNS answers from a table, for sender checks (SPF, DKIM keys, DMARC policies) in tests and
the demo: the hub's ``Resolver`` protocol, so no test reaches the internet.

    dns = FakeResolver()
    dns.txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    dns.txt("_dmarc.example.org", "v=DMARC1; p=reject")
    dns.fail("slow.example.org")        # every lookup under it: a temporary error

Names not in the table do not exist (an empty answer), as NXDOMAIN reads to the checks."""

from __future__ import annotations

import socket
import threading
from collections import defaultdict

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

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


class DnsServer:
    """The table above served over real DNS (UDP, on 127.0.0.1), for tests of the resolver
    that talks to servers: answers what the table holds, NXDOMAIN for names it lacks, and
    nothing at all for names marked failing (so the asker's time box is what ends the wait).

        with DnsServer(table) as server:
            DnsResolver(nameservers=["127.0.0.1"], port=server.port).lookup(name, "TXT")
    """

    def __init__(self, table: FakeResolver) -> None:
        self.table = table
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            answer = self._answer(dns.message.from_wire(data))
            if answer is not None:
                self._socket.sendto(answer.to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        rdtype = dns.rdatatype.to_text(question.rdtype)
        response = dns.message.make_response(query)
        try:
            values = self.table.lookup(name, rdtype)
        except DnsTempError:
            return None  # a server that never answers
        except ValueError:
            values = []
        if not values and not any(n == self.table._name(name) for n, _ in self.table.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        for value in values:
            text = _quoted(value) if rdtype == "TXT" else value
            if rdtype in ("MX", "PTR") and not text.endswith("."):
                text += "."  # the table's names are absolute
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", rdtype, text))
        return response


def _quoted(value: str) -> str:
    """A TXT value as zone-file text: 255-byte strings, quoted and escaped."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
