"""Synthetic demo data: fictional people, 555-01xx numbers, example.org addresses.

Nothing here is or resembles a real patient. Loading is idempotent: a second run adds nothing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from hub.audit import Actor
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, Role
from hub.inbox import actions
from hub.inbox.models import Patient, StaffUser
from hub.inbox.passwords import hash_password, one_time_password, verify_password
from hub.inbox.schemas import NewPatient, NewStaffUser

log = logging.getLogger(__name__)

DEMO_ADMIN_EMAIL = "admin@demo-clinic.example.org"
DEMO_TEAMS = (
    ("Front desk", "America/New_York"),
    ("Nursing", "America/New_York"),
    ("Billing", "America/Chicago"),
)
DEMO_STAFF = (
    ("dana.agent@demo-clinic.example.org", "Dana Demo", Role.AGENT, ["Front desk"]),
    ("noor.nurse@demo-clinic.example.org", "Noor Demo", Role.AGENT, ["Nursing"]),
    (
        "cole.coord@demo-clinic.example.org",
        "Cole Demo",
        Role.COORDINATOR,
        ["Front desk", "Nursing"],
    ),
)
DEMO_PATIENTS = (
    ("Avery Sample", "+1 (555) 010-0101", "avery.sample@example.org", "America/New_York", "en"),
    ("Blake Placeholder", "555-010-0102", None, "America/Chicago", "en"),
    ("Casey Fictional", "+15550100103", "casey.fictional@example.org", "America/Denver", "es"),
    ("Devon Testperson", "(555) 010-0104", "devon@example.org", "America/Los_Angeles", "en"),
    ("Emery Madeup", "+1 555 010 0105", None, "America/New_York", "fr"),
)
DEMO_CLINIC_NUMBER = "+15550109999"
"""The demo clinic's (fictional) texting number."""
DEMO_LIVE_TEXTS = (
    ("+15550100102", "Running 10 minutes late for my 3pm, sorry!"),
    ("+15550100106", "Hello, I'm new here. Do you take walk-ins?"),
)
"""Texts the demo sends through the local fake Twilio on every start, so the webhook path
(signature check, patient lookup, threading) runs for real; the second is an unknown number."""
DEMO_MESSAGES = (
    ("Hi, can I move my appointment on Thursday to the afternoon?",),
    ("Thanks! See you then.",),
    ("Is the clinic open on Saturday?",),
    ("I have a question about my bill from last month.",),
    ("C",),
)


DEMO_HOURS = {day: [["08:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
DEMO_CANNED = (
    (
        "Appointment confirmed",
        "Thanks {{ first_name }}, your appointment is confirmed. "
        "Reply here if anything changes. {{ clinic_name }}",
    ),
    (
        "Please call us",
        "Hi {{ first_name }}, could you call us when you have a moment? {{ clinic_name }}",
    ),
)


async def _configure_front_desk(db: Database) -> None:
    """The demo's default team gets business hours, an after-hours reply and saved replies."""
    from hub.inbox.models import CannedResponse, Conversation, Team

    async with db.transaction() as session:
        front = (await session.scalars(select(Team).where(Team.name == "Front desk"))).one()
        if not front.business_hours:
            front.is_default = True
            front.business_hours = DEMO_HOURS
            # English in the clinic's words; Spanish speakers get the shipped translation.
            front.after_hours_enabled = True
            front.after_hours_replies = {
                "en": "Thanks for your message. We are closed now and will answer when we open "
                "(weekdays 8am-6pm). In an emergency call 911."
            }
        if not (await session.scalars(select(CannedResponse).limit(1))).first():
            for title, body in DEMO_CANNED:
                session.add(CannedResponse(title=title, body=body))
        for conversation in (
            await session.scalars(select(Conversation).where(Conversation.team_id.is_(None)))
        ).all():
            conversation.team_id = front.id


DEMO_PASSWORDS_FILE = "demo-passwords.json"
"""Under the var directory: the demo staff's passwords, so they survive a restart and the
sign-in page can offer one click per person (demo mode only)."""


@dataclass(frozen=True)
class DemoAccount:
    email: str
    name: str
    role: Role
    password: str | None
    """None when someone changed it since the demo set it: theirs is not known here."""


@dataclass(frozen=True)
class DemoSummary:
    admin_email: str
    admin_password: str | None
    patients_created: int
    accounts: tuple[DemoAccount, ...] = ()

    @property
    def first_run(self) -> bool:
        """The run that loaded the patients: the only one that plays the sample texts."""
        return self.patients_created > 0


def _read_passwords(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("demo: %s is not JSON; new demo passwords are set", path.name)
        return {}
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def _write_passwords(path: Path | None, passwords: dict[str, str]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Readable by this account only, like the dev key ring beside it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(passwords, out, indent=2)


async def _ensure_staff(db: Database, passwords_file: Path | None) -> tuple[DemoAccount, ...]:
    """The demo's admin and staff, each with a password kept in ``passwords_file``.

    An account whose kept password still opens it keeps it (a restart changes nothing); one
    the file does not know (an older demo's, or a lost file) gets a new one; one whose person
    chose their own keeps theirs, and the demo no longer offers it by one click."""
    actor = Actor.system("demo")
    stored = _read_passwords(passwords_file)
    people = (
        (DEMO_ADMIN_EMAIL, "Demo Admin", Role.ADMIN, [t for t, _ in DEMO_TEAMS]),
        *DEMO_STAFF,
    )
    accounts = []
    for email, name, role, teams in people:
        async with db.transaction() as session:
            found = (
                await session.scalars(select(StaffUser).where(StaffUser.email == email))
            ).first()
            kept = stored.get(email)
            if found is not None and kept is not None:
                if not verify_password(found.password_hash, kept):
                    del stored[email]
                    accounts.append(DemoAccount(email, name, role, None))
                    continue
            elif found is not None:
                stored[email] = one_time_password()
                found.password_hash = hash_password(stored[email])
                found.must_change_password = False
        if found is None:
            stored[email] = kept or one_time_password()
            await actions.do_add_staff_user(
                db,
                actor,
                NewStaffUser(email, name, stored[email], role, teams, must_change_password=False),
            )
        accounts.append(DemoAccount(email, name, role, stored[email]))
    _write_passwords(passwords_file, stored)
    return tuple(accounts)


async def load_demo_data(
    db: Database, ring: KeyRing, region: str, passwords_file: Path | None = None
) -> DemoSummary:
    """Teams, staff and patients of the demo; a second run adds nothing and changes no
    password (``passwords_file`` keeps them; without one, every run sets new ones)."""
    actor = Actor.system("demo")
    for name, tz in DEMO_TEAMS:
        await actions.do_ensure_team(db, actor, name, tz)
    await _configure_front_desk(db)
    accounts = await _ensure_staff(db, passwords_file)

    async with db.reader() as session:
        existing = int(await session.scalar(select(func.count()).select_from(Patient)) or 0)
    created = 0
    if existing == 0:
        for (name, phone, email, tz, lang), (body,) in zip(
            DEMO_PATIENTS, DEMO_MESSAGES, strict=True
        ):
            patient_id = await actions.do_create_patient(
                db,
                ring,
                actor,
                NewPatient(
                    name=name, phone=phone, email=email, time_zone=tz, language=lang, verified=True
                ),
                region=region,
            )
            await actions.do_record_inbound(db, ring, patient_id, Channel.SMS, body)
            created += 1
        await _configure_front_desk(db)  # puts the new conversations in the default team
    return DemoSummary(DEMO_ADMIN_EMAIL, accounts[0].password, created, accounts)
