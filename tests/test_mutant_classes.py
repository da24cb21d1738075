"""Table tests for the rules a mutation trial found untested (issue 15): the order delivery
statuses move in, and who sees which conversations. Each table is written from the rule's
text, not from the code, so a plausible slip in the code makes a row fail."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel, MessageStatus, Role, can_advance
from hub.inbox import actions
from hub.inbox.access import StaffContext
from hub.inbox.actions.listing import InboxFilters, do_list_inbox
from hub.inbox.models import Conversation, Message, Team
from hub.inbox.schemas import NewPatient
from tests.conftest import make_staff
from tests.staff_helpers import sign_in
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

# --- delivery status only moves forward -----------------------------------------------------

S = MessageStatus
FORWARD = {
    (S.QUEUED, S.SENDING),
    (S.QUEUED, S.SENT),
    (S.QUEUED, S.DELIVERED),
    (S.QUEUED, S.READ),
    (S.SENDING, S.SENT),
    (S.SENDING, S.DELIVERED),
    (S.SENDING, S.READ),
    (S.SENT, S.DELIVERED),
    (S.SENT, S.READ),
    (S.DELIVERED, S.READ),
}
"""queued < sending < sent < delivered < read; a callback may skip steps, never go back."""
FAILING = {(old, new) for old in (S.QUEUED, S.SENDING, S.SENT) for new in (S.UNDELIVERED, S.FAILED)}
"""Failure is possible until the provider reports delivery, and then final."""
ALLOWED = FORWARD | FAILING


@pytest.mark.parametrize(
    ("old", "new"),
    list(itertools.product(MessageStatus, MessageStatus)),
    ids=lambda s: s.value,
)
def test_status_moves_only_forward(old: MessageStatus, new: MessageStatus) -> None:
    # Among the refused: failed or undelivered after delivered (a late callback), sent after
    # delivered, anything after failed, and any change to a received (inbound) message.
    assert can_advance(old, new) is ((old, new) in ALLOWED)


# --- the visibility rule --------------------------------------------------------------------

TEAM_A, TEAM_B = uuid.uuid4(), uuid.uuid4()
ROUTED = {"team A": TEAM_A, "team B": TEAM_B, "unrouted": None}


def _sees(role: Role, teams: frozenset[uuid.UUID], team_id: uuid.UUID | None) -> bool:
    """Admins see everything; others see the conversations of their own teams, and nothing
    that no team has (an unrouted conversation is an admin's to route)."""
    return role is Role.ADMIN or (team_id is not None and team_id in teams)


@pytest.mark.parametrize(
    ("role", "teams", "where"),
    list(
        itertools.product(
            list(Role), [frozenset(), frozenset({TEAM_A}), frozenset({TEAM_A, TEAM_B})], ROUTED
        )
    ),
)
def test_can_see_table(role: Role, teams: frozenset[uuid.UUID], where: str) -> None:
    ctx = StaffContext(uuid.uuid4(), role, teams)
    conversation = Conversation(id=uuid.uuid4(), team_id=ROUTED[where])
    assert ctx.can_see(conversation) is _sees(role, teams, ROUTED[where])


@pytest.fixture
async def inbox(db: Database, ring: KeyRing) -> dict[str, uuid.UUID]:
    """One open conversation in team A, one in team B and one no team has."""
    for name in ("Team A", "Team B"):
        await actions.do_ensure_team(db, Actor.system("test"), name)
    async with db.reader() as session:
        teams = {t.name: t.id for t in (await session.scalars(select(Team))).all()}
    placed: dict[str, uuid.UUID] = {}
    for where, team, phone in (
        ("team A", teams["Team A"], "+15550100201"),
        ("team B", teams["Team B"], "+15550100202"),
        ("unrouted", None, "+15550100203"),
    ):
        patient_id = await actions.do_create_patient(
            db,
            ring,
            Actor.system("test"),
            NewPatient(name=f"Patient {where}", phone=phone, email=None),
            region="US",
        )
        message_id = await actions.do_record_inbound(db, ring, patient_id, Channel.SMS, "Hi")
        async with db.transaction() as session:
            message = await session.get(Message, message_id)
            assert message is not None
            conversation = await session.get(Conversation, message.conversation_id)
            assert conversation is not None
            conversation.team_id = team
            placed[where] = conversation.id
    return placed


async def _listed(db: Database, ring: KeyRing, ctx: StaffContext, **query: str) -> set[uuid.UUID]:
    page = await do_list_inbox(db, ring, ctx, InboxFilters.parse(query), limit=100)
    return {row.id for row in page.rows}


@pytest.mark.parametrize("role", ["agent", "coordinator"])
async def test_lists_never_show_unrouted_or_other_teams_conversations(
    db: Database, ring: KeyRing, inbox: dict[str, uuid.UUID], role: str
) -> None:
    member: StaffContext = await make_staff(
        db, f"ana.{role}@demo-clinic.example.org", role=role, teams=("Team A",)
    )
    for view in ("all", "unassigned"):
        assert await _listed(db, ring, member, view=view) == {inbox["team A"]}
    # Asking for another team's conversations by filter finds none.
    other = await _team_id(db, "Team B")
    assert await _listed(db, ring, member, team=str(other)) == set()


async def test_an_agent_in_no_team_sees_nothing_and_an_admin_everything(
    db: Database, ring: KeyRing, inbox: dict[str, uuid.UUID]
) -> None:
    loner: StaffContext = await make_staff(db, "lee.agent@demo-clinic.example.org", role="agent")
    admin: StaffContext = await make_staff(db, "ria.admin@demo-clinic.example.org", role="admin")
    assert await _listed(db, ring, loner) == set()
    assert await _listed(db, ring, loner, view="unassigned") == set()
    assert await _listed(db, ring, admin) == set(inbox.values())


async def test_the_api_list_follows_the_same_rule(
    db: Database, settings: Settings, aiohttp_client: Any, inbox: dict[str, uuid.UUID]
) -> None:
    app = create_app(replace(settings, public_url="http://127.0.0.1"), db=db)
    client: TestClient = await aiohttp_client(app)
    await make_staff(db, "lee.agent@demo-clinic.example.org", role="agent")
    await make_staff(db, "ana.agent@demo-clinic.example.org", role="agent", teams=("Team A",))
    for email, expected in (
        ("lee.agent@demo-clinic.example.org", set()),
        ("ana.agent@demo-clinic.example.org", {str(inbox["team A"])}),
    ):
        client.session.cookie_jar.clear()
        assert (await sign_in(client, email)).status == 303
        response = await client.get("/api/conversations?view=all&status=any")
        assert response.status == 200
        assert {item["id"] for item in (await response.json())["items"]} == expected


async def _team_id(db: Database, name: str) -> uuid.UUID:
    async with db.reader() as session:
        team = (await session.scalars(select(Team).where(Team.name == name))).one()
        return team.id
