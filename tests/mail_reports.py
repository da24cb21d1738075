"""Bounces built for table tests: an RFC 3464 report with the recipient blocks asked for, and a
bounce written for people quoting the original's headers. Shared by the bounce tables so one
report shape is tested everywhere."""

from __future__ import annotations

OUR_ID = "<0192f3a0-7c1e-7d2a-9b1c-3f4e5a6b7c8d@reply.demo-clinic.example.org>"
SLOW = "Final-Recipient: rfc822; slow.patient@example.org"


def multi(*blocks: str, quoted: bool = True) -> bytes:
    """An RFC 3464 report with one recipient block per argument ("|" between lines)."""
    fields = "\n\n".join(b.replace("|", "\n") for b in blocks)
    headers = (
        f"--B\nContent-Type: text/rfc822-headers\n\nMessage-ID: {OUR_ID}\n\n" if quoted else ""
    )
    return f"""From: MAILER-DAEMON@mx.example.org
To: bounces@reply.demo-clinic.example.org
Subject: Delivery Status Notification
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Report.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

{fields}

{headers}--B--
""".replace("\n", "\r\n").encode()


def report(fields: str) -> bytes:
    """A report about slow.patient@example.org whose block also holds ``fields``."""
    return multi(f"{SLOW}|{fields}")


def plain(body: str) -> bytes:
    """A bounce written for people, quoting the original's headers (no report part)."""
    return f"""From: MAILER-DAEMON@mx.example.org
To: bounces@reply.demo-clinic.example.org
Subject: Mail delivery
Content-Type: text/plain

{body}

<slow.patient@example.org>:

------ original headers ------
Message-ID: {OUR_ID}
To: slow.patient@example.org
""".replace("\n", "\r\n").encode()
