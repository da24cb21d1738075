"""The TOTP second factor: codes accepted once within one step either way, recovery codes
used once, the code step of signing in through real HTTP (nothing reachable half-signed-in,
wrong codes counted toward the lockout), API tokens unaffected, the secret encrypted, and
every change audited."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pyotp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, text

from hub.audit import Actor
from hub.config import Settings
from hub.crypto import KeyRing
from hub.db import Database, encrypted_columns
from hub.errors import HubError
from hub.inbox.actions import second_factor as sf
from hub.inbox.actions.staff import do_create_token, do_deactivate_staff, do_resolve_token
from hub.inbox.models import RecoveryCode, StaffUser
from hub.inbox.second_factor import (
    RECOVERY_ALPHABET,
    check_totp,
    new_recovery_codes,
    normalize_code,
    time_step,
)
from hub.rotation import rotate
from tests.conftest import make_staff
from tests.second_factor_helpers import audited, code_for, submit_code, turn_on
from tests.staff_helpers import PASSWORD, csrf_of, sign_in
from web.app import create_app
from web.keys import REDIS
from web.sessions import MAX_FAILS_PER_ACCOUNT
from web.sign_in_code import DEFAULT_CODE_STEP_S, PENDING_PREFIX

pytestmark = pytest.mark.usefixtures("fresh_redis")

AGENT = "sam.agent@demo-clinic.example.org"
ADMIN = "ada.admin@demo-clinic.example.org"
SYSTEM_ACTOR = Actor.system("test")
NOON = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)


class NoSessions:
    async def destroy_all_for(self, staff_id: Any, keep: str | None = None) -> None:
        return None


@pytest.fixture
async def client(db: Database, settings: Settings, aiohttp_client: Any) -> TestClient:
    plain = replace(settings, public_url="http://127.0.0.1")
    return await aiohttp_client(create_app(plain, db=db))  # type: ignore[no-any-return]


# -- the rules, without the web --------------------------------------------------------------


def test_a_code_is_accepted_one_step_either_way_and_never_twice() -> None:
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    now = time_step(NOON)
    for offset in (-1, 0, 1):
        assert check_totp(secret, totp.generate_otp(now + offset), NOON, None).step == now + offset
    for offset in (-2, 2):
        assert check_totp(secret, totp.generate_otp(now + offset), NOON, None).step is None
    used = check_totp(secret, totp.generate_otp(now), NOON, now)
    assert used.step is None and used.replayed
    older = check_totp(secret, totp.generate_otp(now - 1), NOON, now)
    assert older.step is None and older.replayed
    assert check_totp(secret, totp.generate_otp(now + 1), NOON, now).step == now + 1
    assert check_totp(secret, "12345", NOON, None).step is None


def test_recovery_codes_are_ten_unambiguous_codes_typed_in_any_case() -> None:
    codes = new_recovery_codes()
    assert len(codes) == len(set(codes)) == 10
    for code in codes:
        assert len(code) == 11 and code[5] == "-"
        assert set(code.replace("-", "")) <= set(RECOVERY_ALPHABET)
    assert not set("01ILOilo") & set(RECOVERY_ALPHABET)
    assert normalize_code(" abcde-fgh23 ") == "ABCDEFGH23"
    assert normalize_code("123 456") == "123456"


async def test_turning_on_needs_a_right_code_and_stores_the_secret_encrypted(
    db: Database, ring: KeyRing
) -> None:
    ctx = await make_staff(db, AGENT, role="agent")
    enrolment = await sf.do_start_second_factor(db, ring, ctx, "Demo Clinic")
    assert enrolment.uri.startswith("otpauth://totp/") and "issuer=Demo%20Clinic" in enrolment.uri
    again = await sf.do_start_second_factor(db, ring, ctx, "Demo Clinic")
    assert again.secret == enrolment.secret  # a reload shows the QR code the app may have read
    with pytest.raises(sf.WrongCode, match="not right"):
        await sf.do_enable_second_factor(db, ring, ctx, code_for(enrolment.secret, 3))
    assert not (await sf.do_second_factor_status(db, ctx)).enabled
    codes = await sf.do_enable_second_factor(db, ring, ctx, code_for(enrolment.secret))
    assert len(codes) == 10
    status = await sf.do_second_factor_status(db, ctx)
    assert status.enabled and status.recovery_codes_left == 10
    async with db.reader() as session:
        raw = (
            await session.execute(
                text("SELECT totp_secret_enc FROM inbox_staff_user WHERE email = :e"), {"e": AGENT}
            )
        ).scalar_one()
        hashes = (await session.scalars(select(RecoveryCode.code_hash))).all()
    assert enrolment.secret.encode() not in bytes(raw)
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert not any(c.replace("-", "") in h for c in codes for h in hashes)
    # Key rotation re-encrypts it with the rest: it is marked like every other ciphertext.
    assert ("inbox_staff_user", "totp_secret_enc") in encrypted_columns()
    assert [a for a, _ in await audited(db, ctx.staff_id)][-1] == "staff.second_factor_enable"


# -- signing in through real HTTP -------------------------------------------------------------


async def test_sign_in_asks_for_the_code_and_reaches_nothing_before_it(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    ctx = await make_staff(db, AGENT, role="agent")
    secret, _codes = await turn_on(db, ring, ctx)

    first = await sign_in(client, AGENT)
    assert first.status == 303 and first.headers["Location"] == "/login/code"
    assert first.cookies["hub_session"].value == ""  # any session this browser had ends
    # Half-signed-in: every page, the API and the account page see someone not signed in.
    for path in ("/", "/account", "/admin/staff", "/account/second-factor"):
        held = await client.get(path, allow_redirects=False)
        assert held.status == 303 and held.headers["Location"].startswith("/login"), path
    assert (await client.get("/api/me")).status == 401

    wrong = await submit_code(client, code_for(secret, 5))
    assert wrong.status == 401 and "That code is not right" in await wrong.text()
    # The code turning it on used this step: the app's next code is the one to sign in with.
    done = await submit_code(client, code_for(secret, 1))
    assert done.status == 303 and done.headers["Location"] == "/"
    assert (await client.get("/", allow_redirects=False)).status == 200
    me = await client.get("/api/me")
    assert me.status == 200 and (await me.json())["staff_id"] == str(ctx.staff_id)

    actions = [a for a, _ in await audited(db, ctx.staff_id)]
    assert actions[-2:] == ["staff.second_factor_failed", "staff.login"]
    assert (await audited(db, ctx.staff_id))[-1][1] == {"second_factor": "totp"}


async def test_the_code_step_lasts_five_minutes_then_starts_over(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    ctx = await make_staff(db, AGENT, role="agent")
    await turn_on(db, ring, ctx)
    await sign_in(client, AGENT)
    redis = client.app[REDIS]
    [key] = await redis.keys(PENDING_PREFIX + "*")
    assert 0 < await redis.ttl(key) <= DEFAULT_CODE_STEP_S
    await redis.delete(key)  # as Redis does when the time is up
    late = await client.get("/login/code", allow_redirects=False)
    assert late.status == 303 and late.headers["Location"] == "/login"
    page = await (await client.get("/login")).text()
    assert "the code must follow within 5 minutes" in page
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_a_code_used_to_sign_in_is_refused_when_replayed(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    ctx = await make_staff(db, AGENT, role="agent")
    secret, _ = await turn_on(db, ring, ctx)
    code = code_for(secret, 1)  # not the step used to turn it on
    await sign_in(client, AGENT)
    assert (await submit_code(client, code)).status == 303
    await client.post("/logout", data={"csrf_token": await csrf_of(client)})

    await sign_in(client, AGENT)
    replayed = await submit_code(client, code)
    assert replayed.status == 401 and "That code was already used" in await replayed.text()
    assert (await audited(db, ctx.staff_id))[-1] == (
        "staff.second_factor_failed",
        {"kind": "totp", "reason": "replayed"},
    )
    assert (await client.get("/", allow_redirects=False)).status == 303  # still not signed in


async def test_a_recovery_code_works_once_and_the_page_says_how_many_remain(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    ctx = await make_staff(db, AGENT, role="agent")
    _secret, codes = await turn_on(db, ring, ctx)
    await sign_in(client, AGENT)
    typed = codes[0].lower().replace("-", " ")  # as read off paper
    used = await submit_code(client, typed)
    assert used.status == 303 and used.headers["Location"] == "/"
    account = await (await client.get("/account")).text()
    assert "9 of 10 recovery codes left" in account
    await client.post("/logout", data={"csrf_token": await csrf_of(client)})

    await sign_in(client, AGENT)
    assert (await submit_code(client, codes[0])).status == 401
    assert (await submit_code(client, codes[1])).status == 303
    trail = await audited(db, ctx.staff_id)
    assert ("staff.recovery_code_used", {"left": 9}) in trail
    assert ("staff.recovery_code_used", {"left": 8}) in trail
    assert ("staff.second_factor_failed", {"kind": "recovery_code", "reason": "wrong"}) in trail


async def test_one_recovery_code_used_by_two_sign_ins_at_once_lets_one_in(
    db: Database, ring: KeyRing
) -> None:
    ctx = await make_staff(db, AGENT, role="agent")
    _, codes = await turn_on(db, ring, ctx)
    both = await asyncio.gather(
        sf.do_check_sign_in_code(db, ring, ctx.staff_id, codes[3]),
        sf.do_check_sign_in_code(db, ring, ctx.staff_id, codes[3]),
    )
    assert sorted(v.staff_id is not None for v in both) == [False, True]
    assert (await sf.do_second_factor_status(db, ctx)).recovery_codes_left == 9


async def test_wrong_codes_count_toward_the_same_lockout_as_wrong_passwords(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    ctx = await make_staff(db, AGENT, role="agent")
    await turn_on(db, ring, ctx)
    # The right password again in between must not wipe the count: it would buy more guesses.
    await sign_in(client, AGENT)
    for _ in range(2):
        assert (await submit_code(client, "000000")).status == 401
    await sign_in(client, AGENT)
    for _ in range(MAX_FAILS_PER_ACCOUNT - 3):
        assert (await submit_code(client, "000000")).status == 401
    last = await submit_code(client, "000000")
    assert last.status == 303 and last.headers["Location"] == "/login"
    locked = await sign_in(client, AGENT)
    assert locked.status == 429 and "Too many failed attempts" in await locked.text()
    trail = [a for a, _ in await audited(db, ctx.staff_id)]
    assert trail.count("staff.second_factor_failed") == MAX_FAILS_PER_ACCOUNT
    assert trail[-1] == "staff.login_locked"


async def test_api_tokens_need_no_code_but_still_wait_for_a_one_time_password(
    db: Database, ring: KeyRing
) -> None:
    ctx = await make_staff(db, AGENT, role="agent")
    await turn_on(db, ring, ctx)
    token = await do_create_token(db, SYSTEM_ACTOR, AGENT, "script")
    assert await do_resolve_token(db, token) is not None
    async with db.transaction() as session:
        staff = await session.get(StaffUser, ctx.staff_id)
        assert staff is not None
        staff.must_change_password = True
    assert await do_resolve_token(db, token) is None


async def test_a_deactivated_account_cannot_finish_the_code_step(
    client: TestClient, db: Database, ring: KeyRing
) -> None:
    await make_staff(db, ADMIN, role="admin")
    ctx = await make_staff(db, AGENT, role="agent")
    secret, _ = await turn_on(db, ring, ctx)
    await sign_in(client, AGENT)
    await do_deactivate_staff(db, SYSTEM_ACTOR, AGENT, NoSessions())
    gone = await submit_code(client, code_for(secret, 1))
    assert gone.status == 303 and gone.headers["Location"] == "/login"
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_turning_off_and_new_codes_need_the_password_and_are_audited(
    db: Database, ring: KeyRing
) -> None:
    ctx = await make_staff(db, AGENT, role="agent")
    _, first = await turn_on(db, ring, ctx)
    with pytest.raises(sf.NotConfirmed):
        await sf.do_regenerate_recovery_codes(db, ctx, "not my password at all")
    second = await sf.do_regenerate_recovery_codes(db, ctx, PASSWORD)
    assert not set(first) & set(second)
    with pytest.raises(sf.NotConfirmed):
        await sf.do_disable_second_factor(db, ctx, "not my password at all")
    await sf.do_disable_second_factor(db, ctx, PASSWORD)
    status = await sf.do_second_factor_status(db, ctx)
    assert not status.enabled and status.recovery_codes_left == 0
    with pytest.raises(HubError, match="already off"):
        await sf.do_disable_second_factor(db, ctx, PASSWORD)
    actions = [a for a, _ in await audited(db, ctx.staff_id)]
    assert actions[-3:] == [
        "staff.second_factor_enable",
        "staff.recovery_codes_regenerate",
        "staff.second_factor_disable",
    ]


async def test_key_rotation_reseals_the_secret_and_codes_still_work(
    committed_db: Database,
) -> None:
    old = KeyRing.generate("k1")
    ctx = await make_staff(committed_db, AGENT, role="agent")
    secret, _ = await turn_on(committed_db, old, ctx)
    new = old.with_new_key("k2")
    report = await rotate(committed_db, new, batch_size=10)
    assert report.stale_keys == set()
    only_new = new.without("k1")  # the retired key is gone
    verdict = await sf.do_check_sign_in_code(
        committed_db, only_new, ctx.staff_id, code_for(secret, 1)
    )
    assert verdict.staff_id == ctx.staff_id and verdict.used == "totp"
