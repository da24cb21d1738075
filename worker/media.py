"""Fetch MMS media from the provider with the account's credentials; store it encrypted."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid

import aiohttp
from yarl import URL

from hub.config import Settings
from hub.inbox import actions
from hub.inbox.actions.media import ALLOWED_CONTENT_TYPES, MAX_ATTACHMENT_BYTES
from worker.runtime import job_runtime

log = logging.getLogger(__name__)

FETCH_TRIES = 3
"""Attempts per file before it is marked failed (a 5xx or timeout is retried)."""
FETCH_TIMEOUT_S = 30.0
"""Whole download, redirects included."""
REDIRECTS = (301, 302, 303, 307, 308)


class PermanentFetchError(Exception):
    pass


def basic_auth(user: str, password: str) -> str:
    # Built by hand: aiohttp.BasicAuth is deprecated as of aiohttp 3.14.
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def download(url: str, authorization: str | None) -> tuple[str, bytes]:
    """GET a provider's media URL. Twilio answers with a redirect to a short-lived CDN URL:
    follow one, but never carry the account's credentials to another host."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url, headers=headers, allow_redirects=False) as first:
            location = first.headers.get("Location")
            if first.status not in REDIRECTS or not location:
                return await _read(first)
            target = first.url.join(URL(location))
            same_host = (target.scheme, target.host, target.port) == (
                first.url.scheme,
                first.url.host,
                first.url.port,
            )
        async with session.get(
            target, headers=headers if same_host else {}, allow_redirects=False
        ) as response:
            return await _read(response)


async def _read(response: aiohttp.ClientResponse) -> tuple[str, bytes]:
    if response.status in (401, 403, 404, 410):
        raise PermanentFetchError(f"the provider answered {response.status}")
    response.raise_for_status()
    content_type = response.content_type.lower()
    if content_type not in ALLOWED_CONTENT_TYPES:
        raise PermanentFetchError(f"files of type {content_type} are not accepted")
    declared = response.content_length
    if declared is not None and declared > MAX_ATTACHMENT_BYTES:
        raise PermanentFetchError(f"file is larger than {MAX_ATTACHMENT_BYTES} bytes")
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise PermanentFetchError(f"file is larger than {MAX_ATTACHMENT_BYTES} bytes")
    return content_type, bytes(data)


async def run_fetch_media(attachment_id: uuid.UUID, settings: Settings | None = None) -> str:
    async with job_runtime(settings) as rt:
        pending = await actions.do_pending_attachment(rt.db, attachment_id)
        if pending is None:
            return "nothing to fetch"
        s = rt.settings
        authorization = (
            basic_auth(s.twilio_account_sid, s.twilio_auth_token)
            if s.twilio_account_sid and s.twilio_auth_token
            else None
        )
        reason = "unknown error"
        for attempt in range(1, FETCH_TRIES + 1):
            try:
                content_type, data = await download(pending.source_url, authorization)
            except PermanentFetchError as exc:
                reason = str(exc)
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = f"could not download ({type(exc).__name__})"
                if attempt < FETCH_TRIES:
                    await asyncio.sleep(4 ** (attempt - 1))  # backoff between tries
                continue
            await rt.release(
                await actions.do_store_attachment(rt.db, rt.ring, attachment_id, content_type, data)
            )
            return "stored"
        log.warning(
            "media fetch failed", extra={"attachment_id": str(attachment_id), "why": reason}
        )
        await rt.release(await actions.do_fail_attachment(rt.db, attachment_id, reason))
        return f"failed: {reason}"
