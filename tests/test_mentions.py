"""Mentions in internal notes (issue 16): who a note names, the person's list with read state,
and the offline alert's throttle. The API, page and worker are in test_mentions_web.py and
test_mentions_mail.py."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from hub.audit import Actor, AuditEvent
from hub.crypto import KeyRing
from hub.db import Database, utcnow
from hub.enums import Channel, Role
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.actions import mentions
from hub.inbox.actions.assignment import do_assign, do_claim_next
from hub.inbox.actions.conversations import do_add_note, do_open_conversation
from hub.inbox.actions.mentions import StaffEntry, find_mentioned
from hub.inbox.exceptions import NotFound
from hub.inbox.models import CannedResponse, Conversation, Patient, StaffUser, Team
from hub.inbox.schemas import NewStaffUser
from hub.outbox import OutboxEvent

PASSWORD = "correct horse battery staple"


async def person(
    db: Database, name: str, email: str, *teams: str, role: Role = Role.AGENT
) -> StaffContext:
    for team in teams:
        await actions.do_ensure_team(db, Actor.system("test"), team)
    staff_id = await actions.do_add_staff_user(
        db, Actor.system("test"), NewStaffUser(email, name, PASSWORD, role, list(teams))
    )
    async with db.reader() as session:
        staff = await session.get(StaffUser, staff_id)
        assert staff is not None
        return StaffContext.of(staff)


async def conversation_of(db: Database, team: str) -> uuid.UUID:
    async with db.transaction() as session:
        team_id = (await session.scalars(select(Team.id).where(Team.name == team))).one()
        patient = Patient(verified=True)
        session.add(patient)
        await session.flush()
        conversation = Conversation(
            patient_id=patient.id, team_id=team_id, channel=Channel.SMS, status="open"
        )
        session.add(conversation)
        await session.flush()
        return conversation.id


async def effects(db: Database, ids: tuple[uuid.UUID, ...]) -> list[tuple[str, dict[str, str]]]:
    async with db.reader() as session:
        rows = (await session.scalars(select(OutboxEvent).where(OutboxEvent.id.in_(ids)))).all()
    return sorted(((r.topic, r.payload) for r in rows), key=lambda e: (e[0], sorted(e[1].items())))


STAFF = [
    StaffEntry(uuid.UUID(int=1), "Sam", "sam"),
    StaffEntry(uuid.UUID(int=2), "Sam Lee", "slee"),
    StaffEntry(uuid.UUID(int=3), "Dana Agent", "dana.agent"),
    StaffEntry(uuid.UUID(int=4), "Émile Roux", "emile"),
]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("@Sam Lee can you call back?", [2]),  # the longest name wins
        ("@sam, and @SAM LEE.", [1, 2]),  # any case; punctuation ends a name
        ("@dana.agent please", [3]),  # the email handle, as before
        ("thanks @Dana Agent!", [3]),
        ("@émile roux and @Dana Agent and @dana.agent", [4, 3]),  # each once, in order named
        ("write to sam@clinic.example.org", []),  # an address is not a mention
        ("@Samantha is new", []),  # a longer word is not "Sam"
        ("@Dana Agents", []),
        ("no mention here", []),
    ],
)
def test_a_note_names_people_by_display_name_or_handle(body: str, expected: list[int]) -> None:
    assert find_mentioned(body, STAFF) == [uuid.UUID(int=i) for i in expected]


async def test_a_note_stores_who_it_mentions_and_queues_their_event_and_alert(
    db: Database, ring: KeyRing
) -> None:
    author = await person(db, "Rae Author", "rae@staff.example.org", "Front desk")
    dana = await person(db, "Dana Agent", "dana.agent@staff.example.org", "Front desk")
    elsewhere = await person(db, "Eli Other", "eli@staff.example.org", "Billing")
    admin = await person(db, "Ada Admin", "ada@staff.example.org", role=Role.ADMIN)
    cid = await conversation_of(db, "Front desk")

    result = await do_add_note(
        db,
        ring,
        author,
        cid,
        "@Dana Agent and @Ada Admin: please call back. @Eli Other cannot see this; @Rae Author",
    )

    # Eli is not in the team (the link would answer "not found"); the author is not notified.
    assert set(result.mentioned) == {dana.staff_id, admin.staff_id}
    assert elsewhere.staff_id not in result.mentioned
    topics = await effects(db, result.effect_ids)
    for staff in (dana, admin):
        assert (
            "notify:mention",
            {
                "conversation_id": str(cid),
                "note_id": str(result.note_id),
                "staff_id": str(staff.staff_id),
                "room": f"staff:{staff.staff_id}",
            },
        ) in topics
        assert (
            "job:staff_alert",
            {
                "alert": f"mention:{staff.staff_id}:{cid}",
                "kind": "mention",
                "staff_id": str(staff.staff_id),
                "conversation_id": str(cid),
            },
        ) in topics
    assert len(topics) == 5  # and the note:new to the team

    listed = await mentions.do_list_mentions(db, ring, dana)
    assert listed.unread == 1
    [item] = listed.items
    assert (item.note_id, item.conversation_id, item.author, item.read) == (
        result.note_id,
        cid,
        "Rae Author",
        False,
    )
    assert item.body.startswith("@Dana Agent and @Ada Admin")
    assert await mentions.do_unread_mentions(db, dana) == 1
    assert await mentions.do_unread_mentions(db, author) == 0
    assert (await mentions.do_list_mentions(db, ring, elsewhere)).items == []


async def test_listing_mentions_is_an_audited_read_and_the_badge_count_is_not(
    db: Database, ring: KeyRing
) -> None:
    author = await person(db, "Rae Author", "rae@staff.example.org", "Front desk")
    dana = await person(db, "Dana Agent", "dana.agent@staff.example.org", "Front desk")
    cid = await conversation_of(db, "Front desk")
    note = await do_add_note(db, ring, author, cid, "@dana.agent see above")

    await mentions.do_unread_mentions(db, dana)
    await mentions.do_list_mentions(db, ring, dana)

    async with db.reader() as session:
        events = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "mention.list"))
        ).all()
    assert [(e.actor, e.detail) for e in events] == [
        (str(dana.actor), {"notes": [str(note.note_id)]})
    ]


async def test_opening_the_mention_or_the_conversation_marks_it_read(
    db: Database, ring: KeyRing
) -> None:
    author = await person(db, "Rae Author", "rae@staff.example.org", "Front desk")
    dana = await person(db, "Dana Agent", "dana.agent@staff.example.org", "Front desk")
    first, second = [await conversation_of(db, "Front desk") for _ in range(2)]
    a = await do_add_note(db, ring, author, first, "@Dana Agent one")
    b = await do_add_note(db, ring, author, second, "@Dana Agent two")
    c = await do_add_note(db, ring, author, second, "@Dana Agent three")
    assert (await mentions.do_list_mentions(db, ring, dana)).unread == 3

    assert await mentions.do_open_mention(db, dana, a.note_id) == first
    # Someone else cannot open (or learn about) Dana's mention.
    with pytest.raises(NotFound):
        await mentions.do_open_mention(db, author, a.note_id)
    listed = await mentions.do_list_mentions(db, ring, dana)
    assert {i.note_id: i.read for i in listed.items} == {
        a.note_id: True,
        b.note_id: False,
        c.note_id: False,
    }
    assert [i.note_id for i in listed.items] == [c.note_id, b.note_id, a.note_id]  # newest first

    await do_open_conversation(db, ring, dana, second)
    assert (await mentions.do_list_mentions(db, ring, dana)).unread == 0
    assert (await mentions.do_list_mentions(db, ring, dana, unread_only=True)).items == []


async def test_mentions_in_conversations_the_person_can_no_longer_see_are_hidden(
    db: Database, ring: KeyRing
) -> None:
    author = await person(db, "Rae Author", "rae@staff.example.org", "Front desk")
    dana = await person(db, "Dana Agent", "dana.agent@staff.example.org", "Front desk")
    cid = await conversation_of(db, "Front desk")
    note = await do_add_note(db, ring, author, cid, "@Dana Agent")
    moved = StaffContext(dana.staff_id, dana.role, frozenset(), dana.display_name)

    assert (await mentions.do_list_mentions(db, ring, moved)).items == []
    assert await mentions.do_unread_mentions(db, moved) == 0
    with pytest.raises(NotFound):
        await mentions.do_open_mention(db, moved, note.note_id)


async def test_the_picker_offers_whoever_can_open_the_conversation_but_oneself(
    db: Database,
) -> None:
    author = await person(db, "Rae Author", "rae@staff.example.org", "Front desk")
    await person(db, "Dana Agent", "Dana.Agent@staff.example.org", "Front desk")
    await person(db, "Eli Other", "eli@staff.example.org", "Billing")
    await person(db, "Ada Admin", "ada@staff.example.org", role=Role.ADMIN)
    cid = await conversation_of(db, "Front desk")

    offered = await mentions.do_mention_candidates(db, author, cid)

    assert [(e.name, e.handle) for e in offered] == [
        ("Ada Admin", "ada"),
        ("Dana Agent", "dana.agent"),
    ]
    outsider = await person(db, "Out Sider", "out@staff.example.org", "Billing")
    with pytest.raises(NotFound):
        await mentions.do_mention_candidates(db, outsider, cid)


async def test_an_alert_is_claimed_once_per_person_and_conversation_per_window(
    db: Database,
) -> None:
    dana = await person(db, "Dana Agent", "dana.agent@staff.example.org", "Front desk")
    cid, other = [await conversation_of(db, "Front desk") for _ in range(2)]
    now = utcnow()
    every = mentions.DEFAULT_ALERT_EVERY

    pause = mentions.DEFAULT_ALERT_PAUSE

    first = await mentions.do_claim_alert(db, dana.staff_id, cid, now=now)
    assert first is not None and first.email == "dana.agent@staff.example.org"
    assert await mentions.do_claim_alert(db, dana.staff_id, cid, now=now + every / 2) is None
    # Another conversation a moment later (a bulk assignment): the first email covers it.
    assert await mentions.do_claim_alert(db, dana.staff_id, other, now=now + pause / 2) is None
    assert await mentions.do_claim_alert(db, dana.staff_id, other, now=now + pause * 2) is not None
    later = now + every + timedelta(seconds=1)
    assert await mentions.do_claim_alert(db, dana.staff_id, cid, now=later) is not None

    # A claim whose email could not be sent is given back: the retry is not held back.
    await mentions.do_unclaim_alert(db, dana.staff_id, cid, later)
    assert await mentions.do_claim_alert(db, dana.staff_id, cid, now=later) is not None


async def test_no_alert_for_someone_deactivated_or_who_cannot_see_it(db: Database) -> None:
    dana = await person(db, "Dana Agent", "dana.agent@staff.example.org", "Front desk")
    eli = await person(db, "Eli Other", "eli@staff.example.org", "Billing")
    cid = await conversation_of(db, "Front desk")
    assert await mentions.do_claim_alert(db, eli.staff_id, cid) is None
    async with db.transaction() as session:
        staff = await session.get(StaffUser, dana.staff_id)
        assert staff is not None
        staff.active = False
    assert await mentions.do_claim_alert(db, dana.staff_id, cid) is None


async def test_assigning_someone_else_queues_their_alert_taking_it_oneself_does_not(
    db: Database,
) -> None:
    lead = await person(db, "Lee Lead", "lee@staff.example.org", "Front desk", role=Role.ADMIN)
    dana = await person(db, "Dana Agent", "dana.agent@staff.example.org", "Front desk")
    cid, waiting = [await conversation_of(db, "Front desk") for _ in range(2)]

    assigned = await do_assign(db, lead.actor, cid, dana.staff_id)
    topics = [t for t, _ in await effects(db, assigned.effect_ids)]
    assert sorted(topics) == ["job:staff_alert", "notify:conversation:assigned"]
    [(_, alert)] = [e for e in await effects(db, assigned.effect_ids) if e[0] == "job:staff_alert"]
    assert alert["kind"] == "assigned" and alert["staff_id"] == str(dana.staff_id)

    mine = await do_assign(db, dana.actor, cid, None)
    again = await do_assign(db, dana.actor, cid, dana.staff_id)
    assert [t for t, _ in await effects(db, again.effect_ids)] == ["notify:conversation:assigned"]
    claimed = await do_claim_next(db, dana.staff_id)
    assert claimed.conversation_id == waiting
    assert [t for t, _ in await effects(db, claimed.effect_ids)] == ["notify:conversation:assigned"]
    assert mine.assignee_id is None


async def test_slash_offers_the_clinic_s_canned_replies_and_the_team_s_own(db: Database) -> None:
    author = await person(db, "Rae Author", "rae@staff.example.org", "Front desk")
    await person(db, "Eli Other", "eli@staff.example.org", "Billing")
    cid = await conversation_of(db, "Front desk")
    async with db.transaction() as session:
        teams = {t.name: t.id for t in (await session.scalars(select(Team))).all()}
        session.add_all(
            [
                CannedResponse(title="Parking", body="Lot B."),
                CannedResponse(title="Desk hours", body="8-5.", team_id=teams["Front desk"]),
                CannedResponse(title="Invoice copy", body="Sent.", team_id=teams["Billing"]),
            ]
        )

    offered = await mentions.do_canned_choices(db, author, cid)

    assert [c.title for c in offered] == ["Desk hours", "Parking"]
    outsider = await person(db, "Out Sider", "out@staff.example.org", "Billing")
    with pytest.raises(NotFound):
        await mentions.do_canned_choices(db, outsider, cid)
