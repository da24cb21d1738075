"""What each failure code stored on a message means, in a clinic manager's words.

Codes come from four places: Twilio's error codes (https://www.twilio.com/docs/api/errors) and
a call's end status; the mail server's SMTP reply (``smtp_550``) or a bounce's enhanced status
code (``bounce_5.1.1``, RFC 3463 as registered at IANA); and the hub's own reasons for not
sending (the consent gate's codes, a template that did not render). The one table for the
delivery report, the page and the CSV; a code not listed is shown with its class's meaning.
"""

from __future__ import annotations

TWILIO = {
    "20429": "Twilio limited the rate of requests from the account (too many at once)",
    "21211": "The phone number is not a valid number",
    "21408": "Sending to this country is not enabled on the Twilio account",
    "21610": "The patient unsubscribed at the carrier by texting STOP to this number",
    "21612": "The number cannot be reached by text from this sender",
    "21614": "The number is not a mobile number and cannot receive texts",
    "21635": "The number is a landline, which cannot receive texts",
    "30001": "Twilio's queue for the sending number overflowed",
    "30002": "The Twilio account is suspended",
    "30003": "The phone was unreachable: switched off, no signal, or cannot take texts",
    "30004": "The message was blocked: the patient or their carrier blocks this sender",
    "30005": "The carrier does not know the number, or the phone is switched off",
    "30006": "The number is a landline or its carrier cannot receive these texts",
    "30007": "The carrier filtered the message as spam or against its rules",
    "30008": "The carrier reported an unknown error",
    "30009": "Part of a long message was lost on the way",
    "30010": "The message cost more than the account's set maximum price",
    "30032": "The toll-free sending number is not verified",
    "30034": "The sending number is not registered for business texting (US A2P 10DLC)",
    "63016": "WhatsApp: free text can only be sent within 24 hours of the patient's last "
    "message; outside it only an approved template may be sent",
    "13224": "The number cannot be called: not a valid or supported phone number",
    "13227": "Calling this country is not enabled on the Twilio account",
    "21210": "The clinic's caller ID is not a verified number on the account",
    "21215": "Calling this country is not enabled on the Twilio account",
    "21216": "Twilio blocks calls to this number",
    "21217": "The number does not appear to be a phone number that can take calls",
    "no-answer": "The patient did not answer the call",
    "busy": "The patient's line was busy",
    "failed": "The call could not be connected",
    "canceled": "The call was cancelled before it connected",
}
"""Twilio's codes (messaging and voice) and a call's final status."""

SMTP_REPLY = {
    "421": "The mail server was unavailable and closed the connection",
    "450": "The mailbox was unavailable for now (busy, or a greylisting delay)",
    "451": "The mail server had a local error and gave up for now",
    "452": "The mail server was out of storage for now",
    "550": "The mailbox does not exist or does not take mail from the clinic",
    "551": "The address is not served by that mail server",
    "552": "The mailbox is over its storage allowance",
    "553": "The address is not allowed (its form is invalid)",
    "554": "The mail server refused the message (often a spam or policy rule)",
    "unreachable": "The clinic's mail server could not be reached",
}
"""Basic SMTP reply codes (RFC 5321) as the hub stores them: ``smtp_<code>``."""

ENHANCED = {
    "0.0": "Other or undefined status",
    "1.0": "Something about the address",
    "1.1": "The mailbox does not exist (bad destination mailbox address)",
    "1.2": "The domain does not exist or takes no mail (bad destination system)",
    "1.3": "The address is written wrongly (bad mailbox address syntax)",
    "1.6": "The mailbox has moved and left no forwarding address",
    "1.10": "The address accepts no mail (a null MX)",
    "2.0": "Something about the mailbox",
    "2.1": "The mailbox is disabled and not accepting messages",
    "2.2": "The mailbox is full",
    "2.3": "The message is longer than the mailbox allows",
    "3.0": "Something about the receiving mail system",
    "3.1": "The receiving mail system is full",
    "3.2": "The receiving system is not accepting mail",
    "3.4": "The message is too big for the receiving system",
    "4.0": "A network or routing problem",
    "4.1": "The receiving mail server did not answer",
    "4.2": "The connection to the receiving server failed",
    "4.4": "The mail could not be routed to the domain",
    "4.7": "Delivery took too long and the message expired",
    "5.0": "A mail protocol problem",
    "5.3": "Too many recipients",
    "6.0": "A problem with the message's content or format",
    "7.0": "Refused for security or policy reasons",
    "7.1": "Delivery not authorised: the receiving server refused the clinic's mail",
    "7.26": "The receiving server refused mail failing sender authentication (SPF/DKIM/DMARC)",
}
"""RFC 3463 subject.detail codes (class 4 = for now, 5 = for good): ``bounce_5.1.1``."""

ENHANCED_CLASS = {"4": "a temporary failure that persisted", "5": "a permanent failure"}

HUB = {
    "no_channel": "No channel the patient may be reached on could be used (consent, "
    "reachability, or none connected)",
    "template_render": "The message's template could not be filled in for this patient",
    "template": "The message's template could not be used",
    "opted_out": "The patient opted out of this kind of message on this channel",
    "no_opt_in": "The patient has not opted in to this kind of message on this channel",
    "unreachable": "The patient's address was marked unreachable (a landline, a bounce)",
    "no_address": "The patient has no address for this channel",
    "not_connected": "This channel is not connected on the hub",
    "channel_unavailable": "The channel is not available for this patient",
    "call_outside_window": "Calls are only placed within the clinic's calling hours",
    "frequency_cap": "The patient already had as many automated messages as allowed",
    "quiet_hours": "It was the patient's quiet hours",
    "wrong_channel": "The message was handed to the wrong channel",
    "network": "The provider could not be reached",
    "http": "The provider answered with a server error",
    "unknown": "The provider gave no reason",
}
"""The hub's own codes: the consent gate's decisions and sends that never left."""


def meaning(code: str | None) -> str:
    """A code's meaning in plain words (a class's meaning for an unlisted enhanced code)."""
    if not code:
        return "No code recorded"
    if code in HUB:
        return HUB[code]
    if code in TWILIO:
        return TWILIO[code]
    if code.startswith("smtp_"):
        reply = code.removeprefix("smtp_")
        found = SMTP_REPLY.get(reply)
        if found:
            return found
        kind = "refused for now" if reply.startswith("4") else "refused"
        return f"The mail server {kind} the message (SMTP {reply})"
    if code.startswith("bounce_"):
        status = code.removeprefix("bounce_")
        klass, _, rest = status.partition(".")
        what = ENHANCED.get(rest)
        if what is None:
            what = ENHANCED.get(f"{rest.partition('.')[0]}.0", "The message bounced")
        when = ENHANCED_CLASS.get(klass)
        return f"Bounced: {what}" + (f" ({when})" if when else "")
    if code.isdigit():
        return f"Twilio error {code} (see twilio.com/docs/api/errors/{code})"
    return f"Code {code}"
