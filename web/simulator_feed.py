"""What the demo's patient sees and does, read from and played through the local stand-ins.

The simulator is a client of the hub: texts and calls are the local Twilio stand-in posting
signed webhooks (``fakes/twilio``), mail is posted to the inbound-mail webhook with its HMAC
signature, as a mail provider would. What the clinic sends back is read where the stand-ins
keep it: the fake's messages and calls, and the demo relay's mail directory. Nothing here
reads or writes the database.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr, parsedate_to_datetime
from pathlib import Path
from xml.etree import ElementTree

import phonenumbers

from fakes.twilio import FakeCall, FakeTwilio
from hub.demo import DEMO_PATIENTS

MAX_MAILS_SHOWN = 20
"""Newest mails listed for one address: the directory keeps every demo run's mail."""
MAX_MAIL_BYTES = 2 * 1024 * 1024
"""A saved mail larger than this is listed by its subject only (never loaded whole)."""
MAIL_NAME = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}\.eml$")
"""How the demo relay names the files it keeps (fakes/smtp.py); nothing else is read."""
_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)]")


@dataclass(frozen=True)
class Person:
    name: str
    number: str
    email: str | None


def demo_people(region: str) -> list[Person]:
    """The demo's synthetic patients, with their numbers written as the hub stores them."""
    return [
        Person(name, normalize_number(phone, region) or phone, mail)
        for name, phone, mail, _tz, _lang in DEMO_PATIENTS
    ]


def zone_of(number: str, region: str, default: str) -> str:
    """The simulated patient's zone: a demo patient's own, else ``default`` (the clinic's)."""
    for _name, phone, _mail, zone, _lang in DEMO_PATIENTS:
        if normalize_number(phone, region) == number:
            return zone
    return default


def normalize_number(raw: str, region: str) -> str | None:
    """E.164 for a number a person typed, or None when it cannot be a phone number."""
    try:
        parsed = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def linkify(text: str) -> list[tuple[str, bool]]:
    """Text cut into (part, is_link), so a template can make links without trusting HTML:
    the chat link the clinic sends is opened from the simulator this way."""
    parts: list[tuple[str, bool]] = []
    last = 0
    for m in _URL.finditer(text):
        if m.start() > last:
            parts.append((text[last : m.start()], False))
        parts.append((m.group(0), True))
        last = m.end()
    if last < len(text):
        parts.append((text[last:], False))
    return parts


@dataclass(frozen=True)
class Sent:
    """Something the patient sent from the simulator, with the hub's answer."""

    at: datetime
    channel: str  # "sms" or "email"
    address: str  # the patient's number or mail address
    body: str
    status: int | None
    subject: str = ""


@dataclass
class Simulator:
    """The demo's stand-ins and what the patient sent through them."""

    hub_url: str
    clinic_number: str
    region: str
    fake: FakeTwilio | None
    mail_dir: Path | None
    mail_secret: str | None
    authserv_id: str | None
    clinic_email: str | None
    passwords: dict[str, str] = field(default_factory=dict)
    """Demo staff email -> password, for the sign-in page's one-click list."""
    sent: list[Sent] = field(default_factory=list)

    async def text(self, number: str, body: str) -> int | None:
        """The patient texts the clinic: a signed SMS webhook from the fake."""
        assert self.fake is not None
        status, _ = await self.fake.send_inbound(
            f"{self.hub_url}/webhooks/twilio/sms", number, self.clinic_number, body
        )
        self.sent.append(Sent(datetime.now(UTC), "sms", number, body, status))
        return status

    async def call(self, number: str) -> FakeCall:
        """The patient calls the clinic: the fake posts the signed voice webhook."""
        assert self.fake is not None
        return await self.fake.start_inbound_call(
            f"{self.hub_url}/webhooks/twilio/voice", number, self.clinic_number
        )

    def find_call(self, sid: str, number: str) -> FakeCall | None:
        """One of this number's calls (a sid of someone else's call finds nothing)."""
        if self.fake is None:
            return None
        return next((c for c in calls_of(self.fake, number) if c.sid == sid), None)


# -- texts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextItem:
    at: datetime
    mine: bool
    body: str
    status: str  # the clinic's message status, or the hub's answer to the patient's text


def texts(sim: Simulator, number: str) -> list[TextItem]:
    """The conversation on the patient's phone: their texts and what the clinic sent them."""
    items = [
        TextItem(s.at, True, s.body, "received" if s.status == 200 else f"refused ({s.status})")
        for s in sim.sent
        if s.channel == "sms" and s.address == number
    ]
    if sim.fake is not None:
        items += [
            TextItem(m.date_created, False, m.body, m.status)
            for m in sim.fake.messages
            if m.to == number
        ]
    return sorted(items, key=lambda t: t.at)


# -- calls -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallLine:
    who: str  # "clinic" or "you"
    text: str


@dataclass(frozen=True)
class CallView:
    sid: str
    inbound: bool  # the patient called the clinic
    status: str
    lines: list[CallLine]
    waiting: str | None  # "keys", "voicemail" or None
    twiml: str


def calls_of(fake: FakeTwilio, number: str) -> list[FakeCall]:
    return [c for c in fake.calls if (c.from_ if c.direction == "inbound" else c.to) == number]


def _said(document: str) -> tuple[list[str], str | None]:
    """What a TwiML document makes the caller hear, up to where it waits for them (the
    verbs after a Gather or a Record play only if the caller gives nothing), and what for."""
    try:
        root = ElementTree.fromstring(document)  # noqa: S314 - the hub wrote it
    except ElementTree.ParseError:
        return (["(the hub's answer was not TwiML: Twilio would say an application error)"], None)
    heard: list[str] = []
    for verb in root:
        text = " ".join((verb.text or "").split())
        if verb.tag == "Say" and text:
            heard.append(text)
        elif verb.tag == "Play":
            heard.append("(a recording plays)")
        elif verb.tag == "Dial":
            heard.append(f"(the call is put through to {text or 'a colleague'})")
        elif verb.tag == "Gather":
            heard += [" ".join((s.text or "").split()) for s in verb if s.tag == "Say"]
            return heard, "keys"
        elif verb.tag == "Record":
            heard.append("(beep: recording)")
            return heard, "voicemail"
        elif verb.tag == "Hangup":
            heard.append("(the clinic hangs up)")
    return heard, None


def call_view(call: FakeCall) -> CallView:
    lines: list[CallLine] = []
    # An outbound call's first document can come inline (no request): requests then lag by one.
    offset = len(call.twiml) - len(call.webhooks)
    waiting = None
    for i, document in enumerate(call.twiml):
        request = call.webhooks[i - offset].params if 0 <= i - offset < len(call.webhooks) else {}
        digits = request.get("Digits")
        if digits and digits != "hangup":
            lines.append(CallLine("you", f"You press {digits}"))
        elif "RecordingSid" in request:
            lines.append(CallLine("you", "You leave a voicemail and hang up"))
        heard, waiting = _said(document)
        lines += [CallLine("clinic", text) for text in heard]
    finished = call.status in ("completed", "busy", "failed", "no-answer", "canceled")
    return CallView(
        call.sid,
        call.direction == "inbound",
        call.status,
        lines,
        None if finished else waiting,
        call.last_twiml,
    )


# -- mail --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailView:
    name: str
    sender: str
    subject: str
    at: datetime | None
    body: str


def _load(path: Path) -> EmailMessage | None:
    if path.stat().st_size > MAX_MAIL_BYTES:
        return None
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return parsed if isinstance(parsed, EmailMessage) else None


def _text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = part.get_content()
    if part.get_content_type() == "text/html":
        content = re.sub(r"<[^>]+>", " ", content)
    return str(content).strip()


def _addressed_to(message: EmailMessage, address: str) -> bool:
    pairs = getaddresses([str(v) for k in ("To", "Cc") for v in message.get_all(k, [])])
    return any(a.lower() == address.lower() for _, a in pairs)


def mails(sim: Simulator, address: str) -> list[MailView]:
    """The clinic's mail to ``address`` in the demo relay's directory, newest first."""
    if sim.mail_dir is None or not sim.mail_dir.is_dir():
        return []
    shown: list[MailView] = []
    for path in sorted(sim.mail_dir.glob("*.eml"), reverse=True):
        if not MAIL_NAME.match(path.name):
            continue
        message = _load(path)
        if message is None or not _addressed_to(message, address):
            continue
        try:
            at = parsedate_to_datetime(str(message["Date"])) if message["Date"] else None
        except (TypeError, ValueError):
            at = None
        shown.append(
            MailView(
                path.name,
                str(message["From"] or ""),
                str(message["Subject"] or ""),
                at,
                _text_of(message),
            )
        )
        if len(shown) == MAX_MAILS_SHOWN:
            break
    return shown


def mail_file(sim: Simulator, name: str) -> EmailMessage | None:
    """One of the relay's files by the name the page shows (no other path is ever opened)."""
    if sim.mail_dir is None or not MAIL_NAME.match(name):
        return None
    path = sim.mail_dir / name
    return _load(path) if path.is_file() else None


def patient_mail(
    sim: Simulator, sender: str, name: str, body: str, parent: EmailMessage | None
) -> bytes:
    """The patient's mail as their provider would hand it to the hub: a reply threads by
    In-Reply-To and References; the provider's Authentication-Results says the sender passed."""
    message = EmailMessage()
    domain = sender.rpartition("@")[2]
    if sim.authserv_id:
        message["Authentication-Results"] = (
            f"{sim.authserv_id}; spf=pass smtp.mailfrom={sender}; "
            f"dkim=pass header.d={domain}; dmarc=pass header.from={domain}"
        )
    message["From"] = f"{name} <{sender}>" if name else sender
    if parent is not None:
        reply_to = parseaddr(str(parent["Reply-To"] or parent["From"] or ""))[1]
        message["To"] = reply_to
        subject = str(parent["Subject"] or "")
        message["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
        parent_id = str(parent["Message-ID"] or "").strip()
        if parent_id:
            message["In-Reply-To"] = parent_id
            message["References"] = f"{parent['References'] or ''} {parent_id}".strip()
    else:
        message["To"] = sim.clinic_email or ""
        message["Subject"] = "A question"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=domain or "example.org")
    message.set_content(body)
    return message.as_bytes()


def signature(raw: bytes, secret: str) -> str:
    """The inbound-mail webhook's X-Hub-Signature-256 value for ``raw``."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def version(sim: Simulator, number: str, address: str | None) -> str:
    """Changes whenever anything the feed shows changes: the page's poll swaps only then, so
    a reply being typed is not wiped every two seconds."""
    seen: list[object] = [len(sim.sent)]
    if sim.fake is not None:
        seen += [(m.sid, m.status) for m in sim.fake.messages if m.to == number]
        seen += [(c.sid, c.status, len(c.twiml)) for c in calls_of(sim.fake, number)]
    if address and sim.mail_dir is not None and sim.mail_dir.is_dir():
        seen += sorted(p.name for p in sim.mail_dir.glob("*.eml"))
    return hashlib.sha256(repr(seen).encode()).hexdigest()[:16]
