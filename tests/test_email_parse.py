"""Inbound email parsing: every fixture, the display text staff see, sanitizing, loop
prevention, bounces, attachments, and robustness against anything a mail server can hand over."""

from __future__ import annotations

import base64
import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.channels.base import MalformedPayload
from hub.channels.email_smtp.compose import hub_message_id_of
from hub.channels.email_smtp.parse import (
    MalformedEmail,
    ParsedEmail,
    parse_email,
    reply_token_of,
)

FIXTURES = Path(__file__).resolve().parent.parent / "hub/channels/email_smtp/fixtures"
REPLY_DOMAIN = "reply.demo-clinic.example.org"
TOKEN = "v1.8Hq2nX3kLw.Zt-9_a="
OUR_ID = "0192f3a0-7c1e-7d2a-9b1c-3f4e5a6b7c8d@reply.demo-clinic.example.org"
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parsed(name: str) -> ParsedEmail:
    return parse_email(fixture(name))


def mail(headers: str, body: str = "Hello from a patient.\n") -> bytes:
    """A small message: ``headers`` are added to a plain From/To/Subject/Message-ID."""
    head = (
        "From: Pat Example <pat.example@example.org>\n"
        "To: clinic@demo-clinic.example.org\n"
        "Subject: Question\n"
        "Message-ID: <built-0001@example.org>\n" + headers
    )
    return (head.rstrip("\n") + "\n\n" + body).replace("\n", "\r\n").encode("utf-8")


def with_parts(*parts: tuple[str, bytes, str | None], text: str = "See attached.") -> bytes:
    """multipart/mixed with a text body and (content type, data, filename) attachments."""
    lines = [
        "From: Pat Example <pat.example@example.org>",
        "To: clinic@demo-clinic.example.org",
        "Subject: Attachments",
        "Message-ID: <attach-0001@example.org>",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b0"',
        "",
        "--b0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        text,
    ]
    for kind, data, name in parts:
        # RFC 2046 forbids encoding a message/* part: it goes as it is.
        verbatim = kind.startswith("message/")
        lines += ["--b0", f"Content-Type: {kind}"]
        if not verbatim:
            lines.append("Content-Transfer-Encoding: base64")
        if name:
            lines.append(f'Content-Disposition: attachment; filename="{name}"')
        lines += ["", data.decode() if verbatim else base64.encodebytes(data).decode()]
    lines.append("--b0--")
    return "\r\n".join(lines).encode()


# -- the fixtures, field by field ---------------------------------------------------------


def test_gmail_reply_fields() -> None:
    email = parsed("gmail_reply.eml")
    assert email.message_id == "CAB7xq2Ex=Fk9dLzQ0sample-reply@mail.gmail.com"
    assert email.from_address == "ana.example@example.org"
    assert email.from_name == "Ana Example"
    # The token is signed: its case must survive, only the domain is folded.
    assert email.to == (f"reply+{TOKEN}@{REPLY_DOMAIN}",)
    assert email.delivered_to == (f"reply+{TOKEN}@{REPLY_DOMAIN}",)
    assert email.cc == ()
    assert email.subject == "Re: Your appointment on Tuesday"
    assert email.in_reply_to == OUR_ID
    assert email.references == (OUR_ID,)
    assert hub_message_id_of(f"<{email.in_reply_to}>", REPLY_DOMAIN) is not None
    assert email.date == datetime(2026, 11, 23, 17, 14, 55, tzinfo=UTC)
    assert email.auto_submitted is False and email.auto_reason is None
    assert email.bounce is None and email.attachments == () and email.dropped == ()
    assert email.html is not None and "<blockquote>" in email.html
    assert reply_token_of(email.to, REPLY_DOMAIN) == TOKEN


@pytest.mark.parametrize(
    ("name", "reply", "history"),
    [
        ("gmail_reply.eml", "Can I bring my lab results?", "Reply C to confirm"),
        ("outlook_reply.eml", "move my appointment to Friday", "your appointment is on Tuesday"),
        ("apple_reply.eml", "Confirmed, see you then.", "Reply C to confirm"),
        ("spanish_reply.eml", "¿Puedo llegar diez minutos antes?", "Responda C para confirmar"),
    ],
)
def test_quoted_history_is_hidden_for_display_and_kept_in_text(
    name: str, reply: str, history: str
) -> None:
    email = parsed(name)
    assert reply in email.visible_text
    assert history not in email.visible_text
    assert "wrote:" not in email.visible_text and "escribió:" not in email.visible_text
    assert "Original Message" not in email.visible_text
    assert reply in email.text and history in email.text


def test_outlook_html_only_reply_gets_text_from_its_html() -> None:
    email = parsed("outlook_reply.eml")
    assert email.html is not None
    assert "I\u2019m away on Tuesday" in email.text  # windows-1252 quote, quoted-printable
    assert "MsoNormal" not in email.text and "MsoNormal" not in email.html
    assert email.visible_text.startswith("Hello, I need to move my appointment to Friday")


def test_modern_outlook_divider_without_original_message_line() -> None:
    html = (
        "<div><p>Please call me back.</p>"
        '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0in 0in 0in">'
        "<p><b>From:</b> Demo Clinic &lt;clinic@demo-clinic.example.org&gt;<br>"
        "<b>Sent:</b> Monday, November 23, 2026 9:02 AM<br>"
        "<b>To:</b> Pat Example &lt;pat.example@example.org&gt;<br>"
        "<b>Subject:</b> Your results</p></div><p>Your results are ready.</p></div>"
    )
    email = parse_email(mail("Content-Type: text/html; charset=utf-8\n", html))
    assert email.visible_text == "Please call me back."
    assert "Your results are ready." in email.text


def test_signatures_and_phone_footers_are_hidden() -> None:
    assert parsed("new_message_with_attachment.eml").visible_text == (
        "Hello, here are my lab results and a photo of the rash on my arm."
    )
    assert parsed("apple_reply.eml").visible_text == "Confirmed, see you then."


def test_what_the_patient_wrote_is_never_taken_for_a_signature() -> None:
    body = (
        "Hi,\nThanks, I will come at 10.\nWarning: I am allergic to penicillin.\n"
        "- headache\n- fever\nBest regards,\nPat\n"
    )
    email = parse_email(mail("", body))
    for line in ("Thanks, I will come at 10.", "allergic to penicillin", "- fever", "Pat"):
        assert line in email.visible_text


def test_a_message_that_is_all_quote_is_shown_whole() -> None:
    body = "On Mon, Nov 23, 2026 at 9:02 AM Demo Clinic <c@example.org> wrote:\n> a\n> b\n> c\n"
    email = parse_email(mail("", body))
    assert email.visible_text == email.text
    assert email.visible_text.startswith("On Mon")


def test_html_is_sanitized_before_staff_see_it() -> None:
    email = parsed("html_with_script.eml")
    html = email.html or ""
    unsafe = r"<(script|style|iframe|object|form|base|svg)|on(click|load)=|javascript:|alert\("
    assert not re.search(unsafe, html)
    assert not re.search(r"steal|tracker\.example|evil\.example|/api/", html)
    assert "<b>twice</b>" in html
    assert (
        '<a href="https://portal.example.org/bill" target="_blank" rel="noopener noreferrer">'
        in html
    )
    assert '<img src="cid:logo-0001@example.org" alt="logo">' in html
    assert "Why was I charged twice for my visit?" in email.text
    assert "(https://portal.example.org/bill)" in email.text
    assert "alert" not in email.text and "steal" not in email.text


# -- loop and noise prevention -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("out_of_office.eml", "Auto-Submitted: auto-replied"),
        # Exchange's own mark on an inbox rule's answer, not the suppress request beside it.
        ("x_auto_response_suppress.eml", "X-MS-Exchange-Inbox-Rules-Loop present"),
        ("list_mail.eml", "List-Id present"),
        ("mailer_daemon_dsn.eml", "Auto-Submitted: auto-replied"),
        ("delayed_dsn.eml", "from postmaster"),
        ("non_dsn_bounce.eml", "from postmaster"),
        ("gmail_reply.eml", None),
        ("spanish_reply.eml", None),
        ("new_message_with_attachment.eml", None),
    ],
)
def test_automatic_mail_per_fixture(name: str, reason: str | None) -> None:
    email = parsed(name)
    assert email.auto_reason == reason
    assert email.auto_submitted is (reason is not None)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Auto-Submitted: auto-generated\n", "Auto-Submitted: auto-generated"),
        (
            "Auto-Submitted: Auto-Notified; owner-email=x@example.org\n",
            "Auto-Submitted: auto-notified",
        ),
        ("Auto-Submitted: something-new\n", "Auto-Submitted: other"),
        ("Auto-Submitted: no\n", None),
        ("Auto-Submitted: No\n", None),
        # A request not to be answered, set on mail people write too: not a marker.
        ("X-Auto-Response-Suppress: OOF, AutoReply\n", None),
        ("X-Auto-Response-Suppress: All\n", None),
        ("Precedence: bulk\n", "Precedence: bulk"),
        ("Precedence: list\n", "Precedence: list"),
        ("Precedence: junk\n", "Precedence: junk"),
        ("Precedence: auto_reply\n", "Precedence: auto_reply"),
        ("Precedence: first-class\n", None),
        ("List-Id: <news.example.org>\n", "List-Id present"),
        ("List-Unsubscribe: <https://news.example.org/u/1>\n", "List-Unsubscribe present"),
        ("X-Autoreply: yes\n", "X-Autoreply present"),
        ("X-Autorespond: Out of office\n", "X-Autorespond present"),
        ("Return-Path: <>\n", "empty Return-Path"),
        ("Return-Path: <pat.example@example.org>\n", None),
    ],
)
def test_automatic_mail_per_rule(headers: str, reason: str | None) -> None:
    email = parse_email(mail(headers))
    assert email.auto_reason == reason
    assert email.auto_submitted is (reason is not None)


@pytest.mark.parametrize(
    "sender", ["MAILER-DAEMON@mx.example.org", "Mailer-Daemon@mx.example.org", "POSTMASTER@x.org"]
)
def test_mail_from_mailer_daemon_or_postmaster_is_automatic(sender: str) -> None:
    raw = mail("", "Something about your mail.").replace(
        b"pat.example@example.org", sender.encode(), 1
    )
    email = parse_email(raw)
    assert email.auto_submitted
    assert email.auto_reason == f"from {sender.split('@')[0].lower()}"
    assert email.bounce is None  # names no status, recipient or original: not a bounce


# -- bounces -------------------------------------------------------------------------------


def test_rfc3464_hard_bounce() -> None:
    bounce = parsed("mailer_daemon_dsn.eml").bounce
    assert bounce is not None
    assert bounce.original_message_id == OUR_ID
    assert bounce.recipient == "nobody.example@example.org"
    assert bounce.status == "5.1.1"
    assert bounce.action == "failed"
    assert bounce.permanent is True
    assert bounce.diagnostic == "550 5.1.1 <address>: Recipient address rejected: User unknown"
    assert "nobody" not in repr(bounce)


def test_rfc3464_delay_is_not_permanent() -> None:
    email = parsed("delayed_dsn.eml")
    bounce = email.bounce
    assert bounce is not None
    assert bounce.original_message_id == OUR_ID  # from the returned message/rfc822
    assert bounce.recipient == "slow.patient@example.org"
    assert (bounce.status, bounce.action, bounce.permanent) == ("4.4.1", "delayed", False)
    assert bounce.diagnostic is not None and "timed out" in bounce.diagnostic
    # The report's own parts are not attachments of a patient's message.
    assert email.attachments == () and email.dropped == ()


def test_plain_text_bounce_from_postmaster() -> None:
    bounce = parsed("non_dsn_bounce.eml").bounce
    assert bounce is not None
    assert bounce.original_message_id == OUR_ID
    assert bounce.recipient == "gone.patient@example.org"
    assert (bounce.status, bounce.action, bounce.permanent) == ("5.1.1", "failed", True)
    assert bounce.diagnostic is not None and "@" not in bounce.diagnostic


def test_plain_text_delay_notice_is_not_permanent() -> None:
    body = (
        "This is an automatically generated Delivery Status Notification.\n"
        "THIS IS A WARNING MESSAGE ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.\n"
        "Delivery to the following recipients has been delayed.\n\n"
        "     late.patient@example.org\n\n"
        "   ----- Original message -----\n\n"
        f"Message-ID: <{OUR_ID}>\nTo: late.patient@example.org\nSubject: Reminder\n"
    )
    raw = mail("Return-Path: <>\n", body).replace(
        b"pat.example@example.org", b"mailer-daemon@googlemail.example.org", 1
    )
    bounce = parse_email(raw).bounce
    assert bounce is not None
    assert bounce.original_message_id == OUR_ID
    assert bounce.recipient == "late.patient@example.org"
    assert (bounce.action, bounce.permanent) == ("delayed", False)


@pytest.mark.parametrize(
    "name", ["gmail_reply.eml", "out_of_office.eml", "list_mail.eml", "html_with_script.eml"]
)
def test_mail_that_is_not_a_bounce_has_none(name: str) -> None:
    assert parsed(name).bounce is None


# -- attachments ---------------------------------------------------------------------------


def test_attachments_are_kept_with_their_bytes() -> None:
    email = parsed("new_message_with_attachment.eml")
    assert [(a.filename, a.content_type, a.data) for a in email.attachments] == [
        ("lab-results.pdf", "application/pdf", PDF),
        ("arm.jpg", "image/jpeg", JPEG),
    ]
    assert email.cc == ("robin.demo@example.org",)
    assert email.dropped == ()
    assert "lab-results" not in repr(email.attachments[0])


def test_an_attachment_over_the_size_limit_is_dropped_and_reported() -> None:
    huge = b"%PDF-1.4\n" + b"0" * (10 * 1024 * 1024)
    email = parse_email(
        with_parts(
            ("application/pdf", huge, "big.pdf"), ("image/png", b"\x89PNG\r\n\x1a\n1", "a.png")
        )
    )
    assert [a.content_type for a in email.attachments] == ["image/png"]
    assert len(email.dropped) == 1
    assert "application/pdf" in email.dropped[0] and "10485760-byte limit" in email.dropped[0]
    assert "big.pdf" not in email.dropped[0]


def test_the_size_limit_is_exact() -> None:
    data = b"%PDF-" + b"x" * 95
    kept = parse_email(with_parts(("application/pdf", data, "a.pdf")), max_attachment_bytes=100)
    over = parse_email(
        with_parts(("application/pdf", data + b"!", "a.pdf")), max_attachment_bytes=100
    )
    assert len(kept.attachments) == 1 and kept.dropped == ()
    assert over.attachments == ()
    assert over.dropped == (
        "an attachment of type application/pdf (101 bytes) was over the 100-byte limit and "
        "was not kept",
    )


@pytest.mark.parametrize(
    ("kind", "data", "name", "reason"),
    [
        (
            "application/x-msdownload",
            b"MZ\x90\x00",
            "setup.exe",
            "an attachment of type application/x-msdownload was not kept",
        ),
        (
            "message/rfc822",
            b"From: a@example.org\r\n\r\nhi",
            "fwd.eml",
            "an attachment of type message/rfc822 was not kept",
        ),
        (
            "image/jpeg",
            b"MZ\x90\x00 not a picture",
            "photo.jpg",
            "an attachment declared as image/jpeg was not one; it was not kept",
        ),
        (
            "application/pdf",
            b"",
            "empty.pdf",
            "an empty attachment of type application/pdf was not kept",
        ),
    ],
)
def test_attachments_of_types_not_allowed_are_dropped(
    kind: str, data: bytes, name: str, reason: str
) -> None:
    email = parse_email(with_parts((kind, data, name)))
    assert email.attachments == ()
    assert email.dropped == (reason,)
    assert email.visible_text == "See attached."


def test_untyped_attachments_are_typed_from_their_bytes_or_name() -> None:
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    email = parse_email(
        with_parts(
            ("application/octet-stream", PDF, "scan"),
            ("application/octet-stream", b"PK\x03\x04rest", "letter.docx"),
            ("image/jpg", JPEG, "x.jpg"),
            ("application/octet-stream", b"PK\x03\x04rest", "archive.zip"),
        )
    )
    assert [a.content_type for a in email.attachments] == ["application/pdf", docx, "image/jpeg"]
    assert email.dropped == ("an attachment of type application/octet-stream was not kept",)


def test_at_most_max_attachments_are_kept() -> None:
    parts = [("image/png", b"\x89PNG\r\n\x1a\n" + bytes([i]), f"p{i}.png") for i in range(12)]
    email = parse_email(with_parts(*parts), max_attachments=10)
    assert len(email.attachments) == 10
    assert (
        email.dropped
        == ("an attachment of type image/png was not kept: at most 10 are kept per message",) * 2
    )


def test_allowed_types_can_be_narrowed() -> None:
    email = parse_email(
        with_parts(("application/pdf", PDF, "a.pdf"), ("image/jpeg", JPEG, "b.jpg")),
        allowed_types=frozenset({"image/jpeg"}),
    )
    assert [a.content_type for a in email.attachments] == ["image/jpeg"]
    assert email.dropped == ("an attachment of type application/pdf was not kept",)


def test_inline_images_are_kept_with_their_content_id() -> None:
    raw = (
        "From: pat.example@example.org\r\nTo: clinic@demo-clinic.example.org\r\n"
        "Subject: Photo\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/related; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        '<p>Look: <img src="cid:img1@x"></p>\r\n'
        "--r\r\nContent-Type: image/jpeg\r\nContent-ID: <img1@x>\r\n"
        "Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(JPEG).decode()
        + "\r\n--r--\r\n"
    ).encode()
    email = parse_email(raw)
    assert len(email.attachments) == 1
    image = email.attachments[0]
    assert (image.content_id, image.inline, image.filename) == ("img1@x", True, None)
    assert email.html == '<p>Look: <img src="cid:img1@x"></p>'
    assert email.text == "Look:"


# -- reply tokens ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addresses", "token"),
    [
        ([f"reply+{TOKEN}@{REPLY_DOMAIN}"], TOKEN),
        ([f"Demo Clinic <reply+{TOKEN}@REPLY.Demo-Clinic.example.org>"], TOKEN),
        ([f"REPLY+{TOKEN}@{REPLY_DOMAIN}."], TOKEN),
        (
            [
                "clinic@demo-clinic.example.org",
                f"reply+abc@{REPLY_DOMAIN}",
                f"reply+def@{REPLY_DOMAIN}",
            ],
            "abc",
        ),
        ([f"reply+{TOKEN}@other.example.org"], None),
        ([f"reply+{TOKEN}@evil-{REPLY_DOMAIN}"], None),
        ([f"reply+to ken@{REPLY_DOMAIN}"], None),
        ([f"reply+@{REPLY_DOMAIN}"], None),
        ([f"noreply@{REPLY_DOMAIN}"], None),
        ([f"xreply+abc@{REPLY_DOMAIN}"], None),
        ([], None),
    ],
)
def test_reply_token_of(addresses: list[str], token: str | None) -> None:
    assert reply_token_of(addresses, REPLY_DOMAIN) == token


def test_reply_token_of_needs_a_domain() -> None:
    assert reply_token_of([f"reply+abc@{REPLY_DOMAIN}"], "") is None


# -- headers -------------------------------------------------------------------------------


def test_ids_are_normalised_and_references_kept_in_order() -> None:
    email = parse_email(
        mail(
            "In-Reply-To:   <c@example.org> (comment)\n"
            "References: <a@example.org>\n <b@example.org>   <c@example.org>\n"
            "References: <a@example.org> <d@example.org>\n",
        ).replace(b"<built-0001@example.org>", b"  <Mixed.Case@Example.org>  ")
    )
    assert email.message_id == "Mixed.Case@Example.org"
    assert email.in_reply_to == "c@example.org"
    assert email.references == ("a@example.org", "b@example.org", "c@example.org", "d@example.org")


def test_missing_or_unreadable_headers_become_none() -> None:
    raw = b"From: pat.example@example.org\r\nDate: yesterday-ish\r\n\r\nhello\r\n"
    email = parse_email(raw)
    assert (email.message_id, email.in_reply_to, email.date, email.subject) == (
        None,
        None,
        None,
        "",
    )
    assert email.to == () and email.from_name is None


def test_a_date_without_zone_is_read_as_utc() -> None:
    email = parse_email(mail("Date: Mon, 23 Nov 2026 09:00:00 -0000\n"))
    assert email.date == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


# -- robustness ----------------------------------------------------------------------------


def test_a_charset_that_does_not_match_the_bytes() -> None:
    email = parsed("broken_charset.eml")
    assert email.subject == "Cita mañana"  # raw UTF-8 in a header
    assert email.text == "Buenos días, señora: ¿puedo cambiar la cita de mañana?"  # Latin-1 body


@pytest.mark.parametrize("charset", ["x-no-such-charset", "base64", "rot13", "utf-16"])
def test_unknown_or_unusable_charsets_still_give_text(charset: str) -> None:
    raw = mail(f"Content-Type: text/plain; charset={charset}\n", "caf\xe9 ok").replace(
        "café".encode(), b"caf\xe9"
    )
    email = parse_email(raw)
    assert email.from_address == "pat.example@example.org"
    assert isinstance(email.text, str)


def test_a_multipart_without_its_boundary_keeps_its_text() -> None:
    raw = mail("MIME-Version: 1.0\nContent-Type: multipart/mixed\n", "Please call me back.")
    assert "Please call me back." in parse_email(raw).text


def test_absurd_nesting_is_read_without_recursion_errors() -> None:
    depth = 300
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth)
    )
    tail = "".join(f"\r\n--b{i}--" for i in reversed(range(depth)))
    raw = (
        "From: pat.example@example.org\r\nMIME-Version: 1.0\r\n"
        f"{head}Content-Type: text/plain\r\n\r\nDeep{tail}\r\n"
    )
    email = parse_email(raw.encode())
    assert email.from_address == "pat.example@example.org"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"  \r\n\r\n ", "empty"),
        (b"hello world, this is not an email", "no email header"),
        (b"\x00\xff\xfe\xfd", "no email header"),
        (b"X-Custom: 1\r\n\r\nbody", "no email header"),
        (b"Subject: hi\r\nFrom: not an address\r\n\r\n", "neither a sender"),
    ],
)
def test_input_that_is_not_an_email_is_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedEmail, match=reason) as caught:
        parse_email(raw)
    assert isinstance(caught.value, MalformedPayload)
    assert "\n" not in str(caught.value)


def test_repr_has_no_phi() -> None:
    email = parsed("gmail_reply.eml")
    text = repr(email)
    for phi in ("Ana", "ana.example", "Tuesday", "lab results", TOKEN, "CAB7xq2"):
        assert phi not in text


def _storable(email: ParsedEmail) -> None:
    """Every string can be stored: valid UTF-8 and no NUL (PostgreSQL text refuses both)."""
    for item in dataclasses.fields(email):
        value = getattr(email, item.name)
        values = value if isinstance(value, tuple) else (value,)
        for one in values:
            if isinstance(one, str):
                one.encode("utf-8")
                assert "\x00" not in one
    assert email.visible_text.strip() or not email.text.strip()


# Every fixture, the DSN and automatic-mail ones in their folders included.
FIXTURE_NAMES = sorted(str(path.relative_to(FIXTURES)) for path in FIXTURES.rglob("*.eml"))
MUTATED_HEADERS = [
    name.encode()
    for names in (
        "From To Subject Content-Type Message-ID Date References Auto-Submitted Return-Path",
        "Content-Transfer-Encoding Content-Disposition",
    )
    for name in names.split(" ")
]
ROBUST = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@ROBUST
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise_anything_but_malformed(raw: bytes) -> None:
    try:
        email = parse_email(raw)
    except MalformedEmail:
        return
    _storable(email)


@ROBUST
@given(
    name=st.sampled_from(FIXTURE_NAMES),
    header=st.sampled_from(MUTATED_HEADERS),
    value=st.binary(max_size=200),
    at=st.integers(min_value=0),
    cut=st.integers(min_value=0),
    splice=st.binary(max_size=40),
)
def test_mutated_fixtures_never_raise_anything_but_malformed(
    name: str, header: bytes, value: bytes, at: int, cut: int, splice: bytes
) -> None:
    raw = fixture(name)
    lines = raw.split(b"\r\n")
    # Replace the header's value (or add the header) with arbitrary bytes, then splice
    # arbitrary bytes somewhere and cut the message short somewhere after that.
    for index, line in enumerate(lines):
        if line.lower().startswith(header.lower() + b":"):
            lines[index] = header + b": " + value
            break
    else:
        lines.insert(0, header + b": " + value)
    raw = b"\r\n".join(lines)
    position = at % (len(raw) + 1)
    raw = raw[:position] + splice + raw[position:]
    raw = raw[: len(raw) - cut % max(1, len(raw) // 2)]
    try:
        email = parse_email(raw)
    except MalformedEmail:
        return
    _storable(email)


def test_attached_emails_are_kept_when_a_caller_allows_them() -> None:
    inner = b"From: lab@example.org\r\nSubject: Results\r\n\r\nAll normal.\r\n"
    email = parse_email(
        with_parts(("message/rfc822", inner, "results.eml")),
        allowed_types=frozenset({"message/rfc822"}),
    )
    assert [a.content_type for a in email.attachments] == ["message/rfc822"]
    assert b"All normal." in email.attachments[0].data
