"""Denied access, noted where the access rule says no and audited by whoever served the request.

The rule answers "not found" for a record the person may not see (so its existence does not
leak), and that answer rolls back the request's transaction, audit rows included. So the rule
only notes the denial here, in the request's context; the page, API or socket that served the
request writes the notes in a transaction of its own once it has answered (164.312(b): a
person probing other teams' conversations shows up in the audit log).

Only records that exist are noted: an id that names nothing is a typo or a stale link, not a
look at someone else's patient.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from hub.audit import Actor, record
from hub.db import Database

DENIED_ACTION = "access.denied"


@dataclass(frozen=True)
class Denial:
    actor: Actor
    subject_type: str
    subject_id: uuid.UUID


_noted: ContextVar[list[Denial] | None] = ContextVar("hub_denials", default=None)


def note_denied(actor: Actor, subject_type: str, subject_id: uuid.UUID) -> None:
    """Remember a denial for the request being served (outside one, nothing is kept: a
    background job acting for nobody has no one to audit)."""
    noted = _noted.get()
    if noted is not None:
        noted.append(Denial(actor, subject_type, subject_id))


@contextmanager
def watching_denials() -> Iterator[list[Denial]]:
    """Collect the denials of everything run inside; the caller audits them afterwards."""
    noted: list[Denial] = []
    token = _noted.set(noted)
    try:
        yield noted
    finally:
        _noted.reset(token)


async def do_audit_denials(db: Database, denials: list[Denial], surface: str) -> None:
    """One audit event per denial, naming where it was asked for ("page", "api", "socket")."""
    if not denials:
        return
    async with db.transaction() as session:
        for denial in dict.fromkeys(denials):  # a page that asks twice is one denial
            await record(
                session,
                denial.actor,
                DENIED_ACTION,
                denial.subject_type,
                denial.subject_id,
                {"surface": surface},
            )
