"""Twilio error codes -> what the hub does about them.

Codes from https://www.twilio.com/docs/api/errors. Anything not listed fails permanently with
Twilio's code in the reason, so a new code is visible, never retried blindly.
"""

from __future__ import annotations

from collections.abc import Callable

from hub.channels.base import FailureClass, FailureEffect

FAILURES: dict[str, FailureClass] = {
    "21610": FailureClass(
        "21610",
        "patient opted out of SMS at the carrier (replied STOP to this number)",
        transient=False,
        effect=FailureEffect.REVOKE_CONSENT,
    ),
    "21211": FailureClass("21211", "the phone number is not a valid number", transient=False),
    "21614": FailureClass(
        "21614",
        "the number is not a mobile number and cannot receive texts",
        transient=False,
        effect=FailureEffect.UNREACHABLE,
        unreachable_reason="landline",
    ),
    "21408": FailureClass(
        "21408", "sending to this country is not enabled on the Twilio account", transient=False
    ),
    "30003": FailureClass(
        "30003", "the handset was unreachable (off or out of coverage)", transient=True
    ),
    "30005": FailureClass(
        "30005", "the carrier did not know the handset (it may be switched off)", transient=True
    ),
    "30001": FailureClass("30001", "Twilio's queue for the sender overflowed", transient=True),
    "30008": FailureClass("30008", "the carrier reported an unknown error", transient=True),
    "20429": FailureClass("20429", "Twilio is rate limiting the account", transient=True),
    "30006": FailureClass(
        "30006",
        "the number is a landline or its carrier cannot receive texts",
        transient=False,
        effect=FailureEffect.UNREACHABLE,
        unreachable_reason="landline",
    ),
    "30004": FailureClass(
        "30004", "the recipient blocked messages from this number", transient=False
    ),
    "30007": FailureClass("30007", "the carrier filtered the message as spam", transient=False),
}

TRANSIENT_HTTP = FailureClass("http", "Twilio answered with a server error", transient=True)
UNREACHABLE_API = FailureClass("network", "could not reach Twilio", transient=True)


def api_failure(
    exc: Exception,
    classify_code: Callable[[str | int | None, str | None], FailureClass] | None = None,
) -> FailureClass:
    """What a failed call to Twilio's REST API means for the send; ``classify_code`` reads
    Twilio's error code (the voice adapter passes its own)."""
    from aiohttp import ClientConnectorError
    from twilio.base.exceptions import TwilioRestException

    if isinstance(exc, TwilioRestException):
        return (
            TRANSIENT_HTTP if exc.status >= 500 else (classify_code or classify)(exc.code, exc.msg)
        )
    reason = f"{UNREACHABLE_API.reason} ({type(exc).__name__})"
    # No connection was made: Twilio never saw the request, so sending again is safe.
    # Anything later (a timeout, a connection dropped mid-answer) may have created it.
    lost = not isinstance(exc, ClientConnectorError)
    return FailureClass(UNREACHABLE_API.code, reason, transient=True, answer_lost=lost)


def classify(code: str | int | None, fallback: str | None = None) -> FailureClass:
    key = str(code) if code is not None else ""
    if key in FAILURES:
        return FAILURES[key]
    detail = fallback or "no reason given"
    return FailureClass(key or "unknown", f"Twilio error {key or '?'}: {detail}", transient=False)
