"""How a call ended, or why Twilio would not place it -> what the hub does about it.

A call that was not answered has no Twilio error code: its CallStatus (busy, no-answer) is the
reason, so those statuses are the codes here. Codes from https://www.twilio.com/docs/api/errors;
anything not listed fails permanently with Twilio's code in the reason, as for SMS.
"""

from __future__ import annotations

from hub.channels.base import FailureClass
from hub.channels.twilio_sms.errors import FAILURES as SMS_FAILURES

NO_ANSWER = "no-answer"
BUSY = "busy"
FAILED = "failed"
CANCELED = "canceled"

FAILURES: dict[str, FailureClass] = {
    NO_ANSWER: FailureClass(NO_ANSWER, "the patient did not answer the call", transient=True),
    BUSY: FailureClass(BUSY, "the patient's line was busy", transient=True),
    FAILED: FailureClass(
        FAILED, "the call could not be connected (Twilio gave no reason)", transient=False
    ),
    CANCELED: FailureClass(CANCELED, "the call was cancelled before it connected", transient=False),
    "13224": FailureClass(
        "13224", "the number cannot be called (not a valid phone number)", transient=False
    ),
    "13227": FailureClass(
        "13227", "calling this country is not enabled on the Twilio account", transient=False
    ),
    "21215": FailureClass(
        "21215", "calling this country is not enabled on the Twilio account", transient=False
    ),
    "21216": FailureClass("21216", "Twilio blocks calls to this number", transient=False),
    "21217": FailureClass(
        "21217", "the number does not appear to be a phone number that can take calls", False
    ),
    "21210": FailureClass(
        "21210", "the clinic's caller ID is not a verified number on the account", transient=False
    ),
}
# Account-level answers (rate limits, invalid To) mean the same for a call as for a text.
for _code in ("21211", "20429"):
    FAILURES.setdefault(_code, SMS_FAILURES[_code])


def classify(code: str | int | None, fallback: str | None = None) -> FailureClass:
    key = str(code) if code is not None else ""
    if key in FAILURES:
        return FAILURES[key]
    detail = fallback or "no reason given"
    return FailureClass(key or "unknown", f"Twilio error {key or '?'}: {detail}", transient=False)
