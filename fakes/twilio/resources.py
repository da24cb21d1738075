"""What the fake Twilio serves and records: constants, errors and the resources' shapes."""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web

API_VERSION = "2010-04-01"
_E164 = re.compile(r"\+[1-9]\d{1,14}")
_STATUSES = ("queued", "sending", "sent", "delivered", "undelivered", "failed", "read")
# Twilio never moves a message's status backwards; a late "sent" callback leaves it delivered.
_RANK = {"accepted": 0, "queued": 1, "sending": 2, "sent": 3, "read": 5}
_RANK |= dict.fromkeys(("delivered", "undelivered", "failed"), 4)
_CODE_HTTP = {20003: 401, 20404: 404, 20429: 429, 20500: 500, 20503: 503}
DEFAULT_PAGE_SIZE = 50
"""Messages per list page when PageSize is not given (Twilio's default)."""
MAX_PAGE_SIZE = 1000
"""Twilio answers at most this many per page whatever PageSize asks."""
ERROR_MESSAGES = {
    20001: "Invalid parameter",
    20003: "Authenticate",
    20404: "The requested resource was not found",
    21211: "Invalid 'To' Phone Number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    30003: "Unreachable destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
}
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = set("^{}\\[~]|€\f")  # each costs two septets
_GEO_KEYS = ("Country", "State", "City", "Zip")


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def num_segments(body: str) -> int:
    """Segments Twilio bills for ``body``: GSM-7 160/153 septets, else UCS-2 70/67 units."""
    if all(c in _GSM7 or c in _GSM7_EXT for c in body):
        size, single, multi = len(body) + sum(c in _GSM7_EXT for c in body), 160, 153
    else:
        size, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if size <= single else math.ceil(size / multi)


def twilio_error(status: int, code: int, message: str | None = None) -> web.Response:
    """An error in Twilio's (legacy, non RFC 9457) shape, which the SDK turns into
    TwilioRestException with ``.code``."""
    text = message or ERROR_MESSAGES.get(code) or HTTPStatus(status).phrase
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    body = {"code": code, "message": text, "more_info": more_info, "status": status}
    return web.json_response(body, status=status)


def _rfc2822(when: datetime | None) -> str | None:
    return format_datetime(when) if when else None


@dataclass
class FakeMessage:
    """A message created through the REST API, with every posted field in ``form``."""

    sid: str
    to: str
    from_: str | None
    body: str
    media_urls: list[str]
    messaging_service_sid: str | None
    status_callback: str | None
    form: dict[str, list[str]]
    status: str
    sender: str  # the number callbacks come from: From, or the service's pool number
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    date_updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    date_sent: datetime | None = None
    error_code: int | None = None
    seq: int = 0  # creation order: list pages are cut by it

    def resource(self, account_sid: str) -> dict[str, Any]:
        """The JSON Twilio returns for this Message resource."""
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{self.sid}"
        return {
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": _rfc2822(self.date_created),
            "date_sent": _rfc2822(self.date_sent),
            "date_updated": _rfc2822(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": ERROR_MESSAGES.get(self.error_code) if self.error_code else None,
            # A Messaging Service picks the sender after "accepted"; until then from is null.
            "from": self.from_ or (None if self.status == "accepted" else self.sender),
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(len(self.media_urls)),  # Twilio sends both counts as strings
            "num_segments": str(num_segments(self.body)),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{uri}/Media.json", "feedback": f"{uri}/Feedback.json"},
            "to": self.to,
            "uri": f"{uri}.json",
        }


@dataclass
class ApiRequest:
    method: str
    path: str
    form: dict[str, list[str]]
    status: int


@dataclass
class Webhook:
    """A request the fake POSTed to the hub: a status callback or an inbound message."""

    url: str
    params: dict[str, str]
    signature: str
    status: int | None  # the hub's HTTP answer; None when the connection failed
    text: str = ""
    error: str | None = None
    message_sid: str = ""


def _geo(prefix: str, number: str) -> dict[str, str]:
    # Twilio geolocates numbers by area code; all synthetic +1 numbers land in one place.
    place = ("US", "IL", "SPRINGFIELD", "62701") if number.startswith("+1") else ("",) * 4
    return {prefix + key: value for key, value in zip(_GEO_KEYS, place, strict=True)}
