"""Fetch MMS media from the provider with the account's credentials; store it encrypted."""

from __future__ import annotations

import asyncio
import logging
import uuid

import aiohttp

from hub.config import Settings
from hub.inbox import actions
from hub.inbox.actions.media import ALLOWED_CONTENT_TYPES, MAX_ATTACHMENT_BYTES
from worker.runtime import job_runtime

log = logging.getLogger(__name__)

FETCH_TRIES = 3
"""Attempts per file before it is marked failed (a 5xx or timeout is retried)."""
FETCH_TIMEOUT_S = 30.0


class PermanentFetchError(Exception):
    pass


async def _download(url: str, auth: aiohttp.BasicAuth | None) -> tuple[str, bytes]:
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, auth=auth) as response,
    ):
        if response.status in (401, 403, 404):
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
        auth = (
            aiohttp.BasicAuth(s.twilio_account_sid, s.twilio_auth_token)
            if s.twilio_account_sid and s.twilio_auth_token
            else None
        )
        reason = "unknown error"
        for attempt in range(1, FETCH_TRIES + 1):
            try:
                content_type, data = await _download(pending.source_url, auth)
            except PermanentFetchError as exc:
                reason = str(exc)
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = f"could not download ({type(exc).__name__})"
                if attempt < FETCH_TRIES:
                    await asyncio.sleep(4 ** (attempt - 1))  # backoff between tries, not a wait
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
