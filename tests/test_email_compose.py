"""Outbound email composing: the headers mail clients and receivers act on, MIME structure,
round trips through our own parser, Message-IDs that name our messages, and DKIM."""

from __future__ import annotations

import base64
import dataclasses
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.channels.email_smtp.compose import (
    MAX_REFERENCES,
    DkimError,
    DkimKey,
    OutgoingEmail,
    compose,
    dkim_sign,
    hub_message_id_of,
    make_message_id,
)
from hub.channels.email_smtp.parse import parse_email, reply_token_of

DOMAIN = "reply.demo-clinic.example.org"
HUB_ID = uuid.UUID("0192f3a0-7c1e-7d2a-9b1c-3f4e5a6b7c8d")
MESSAGE_ID = f"<{HUB_ID}@{DOMAIN}>"
TOKEN = "v1.8Hq2nX3kLw.Zt-9_a="
UNSUBSCRIBE = "https://hub.demo-clinic.example.org/unsubscribe/" + "tok_" + "A1b2" * 30
MAILTO = "mailto:clinic@demo-clinic.example.org?subject=unsubscribe"
WHEN = datetime(2026, 11, 23, 9, 2, tzinfo=UTC)


def outgoing(**changes: Any) -> OutgoingEmail:
    base = OutgoingEmail(
        to="ana.example@example.org",
        from_address="clinic@demo-clinic.example.org",
        from_name="Demo Clinic",
        subject="Your appointment on Tuesday",
        text="Hello Ana,\nYour appointment is on Tuesday at 10:00.\n",
        html="<p>Hello Ana,<br>Your appointment is on <b>Tuesday</b> at 10:00.</p>",
        message_id=MESSAGE_ID,
        reply_to=f"reply+{TOKEN}@{DOMAIN}",
    )
    return dataclasses.replace(base, **changes)


def wire(mail: OutgoingEmail) -> bytes:
    return compose(mail, date=WHEN).as_bytes()


def reparsed(mail: OutgoingEmail) -> EmailMessage:
    """What a receiving mail client reads."""
    message = BytesParser(policy=policy.default).parsebytes(wire(mail))
    assert isinstance(message, EmailMessage)
    return message


# -- headers -------------------------------------------------------------------------------


def test_core_headers() -> None:
    raw = wire(outgoing())
    assert f"\r\nMessage-ID: {MESSAGE_ID}\r\n".encode() in raw  # one line, as sent
    message = reparsed(outgoing())
    assert message["Message-ID"] == MESSAGE_ID
    assert message["From"] == "Demo Clinic <clinic@demo-clinic.example.org>"
    assert message["To"] == "ana.example@example.org"
    assert message["Reply-To"] == f"reply+{TOKEN}@{DOMAIN}"
    assert message["Subject"] == "Your appointment on Tuesday"
    assert message["Date"] == "Mon, 23 Nov 2026 09:02:00 +0000"
    assert message["MIME-Version"] == "1.0"
    # A staff reply opening a thread: nothing that says "automatic" or "list".
    for absent in (
        "In-Reply-To",
        "References",
        "Auto-Submitted",
        "X-Auto-Response-Suppress",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ):
        assert absent not in message
    assert reply_token_of([message["Reply-To"]], DOMAIN) == TOKEN


def test_date_defaults_to_now_and_keeps_a_given_zone() -> None:
    now = parse_email(compose(outgoing()).as_bytes()).date
    assert now is not None and abs(now - datetime.now(UTC)) < timedelta(minutes=1)
    madrid = datetime(2026, 11, 23, 10, 2, tzinfo=timezone(timedelta(hours=1)))
    assert compose(outgoing(), date=madrid)["Date"] == "Mon, 23 Nov 2026 10:02:00 +0100"


def test_reply_in_a_thread_carries_in_reply_to_and_the_reference_chain() -> None:
    message = reparsed(
        outgoing(
            in_reply_to="CAB7xq2-reply@mail.gmail.com",
            references=("<root-0001@example.org>", "CAB7xq2-reply@mail.gmail.com", "mid@x.org"),
        )
    )
    assert message["In-Reply-To"] == "<CAB7xq2-reply@mail.gmail.com>"
    # The answered message goes last, and only there (RFC 5322 section 3.6.4).
    assert message["References"] == (
        "<root-0001@example.org> <mid@x.org> <CAB7xq2-reply@mail.gmail.com>"
    )


def test_references_end_with_the_answered_message() -> None:
    message = reparsed(outgoing(in_reply_to="<c@x.org>", references=("a@x.org", "<b@x.org>")))
    assert message["References"] == "<a@x.org> <b@x.org> <c@x.org>"
    assert message["In-Reply-To"] == "<c@x.org>"


def test_references_are_capped_keeping_the_root_and_the_newest() -> None:
    chain = tuple(f"m{i}@x.org" for i in range(40))
    message = reparsed(outgoing(references=chain, in_reply_to="m39@x.org"))
    ids = message["References"].split()
    assert len(ids) == MAX_REFERENCES
    assert ids[0] == "<m0@x.org>" and ids[-1] == "<m39@x.org>"
    assert ids[1:] == [f"<m{i}@x.org>" for i in range(40 - MAX_REFERENCES + 1, 40)]


def test_automated_mail_is_marked_so_auto_responders_stay_quiet() -> None:
    message = reparsed(outgoing(auto_generated=True))
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Auto-Response-Suppress"] == "All"


def test_journey_mail_carries_rfc8058_one_click_unsubscribe() -> None:
    raw = wire(
        outgoing(auto_generated=True, unsubscribe_url=UNSUBSCRIBE, unsubscribe_mailto=MAILTO)
    )
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>, <{MAILTO}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # Written as URIs, never as RFC 2047 encoded words (which clients would not follow).
    assert f"<{UNSUBSCRIBE}>,".encode() in raw
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert (
        b"=?" not in raw.split(b"\r\n\r\n")[0].split(b"List-Unsubscribe:")[1].split(b"\r\nList")[0]
    )


def test_unsubscribe_without_mailto() -> None:
    message = reparsed(outgoing(unsubscribe_url=UNSUBSCRIBE))
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_one_click_is_offered_only_with_https() -> None:
    local = "http://127.0.0.1:8080/unsubscribe/tok"
    message = reparsed(outgoing(unsubscribe_url=local, unsubscribe_mailto=MAILTO))
    assert message["List-Unsubscribe"] == f"<{local}>, <{MAILTO}>"
    assert "List-Unsubscribe-Post" not in message


@pytest.mark.parametrize(
    "changes",
    [
        {"unsubscribe_url": "javascript:alert(1)"},
        {"unsubscribe_url": "/unsubscribe/relative"},
        {"unsubscribe_url": "https://hub.example.org/u/a b"},
        {"unsubscribe_url": "https://hub.example.org/u/a>,<https://evil.example.net/"},
        {"unsubscribe_url": UNSUBSCRIBE, "unsubscribe_mailto": "https://not-mailto.example.org"},
        {"to": "not an address"},
        {"to": "josé@example.org"},
        {"to": ""},
        {"from_address": "clinic@@demo-clinic.example.org"},
        {"reply_to": "reply+x@"},
        {"message_id": "no-at-sign"},
        {"message_id": "<a b@x.org>"},
        {"in_reply_to": "<x@y.org>\r\nBcc: victim@example.org"},
        {"references": ("ok@x.org", "bad id@x.org")},
    ],
)
def test_unusable_values_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        compose(outgoing(**changes))


def test_header_injection_through_subject_or_name_is_impossible() -> None:
    message = reparsed(
        outgoing(
            subject="Reminder\r\nBcc: victim@example.org\n",
            from_name="Demo\nBcc: victim@example.org",
        )
    )
    assert "Bcc" not in message
    assert message["Subject"] == "Reminder Bcc: victim@example.org"


# -- structure and encoding ---------------------------------------------------------------


def test_text_and_html_make_a_multipart_alternative() -> None:
    message = reparsed(outgoing())
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert all("MIME-Version" not in p for p in parts)
    text = parts[0].get_content().replace("\r\n", "\n")
    assert text == "Hello Ana,\nYour appointment is on Tuesday at 10:00.\n"
    assert "<b>Tuesday</b>" in parts[1].get_content()


def test_text_only_is_a_single_part() -> None:
    message = reparsed(outgoing(html=None))
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    assert message.get_content_charset() == "utf-8"


def test_the_wire_form_is_seven_bit_with_crlf_line_ends() -> None:
    raw = wire(outgoing(subject="Cita mañana", text="Señora Pérez: su cita es mañana. ¿Viene?"))
    assert raw.isascii()  # no 8BITMIME needed, nothing for a relay to re-encode
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_non_ascii_subject_and_display_name_round_trip() -> None:
    message = reparsed(
        outgoing(
            subject="Recordatorio: su cita con la Clínica Demo mañana, ¿confirma? " * 2,
            from_name="Clínica Demo, Sede Norte",
            text="Señora Pérez: su cita es mañana.\n",
            html="<p>Señora Pérez: su cita es <b>mañana</b>.</p>",
        )
    )
    assert message["Subject"] == (
        "Recordatorio: su cita con la Clínica Demo mañana, ¿confirma? "
        "Recordatorio: su cita con la Clínica Demo mañana, ¿confirma?"
    )
    assert message["From"].addresses[0].display_name == "Clínica Demo, Sede Norte"
    assert message["From"].addresses[0].addr_spec == "clinic@demo-clinic.example.org"
    text = message.get_body(("plain",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n") == "Señora Pérez: su cita es mañana.\n"


def test_our_parser_reads_what_we_compose() -> None:
    mail = outgoing(
        in_reply_to="CAB7xq2-reply@mail.gmail.com",
        references=("root-0001@example.org",),
        from_name="Clínica Demo",
    )
    email = parse_email(wire(mail))
    assert email.message_id == MESSAGE_ID.strip("<>")
    assert email.from_address == "clinic@demo-clinic.example.org"
    assert email.from_name == "Clínica Demo"
    assert email.to == ("ana.example@example.org",)
    assert email.subject == "Your appointment on Tuesday"
    assert email.in_reply_to == "CAB7xq2-reply@mail.gmail.com"
    assert email.references == ("root-0001@example.org", "CAB7xq2-reply@mail.gmail.com")
    assert email.text == "Hello Ana,\nYour appointment is on Tuesday at 10:00."
    assert email.visible_text == email.text
    assert email.html == "<p>Hello Ana,<br>Your appointment is on <b>Tuesday</b> at 10:00.</p>"
    assert email.date == WHEN
    assert (email.auto_submitted, email.bounce, email.attachments) == (False, None, ())
    assert hub_message_id_of(f"<{email.message_id}>", DOMAIN) == HUB_ID


def test_our_parser_knows_our_automated_mail_for_what_it_is() -> None:
    email = parse_email(wire(outgoing(auto_generated=True, unsubscribe_url=UNSUBSCRIBE)))
    assert email.auto_submitted
    assert email.auto_reason == "Auto-Submitted: auto-generated"


def test_reprs_have_no_phi() -> None:
    mail = outgoing(subject="Your HIV test result", to="ana.example@example.org")
    assert "HIV" not in repr(mail) and "ana" not in repr(mail)
    key = DkimKey("hub2026", "demo-clinic.example.org", _pem(RSA_KEY))
    assert "PRIVATE" not in repr(key)


# -- Message-IDs -----------------------------------------------------------------------


def test_message_id_round_trip() -> None:
    made = make_message_id(HUB_ID, DOMAIN)
    assert made == MESSAGE_ID
    assert make_message_id(HUB_ID, DOMAIN) == made  # a retry reuses it
    assert make_message_id(HUB_ID, "Reply.Demo-Clinic.Example.org.") == made
    assert hub_message_id_of(made, DOMAIN) == HUB_ID
    assert hub_message_id_of(made.strip("<>"), DOMAIN) == HUB_ID
    assert hub_message_id_of(f"  {made.upper()} ", DOMAIN.upper()) == HUB_ID


@pytest.mark.parametrize(
    ("message_id", "domain"),
    [
        ("<CAB7xq2-reply@mail.gmail.com>", DOMAIN),
        (f"<{HUB_ID}@mail.example.org>", DOMAIN),
        (f"<{HUB_ID}@evil-{DOMAIN}>", DOMAIN),
        (f"<{HUB_ID}@{DOMAIN}>", ""),
        (f"<{HUB_ID.hex}@{DOMAIN}>", DOMAIN),
        (f"<{{{HUB_ID}}}@{DOMAIN}>", DOMAIN),
        (f"<urn:uuid:{HUB_ID}@{DOMAIN}>", DOMAIN),
        (f"<x{HUB_ID}@{DOMAIN}>", DOMAIN),
        ("", DOMAIN),
        ("<>", DOMAIN),
        ("garbage", DOMAIN),
    ],
)
def test_foreign_message_ids_name_no_hub_message(message_id: str, domain: str) -> None:
    assert hub_message_id_of(message_id, domain) is None


@pytest.mark.parametrize(
    "domain", ["", "  ", "two words.example.org", "a>b.example.org", "x!.example.org", "-a.org"]
)
def test_make_message_id_needs_a_domain_name(domain: str) -> None:
    with pytest.raises(ValueError):
        make_message_id(HUB_ID, domain)


# -- DKIM ------------------------------------------------------------------------------------

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SELECTOR = "hub2026"
SIGNING_DOMAIN = "demo-clinic.example.org"


def _pem(key: rsa.RSAPrivateKey, form: Any = serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


def _dns(key: rsa.RSAPrivateKey) -> Any:
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{SIGNING_DOMAIN}.".encode() else None

    return lookup


def _signed(**changes: Any) -> bytes:
    mail = outgoing(
        auto_generated=True,
        unsubscribe_url=UNSUBSCRIBE,
        unsubscribe_mailto=MAILTO,
        in_reply_to="CAB7xq2-reply@mail.gmail.com",
        **changes,
    )
    return dkim_sign(wire(mail), DkimKey(SELECTOR, SIGNING_DOMAIN, _pem(RSA_KEY)))


def _signed_headers(signed: bytes) -> list[str]:
    header = signed.split(b"\r\n\r\n")[0].decode()
    tags = re.search(r"h=([^;]+);", header.replace("\r\n", ""))
    assert tags is not None
    return [name.strip() for name in tags.group(1).split(":")]


def test_dkim_signature_verifies() -> None:
    signed = _signed()
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert dkim.verify(signed, dnsfunc=_dns(RSA_KEY))


def test_dkim_covers_the_headers_rfc8058_requires() -> None:
    covered = _signed_headers(_signed())
    for name in (
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ):
        # Once per occurrence and once more, so a second copy cannot be added.
        assert covered.count(name) == 2, name


@pytest.mark.parametrize(
    ("find", "replace"),
    [
        (b"/unsubscribe/tok_", b"/unsubscribe/evil"),
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""),
        (b"Subject: Your appointment", b"Subject: Your appointmenT"),
        (b"Your appointment is on Tuesday at 10:00.", b"Your appointment is on Friday at 10:00."),
    ],
)
def test_dkim_detects_tampering(find: bytes, replace: bytes) -> None:
    signed = _signed()
    assert find in signed
    assert not dkim.verify(signed.replace(find, replace, 1), dnsfunc=_dns(RSA_KEY))


def test_dkim_detects_an_added_header() -> None:
    signed = _signed()
    head, _, body = signed.partition(b"\r\n\r\n")
    for extra in (
        b"From: Someone Else <x@evil.example.net>",
        b"List-Unsubscribe: <https://evil.example.net/u>",
    ):
        assert not dkim.verify(head + b"\r\n" + extra + b"\r\n\r\n" + body, dnsfunc=_dns(RSA_KEY))


def test_dkim_accepts_pkcs1_keys_too() -> None:
    key = DkimKey(
        SELECTOR, SIGNING_DOMAIN, _pem(RSA_KEY, serialization.PrivateFormat.TraditionalOpenSSL)
    )
    assert dkim.verify(dkim_sign(wire(outgoing()), key), dnsfunc=_dns(RSA_KEY))


def test_dkim_refuses_unusable_keys_at_configuration_time() -> None:
    with pytest.raises(DkimError, match="RSA"):
        DkimKey(SELECTOR, SIGNING_DOMAIN, _pem(ec.generate_private_key(ec.SECP256R1())))  # type: ignore[arg-type]
    with pytest.raises(DkimError, match="PEM"):
        DkimKey(
            SELECTOR,
            SIGNING_DOMAIN,
            b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
        )
    with pytest.raises(DkimError, match="selector"):
        DkimKey("bad selector", SIGNING_DOMAIN, _pem(RSA_KEY))
    with pytest.raises(DkimError, match="domain"):
        DkimKey(SELECTOR, "", _pem(RSA_KEY))


def test_an_internationalised_domain_goes_as_punycode() -> None:
    assert reparsed(outgoing(to="ana@clínica.example"))["To"] == "ana@xn--clnica-4va.example"
