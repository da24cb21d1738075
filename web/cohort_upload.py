"""Cohort files uploaded on the Journeys page: read and checked (size, text encoding), then
kept for the coordinator's confirmation.

An upload is not enrolled at once: the page shows its dry run (``hub.journeys.preview``) and
an "Enroll N patients" button. Between the two requests the file waits in Redis, encrypted
under the key ring with its journey, the coordinator and a random token bound in as associated
data, for PENDING_COHORT_SECONDS; the confirmation takes it out once. Redis, not this process's
memory: the confirmation may reach another ``hub serve`` behind the load balancer. The page
carries only the token.
"""

from __future__ import annotations

import codecs
import io
import re
import secrets
import uuid
from tempfile import SpooledTemporaryFile
from typing import IO

from aiohttp import BodyPartReader, web
from redis.asyncio import Redis

from hub.crypto import CryptoError, KeyRing

MAX_COHORT_BYTES = 20 * 1024 * 1024
"""Largest cohort file accepted from the page (about 150,000 rows)."""
MULTIPART_SLACK = 64 * 1024
"""Room for the form's other fields and part headers around the file."""
SPOOL_BYTES = 1024 * 1024
"""An upload is kept in memory up to this size, then in a temporary file."""
PENDING_COHORT_SECONDS = 30 * 60
"""How long an uploaded cohort waits for "Enroll" after its dry run; then it is dropped and
the file must be uploaded again."""
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


class UploadRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _too_large() -> UploadRefused:
    return UploadRefused(
        413,
        f"The file is larger than {MAX_COHORT_BYTES // (1024 * 1024)} MB; split it into "
        "smaller files (enrolling a patient twice changes nothing).",
    )


async def read_upload(request: web.Request) -> IO[bytes]:
    """The `cohort` file of the multipart form, its size and encoding checked."""
    if (request.content_length or 0) > MAX_COHORT_BYTES + MULTIPART_SLACK:
        raise _too_large()
    # A plain form post sends the CSRF token as a field, so the CSRF check has read the
    # whole form already; the page's script sends it as a header and the file is streamed.
    parsed = request.content.at_eof()
    if parsed:
        field = (await request.post()).get("cohort")
        if not isinstance(field, web.FileField):
            raise UploadRefused(400, "Choose a CSV file to upload.")
        spool = field.file
    else:
        spool = SpooledTemporaryFile(SPOOL_BYTES)  # noqa: SIM115 - handed to the caller open
    try:
        if not parsed:
            await _stream_part(request, spool)
        size = spool.seek(0, io.SEEK_END)
        if size > MAX_COHORT_BYTES:
            raise _too_large()
        if size == 0:
            raise UploadRefused(400, "The file is empty.")
        _check_text(spool)
    except BaseException:
        spool.close()
        raise
    return spool


async def _stream_part(request: web.Request, spool: IO[bytes]) -> None:
    """Copy the `cohort` part to ``spool``, refusing it as soon as it is too large."""
    reader = await request.multipart()
    size = 0
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name != "cohort":
            continue
        while chunk := await part.read_chunk(64 * 1024):
            size += len(chunk)
            if size > MAX_COHORT_BYTES:
                raise _too_large()
            spool.write(chunk)
        return
    raise UploadRefused(400, "Choose a CSV file to upload.")


def _check_text(spool: IO[bytes]) -> None:
    """Whole file first: a binary or mis-encoded file is refused before any row enrolls."""
    spool.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        while chunk := spool.read(256 * 1024):
            if b"\x00" in chunk:
                raise UnicodeDecodeError("utf-8", chunk, 0, 1, "NUL byte")
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UploadRefused(
            400,
            "This is not a CSV text file. Save the spreadsheet as “CSV UTF-8” and upload that.",
        ) from None
    spool.seek(0)


def _pending_key(token: str) -> str:
    return f"hub:cohort:pending:{token}"


def _aad(journey: str, staff_id: uuid.UUID, token: str) -> bytes:
    return f"hub:cohort:{journey}:{staff_id}:{token}".encode()


async def keep_pending(
    redis: Redis, ring: KeyRing, journey: str, staff_id: uuid.UUID, upload: IO[bytes]
) -> str:
    """Store the checked upload until its confirmation; returns the token that names it."""
    token = secrets.token_urlsafe(24)
    upload.seek(0)
    sealed = ring.encrypt(upload.read(), _aad(journey, staff_id, token))
    await redis.set(_pending_key(token), sealed, ex=PENDING_COHORT_SECONDS)
    return token


async def peek_pending(
    redis: Redis, ring: KeyRing, journey: str, staff_id: uuid.UUID, token: str
) -> bytes | None:
    """The upload ``token`` names, left waiting (the mapping screen checks it again with
    other columns); None when it expired, was taken, or is another journey's or person's."""
    if not _TOKEN.fullmatch(token):
        return None
    sealed = await redis.get(_pending_key(token))
    if not isinstance(sealed, bytes):
        return None
    try:
        return ring.decrypt(sealed, _aad(journey, staff_id, token))
    except CryptoError:
        return None  # not this coordinator's or this journey's upload: left for its owner


async def take_pending(
    redis: Redis, ring: KeyRing, journey: str, staff_id: uuid.UUID, token: str
) -> bytes | None:
    """The upload ``token`` names, removed so that it enrolls once; None when it expired, was
    taken already (a second click, another tab), or belongs to another journey or person."""
    data = await peek_pending(redis, ring, journey, staff_id, token)
    # Whoever deletes it enrolls it: two confirmations racing enroll the file once.
    return data if data is not None and await redis.delete(_pending_key(token)) else None


async def drop_pending(
    redis: Redis, ring: KeyRing, journey: str, staff_id: uuid.UUID, token: str
) -> None:
    """Cancel: the upload is forgotten at once rather than at its expiry."""
    await take_pending(redis, ring, journey, staff_id, token)


def as_text(data: IO[bytes]) -> io.TextIOWrapper:
    """The upload as the CSV reader wants it (a spreadsheet's byte order mark dropped)."""
    data.seek(0)
    return io.TextIOWrapper(data, encoding="utf-8-sig", newline="")


def _failed_key(token: str) -> str:
    return f"hub:cohort:failed:{token}"


def _failed_aad(journey: str, staff_id: uuid.UUID, token: str) -> bytes:
    return f"hub:cohort-failed:{journey}:{staff_id}:{token}".encode()


async def keep_failed(
    redis: Redis, ring: KeyRing, journey: str, staff_id: uuid.UUID, text: str
) -> str:
    """The rows a launch did not enroll (a CSV with their reasons), kept for their download
    by the coordinator who launched, sealed as a pending upload is; returns its token."""
    token = secrets.token_urlsafe(24)
    sealed = ring.encrypt(text.encode(), _failed_aad(journey, staff_id, token))
    await redis.set(_failed_key(token), sealed, ex=PENDING_COHORT_SECONDS)
    return token


async def read_failed(
    redis: Redis, ring: KeyRing, journey: str, staff_id: uuid.UUID, token: str
) -> bytes | None:
    """The failed rows ``token`` names; None once expired, or for anyone else."""
    if not _TOKEN.fullmatch(token):
        return None
    sealed = await redis.get(_failed_key(token))
    if not isinstance(sealed, bytes):
        return None
    try:
        return ring.decrypt(sealed, _failed_aad(journey, staff_id, token))
    except CryptoError:
        return None
