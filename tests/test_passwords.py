"""The password policy: at least 12 characters and not guessable (zxcvbn), said in plain words
without echoing the password; applied wherever a person chooses a password (the change page,
`hub user add --password-stdin`, adding a user with a kept password), never to the one-time
passwords the hub generates."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hub.audit import Actor
from hub.config import Settings
from hub.db import Database
from hub.enums import Role
from hub.inbox import actions, queries
from hub.inbox.actions.staff import do_change_password
from hub.inbox.exceptions import WeakPassword
from hub.inbox.password_policy import check_new_password
from hub.inbox.passwords import one_time_password, verify_password
from hub.inbox.schemas import NewStaffUser
from tests.conftest import hub_env, make_staff, sync_url
from tests.staff_helpers import PASSWORD, csrf_of, sign_in
from web.app import create_app

pytestmark = pytest.mark.usefixtures("fresh_redis")

EMAIL = "robin.nurse@demo-clinic.example.org"
STRONG = "velvet orbit canoe lantern"


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("short pass", "Use at least 12 characters"),
        ("password1234", "This password is too common"),
        ("qwertyuiop12", "too easy to guess"),
        ("Password1234", "too easy to guess"),
        ("aaaaaaaaaaaaaaa", "too easy to guess"),
        ("robinnurse2026", "too easy to guess"),  # the person's own name and a year
    ],
)
def test_weak_passwords_are_refused_saying_what_to_do(password: str, says: str) -> None:
    with pytest.raises(WeakPassword) as refused:
        check_new_password(password, user_inputs=(EMAIL, "Robin Nurse"))
    message = str(refused.value)
    assert says in message
    assert password not in message  # never echoed (it may be someone's real password)
    assert "Choose another" in message or "Use at least" in message


def test_zxcvbn_feedback_is_passed_on() -> None:
    with pytest.raises(WeakPassword) as refused:
        check_new_password("qwertyuiop12")
    assert "commonly used password" in str(refused.value)


@pytest.mark.parametrize(
    "password", [STRONG, "correct horse battery", "Tr0ub4dor&3-harbor", "x" * 10 + STRONG * 8]
)
def test_strong_passwords_pass(password: str) -> None:
    check_new_password(password, user_inputs=(EMAIL, "Robin Nurse"))


def test_a_password_too_long_to_be_reasonable_is_refused() -> None:
    with pytest.raises(WeakPassword, match="at most 256"):
        check_new_password(STRONG * 20)


def test_generated_one_time_passwords_need_no_check_but_would_pass_anyway() -> None:
    # Exempt by design; this checks the exemption hides nothing weak.
    for _ in range(20):
        check_new_password(one_time_password())


async def test_changing_ones_password_applies_the_policy(db: Database) -> None:
    ctx = await make_staff(db, EMAIL, role="agent")
    with pytest.raises(WeakPassword, match="too common"):
        await do_change_password(db, ctx, PASSWORD, "password1234")
    with pytest.raises(WeakPassword, match="at least 12"):
        await do_change_password(db, ctx, PASSWORD, "tiny")
    await do_change_password(db, ctx, PASSWORD, STRONG)
    async with db.reader() as session:
        staff = await queries.staff_by_email(session, EMAIL)
        assert staff is not None and verify_password(staff.password_hash, STRONG)


async def test_adding_a_user_with_a_kept_password_applies_the_policy(db: Database) -> None:
    weak = NewStaffUser(EMAIL, "Robin Nurse", "iloveyou1234", Role.AGENT, [])
    with pytest.raises(WeakPassword, match="too easy to guess"):
        await actions.do_add_staff_user(db, Actor.system("test"), weak)
    # A one-time password to replace at first sign-in is the hub's own, and not checked.
    otp = NewStaffUser(EMAIL, "Robin Nurse", one_time_password(), Role.AGENT, [], True)
    assert await actions.do_add_staff_user(db, Actor.system("test"), otp)


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    plain = replace(settings, public_url="http://127.0.0.1")
    return await aiohttp_client(create_app(plain, db=db))  # type: ignore[no-any-return]


async def test_the_password_page_says_what_is_wrong(client: TestClient, db: Database) -> None:
    await make_staff(db, EMAIL, role="agent")
    assert (await sign_in(client, EMAIL)).status == 303
    csrf = await csrf_of(client, "/password")
    refused = await client.post(
        "/password", data={"csrf_token": csrf, "current": PASSWORD, "new": "Password1234"}
    )
    page = await refused.text()
    assert refused.status == 400
    assert "This password is too easy to guess" in page and "Password1234" not in page
    changed = await client.post(
        "/password",
        data={"csrf_token": csrf, "current": PASSWORD, "new": STRONG},
        allow_redirects=False,
    )
    assert changed.status == 303
    await client.post("/logout", data={"csrf_token": csrf})
    assert (await sign_in(client, EMAIL, STRONG)).status == 303


@pytest.mark.slow
def test_hub_user_add_with_a_chosen_password_applies_the_policy(
    fresh_db_url: str, settings: Settings, tmp_path: Path
) -> None:
    env = hub_env(
        HUB_DATABASE_URL=sync_url(fresh_db_url),
        HUB_KEYS=settings.keys.to_spec() if settings.keys else "",
        HUB_VAR_DIR=str(tmp_path / "var"),
        HUB_LOG_FORMAT="text",
    )

    def add(email: str, password: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "hub", "user", "add", email, "--name", "Robin Nurse"]
        return subprocess.run(
            [*command, "--password-stdin"],
            env=env,
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    weak = add("weak.choice@demo-clinic.example.org", "letmein12345")
    assert weak.returncode == 1
    assert "too" in weak.stderr and "letmein12345" not in weak.stderr + weak.stdout
    strong = add("strong.choice@demo-clinic.example.org", STRONG)
    assert strong.returncode == 0, strong.stderr
