"""Twilio's voice webhooks as data (pure): a call's request for TwiML, a keypress, a finished
recording, a transcription. Each parser checks what the hub relies on and raises
``MalformedPayload`` naming the field; nothing here touches the database."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from hub.channels.base import MalformedPayload
from hub.contact import InvalidContact, normalize_phone

PROVIDER = "twilio_voice"
CALL_SID_RE = re.compile(r"^CA[0-9a-fA-F]{32}$")
RECORDING_SID_RE = re.compile(r"^RE[0-9a-fA-F]{32}$")
DIGITS_RE = re.compile(r"^[0-9*#]{0,32}$")
MAX_TRANSCRIPT_CHARS = 20_000
"""Far above what Twilio transcribes from a two-minute recording; more is not from Twilio."""
MAX_RECORDING_S = 24 * 3600
"""Twilio's longest possible recording (a day-long call)."""
TRANSCRIPTION_STATUSES = frozenset({"completed", "failed"})
RECORDING_STATUSES = frozenset({"in-progress", "completed", "absent", "failed"})


@dataclass(frozen=True)
class CallEvent:
    """A request for TwiML about a call: answered, a keypress, a redirect."""

    call_sid: str
    from_address: str | None
    """E.164; None when the caller withheld their number ("anonymous")."""
    to_address: str
    status: str
    direction: str
    answered_by: str | None = None
    digits: str | None = None

    def __repr__(self) -> str:  # addresses are PHI
        return f"CallEvent({self.call_sid}, {self.status})"

    @property
    def machine(self) -> bool:
        """Answering machine detection says no person picked up."""
        return (self.answered_by or "").startswith(("machine", "fax"))


@dataclass(frozen=True)
class RecordingEvent:
    """A finished voicemail: the ``<Record>`` action, or its recording status callback."""

    call_sid: str
    recording_sid: str
    recording_url: str | None
    duration_s: int
    status: str | None
    """RecordingStatus of the status callback; None for the ``<Record>`` action."""
    from_address: str | None = None
    to_address: str | None = None

    def __repr__(self) -> str:
        return f"RecordingEvent({self.recording_sid}, {self.duration_s}s, {self.status})"

    @property
    def empty(self) -> bool:
        """Nothing worth keeping: silence, no file, or Twilio reporting it absent."""
        return self.duration_s <= 0 or not self.recording_url or self.status in ("absent", "failed")

    @property
    def available(self) -> bool:
        """Twilio says the file can be fetched now (the status callback, not the action)."""
        return self.status == "completed"

    @property
    def media_url(self) -> str:
        """Twilio serves a recording as MP3 at its URL plus ".mp3" (WAV without)."""
        assert self.recording_url is not None
        return self.recording_url + ".mp3"


@dataclass(frozen=True)
class TranscriptionEvent:
    call_sid: str
    recording_sid: str
    status: str
    text: str

    def __repr__(self) -> str:  # the transcript is PHI
        return f"TranscriptionEvent({self.recording_sid}, {self.status})"


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise MalformedPayload(f"{name} is missing")
    return value


def _sid(params: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = _required(params, name)
    if not pattern.match(value):
        raise MalformedPayload(f"{name} is not a Twilio {what} sid")
    return value


def _account(params: Mapping[str, str], account_sid: str | None) -> None:
    if account_sid and params.get("AccountSid") not in (None, "", account_sid):
        raise MalformedPayload("AccountSid is not this hub's Twilio account")


def caller(raw: str | None, region: str) -> str | None:
    """The caller's number in E.164, or None for a withheld or unusable caller ID (Twilio
    sends "anonymous", "restricted" or a placeholder such as +266696687)."""
    if not raw or not raw.strip():
        return None
    try:
        return normalize_phone(raw.strip(), region)
    except InvalidContact:
        return None


def parse_call(params: Mapping[str, str], *, region: str, account_sid: str | None) -> CallEvent:
    _account(params, account_sid)
    digits = params.get("Digits")
    if digits is not None and not DIGITS_RE.match(digits.strip()):
        raise MalformedPayload("Digits holds something other than keypad keys")
    return CallEvent(
        call_sid=_sid(params, "CallSid", CALL_SID_RE, "call"),
        from_address=caller(params.get("From"), region),
        to_address=params.get("To", "").strip(),
        status=params.get("CallStatus", "").strip().lower(),
        direction=params.get("Direction", "").strip().lower(),
        answered_by=(params.get("AnsweredBy") or "").strip().lower() or None,
        digits=digits.strip() if digits is not None else None,
    )


def parse_recording(
    params: Mapping[str, str], *, region: str, account_sid: str | None
) -> RecordingEvent:
    _account(params, account_sid)
    url = params.get("RecordingUrl", "").strip() or None
    if url is not None and not url.startswith(("https://", "http://")):
        raise MalformedPayload("RecordingUrl is not an http(s) URL")
    raw_duration = (params.get("RecordingDuration") or "0").strip()
    if not raw_duration.isdigit() or int(raw_duration) > MAX_RECORDING_S:
        raise MalformedPayload("RecordingDuration is not a number of seconds")
    status = (params.get("RecordingStatus") or "").strip().lower() or None
    if status is not None and status not in RECORDING_STATUSES:
        raise MalformedPayload(f"RecordingStatus {status!r} is not a recording status")
    return RecordingEvent(
        call_sid=_sid(params, "CallSid", CALL_SID_RE, "call"),
        recording_sid=_sid(params, "RecordingSid", RECORDING_SID_RE, "recording"),
        recording_url=url,
        duration_s=int(raw_duration),
        status=status,
        from_address=caller(params.get("From"), region),
        to_address=params.get("To", "").strip() or None,
    )


def parse_transcription(
    params: Mapping[str, str], *, account_sid: str | None
) -> TranscriptionEvent:
    _account(params, account_sid)
    status = _required(params, "TranscriptionStatus").lower()
    if status not in TRANSCRIPTION_STATUSES:
        raise MalformedPayload(f"TranscriptionStatus {status!r} is not completed or failed")
    text = params.get("TranscriptionText", "").strip()
    if len(text) > MAX_TRANSCRIPT_CHARS:
        raise MalformedPayload(f"TranscriptionText is longer than {MAX_TRANSCRIPT_CHARS} chars")
    return TranscriptionEvent(
        call_sid=_sid(params, "CallSid", CALL_SID_RE, "call"),
        recording_sid=_sid(params, "RecordingSid", RECORDING_SID_RE, "recording"),
        status=status,
        text=text,
    )
