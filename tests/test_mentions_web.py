"""The Mentions page, GET /api/me/mentions and the @ picker's list, over HTTP (issue 16)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Role
from hub.inbox.actions.conversations import do_add_note
from hub.inbox.models import CannedResponse
from tests.staff_helpers import csrf_of, sign_in
from tests.test_mentions import PASSWORD, conversation_of, person
from web.app import create_app


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    plain = replace(settings, public_url="http://127.0.0.1")
    return await aiohttp_client(create_app(plain, db=db))  # type: ignore[no-any-return]


@pytest.fixture
async def mentioned(db: Database, ring: KeyRing, settings: Settings) -> dict[str, Any]:
    """Rae mentions Dana in two notes, one in each of two conversations."""
    author = await person(db, "Rae Author", "rae@staff.example.org", "Front desk")
    dana = await person(db, "Dana Agent", "dana.agent@staff.example.org", "Front desk")
    await person(db, "Ada Admin", "ada@staff.example.org", role=Role.ADMIN)
    first, second = [await conversation_of(db, "Front desk") for _ in range(2)]
    # The app under test uses the settings' key ring; the notes must open under it.
    keys = settings.keys
    assert keys is not None
    one = await do_add_note(db, keys, author, first, "@Dana Agent can you call back?")
    two = await do_add_note(db, keys, author, second, "@dana.agent lab result is in")
    return {"dana": dana, "first": first, "second": second, "one": one, "two": two}


async def test_the_mentions_page_lists_unread_notes_and_opening_one_reads_it(
    client: TestClient, mentioned: dict[str, Any]
) -> None:
    assert (await sign_in(client, "dana.agent@staff.example.org", PASSWORD)).status == 303

    page = await client.get("/mentions")
    html = await page.text()
    assert page.status == 200
    assert 'href="/mentions" aria-current="page"' in html  # the nav link, current
    assert "2 unread." in html
    assert html.count('class="tag new"') == 2
    assert "lab result is in" in html and "Rae Author" in html
    assert "on an unknown patient's conversation" in html
    assert html.index("lab result") < html.index("call back")  # newest first

    note = mentioned["one"].note_id
    opened = await client.get(f"/mentions/{note}", allow_redirects=False)
    assert opened.status == 303
    assert opened.headers["Location"] == f"/conversations/{mentioned['first']}#note-{note}"

    html = await (await client.get("/mentions")).text()
    assert "1 unread." in html and html.count('class="tag new"') == 1
    unread_only = await (await client.get("/mentions?show=unread")).text()
    assert "lab result is in" in unread_only and "call back" not in unread_only


async def test_someone_else_cannot_open_a_mention_that_is_not_theirs(
    client: TestClient, mentioned: dict[str, Any]
) -> None:
    assert (await sign_in(client, "ada@staff.example.org", PASSWORD)).status == 303
    note = mentioned["one"].note_id
    assert (await client.get(f"/mentions/{note}", allow_redirects=False)).status == 404
    assert (await client.get("/mentions/not-a-uuid", allow_redirects=False)).status == 404
    html = await (await client.get("/mentions")).text()
    assert "No note names you yet." in html


async def test_the_api_lists_mentions_with_the_same_read_state(
    client: TestClient, mentioned: dict[str, Any]
) -> None:
    assert (await sign_in(client, "dana.agent@staff.example.org", PASSWORD)).status == 303
    one, two = mentioned["one"].note_id, mentioned["two"].note_id

    answer = await (await client.get("/api/me/mentions")).json()
    assert answer["unread"] == 2
    assert [(i["note_id"], i["read"], i["author"]) for i in answer["items"]] == [
        (str(two), False, "Rae Author"),
        (str(one), False, "Rae Author"),
    ]
    assert answer["items"][0]["body"] == "@dana.agent lab result is in"
    assert answer["items"][0]["conversation_id"] == str(mentioned["second"])
    assert answer["items"][0]["patient"] is None  # a number nobody has named yet

    # The badge asks for the count alone.
    assert await (await client.get("/api/me/mentions?limit=0")).json() == {
        "items": [],
        "unread": 2,
    }
    # Opening the conversation (the API's GET) reads the notes in it, mentions included.
    assert (await client.get(f"/api/conversations/{mentioned['second']}")).status == 200
    answer = await (await client.get("/api/me/mentions")).json()
    assert answer["unread"] == 1
    assert {i["note_id"]: i["read"] for i in answer["items"]} == {str(two): True, str(one): False}
    older = await (
        await client.get("/api/me/mentions", params={"before": answer["items"][0]["created_at"]})
    ).json()
    assert [i["note_id"] for i in older["items"]] == [str(one)]

    headers = {"X-CSRF-Token": await csrf_of(client, "/mentions")}
    marked = await client.post(
        "/api/me/mentions/read", json={"note_ids": [str(one)]}, headers=headers
    )
    assert await marked.json() == {"marked": 1, "unread": 0}
    unread = await (await client.get("/api/me/mentions?unread=1")).json()
    assert unread == {"items": [], "unread": 0}


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("limit=lots", "limit must be a whole number"),
        ("before=yesterday", "before must be a time like"),
        ("before=2026-12-07T09:30:00", "before needs a time zone"),
        ("unread=maybe", "unread must be 1 or 0"),
    ],
)
async def test_a_wrong_query_says_what_to_send(
    client: TestClient, mentioned: dict[str, Any], query: str, words: str
) -> None:
    assert (await sign_in(client, "dana.agent@staff.example.org", PASSWORD)).status == 303
    answer = await client.get(f"/api/me/mentions?{query}")
    assert answer.status == 400
    assert words in (await answer.json())["error"]["message"]


async def test_mark_read_needs_note_ids(client: TestClient, mentioned: dict[str, Any]) -> None:
    assert (await sign_in(client, "dana.agent@staff.example.org", PASSWORD)).status == 303
    headers = {"X-CSRF-Token": await csrf_of(client, "/mentions")}
    for body in ({}, {"note_ids": []}, {"note_ids": ["nope"]}):
        answer = await client.post("/api/me/mentions/read", json=body, headers=headers)
        assert answer.status == 422, body
        assert "note" in (await answer.json())["error"]["message"]


async def test_the_picker_lists_who_can_open_the_conversation(
    client: TestClient, mentioned: dict[str, Any]
) -> None:
    assert (await sign_in(client, "rae@staff.example.org", PASSWORD)).status == 303
    answer = await client.get(f"/api/conversations/{mentioned['first']}/mention-candidates")
    assert [(p["name"], p["handle"]) for p in (await answer.json())["items"]] == [
        ("Ada Admin", "ada"),
        ("Dana Agent", "dana.agent"),
    ]


async def test_the_reply_box_lists_the_conversation_s_canned_replies(
    client: TestClient, db: Database, mentioned: dict[str, Any]
) -> None:
    async with db.transaction() as session:
        session.add(CannedResponse(title="Parking", body="Lot B, {{ first_name }}."))
    assert (await sign_in(client, "rae@staff.example.org", PASSWORD)).status == 303
    answer = await client.get(f"/api/conversations/{mentioned['first']}/canned-responses")
    assert [r["title"] for r in (await answer.json())["items"]] == ["Parking"]
    missing = await client.get(f"/api/conversations/{uuid.uuid4()}/canned-responses")
    assert missing.status == 404


async def test_the_openapi_document_describes_the_mention_routes(client: TestClient) -> None:
    paths = (await (await client.get("/api/openapi.json")).json())["paths"]
    assert set(paths["/api/me/mentions"]) == {"get"}
    names = {p["name"] for p in paths["/api/me/mentions"]["get"]["parameters"]}
    assert names == {"limit", "before", "unread"}
    assert "post" in paths["/api/me/mentions/read"]
    assert "get" in paths["/api/conversations/{id}/mention-candidates"]
    assert "get" in paths["/api/conversations/{id}/canned-responses"]
