"""Signing in through the real login form, as a browser would."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

PASSWORD = "correct horse battery"

META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


async def sign_in(
    client: TestClient, email: str, password: str = PASSWORD, headers: dict[str, str] | None = None
) -> Any:
    """Returns the response of the login POST (not followed)."""
    form_page = await client.get("/login")
    assert form_page.status == 200
    token = client.session.cookie_jar.filter_cookies(client.make_url("/login"))["hub_login_csrf"]
    return await client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": token.value, "next": "/"},
        allow_redirects=False,
        headers=headers,
    )


async def csrf_of(client: TestClient, path: str = "/") -> str:
    page = await client.get(path)
    assert page.status == 200, await page.text()
    match = META_CSRF.search(await page.text())
    assert match and match.group(1)
    return match.group(1)


def session_cookie(client: TestClient) -> str:
    return client.session.cookie_jar.filter_cookies(client.make_url("/"))["hub_session"].value
