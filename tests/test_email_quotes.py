"""Quoted history under reply headers in many languages and clients is hidden from what staff
see (the original is kept whole), in plain text and in HTML-only mail; and a journey answer
("C") written above such a quote is read as the answer. Synthetic replies, shaped like each
client's output (Gmail web and Android app, Outlook desktop/web/Windows Mail, Apple Mail,
Thunderbird, Samsung Email)."""

# Reply headers in other scripts: letters that look like Latin ones are meant.
# ruff: noqa: RUF001

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hub.audit import Actor
from hub.channels.email_smtp.compose import make_message_id
from hub.channels.email_smtp.parse import parse_email
from hub.channels.email_smtp.sender_auth import SenderCheck
from hub.crypto import KeyRing
from hub.db import Database
from hub.enums import Channel
from hub.inbox import actions
from hub.inbox.actions.email_intake import do_receive_email
from hub.inbox.models import Message
from hub.inbox.schemas import NewPatient
from hub.journeys import actions as journeys
from hub.journeys.dispatch import do_prepare_batch, providers_for
from hub.journeys.models import Enrollment
from hub.templates.actions import do_seed_templates

CLINIC = "Demo Clinic <clinic@demo-clinic.example.org>"
ADDR = "clinic@demo-clinic.example.org"
PATIENT = "Avery Sample <avery.sample@example.org>"
QUOTED = "> Your appointment is on Tuesday at 10:00.\n> Reply C to confirm, 2 to cancel.\n"
BODY = "Your appointment is on Tuesday at 10:00.\nReply C to confirm, 2 to cancel.\n"

# (case, the history as the client writes it under the reply)
PLAIN = [
    ("en gmail", f"On Mon, Dec 7, 2026 at 10:15 AM {CLINIC} wrote:\n\n{QUOTED}"),
    (
        "en gmail wrapped",
        f"On Mon, Dec 7, 2026 at 10:15 AM Demo Clinic <\n{ADDR}> wrote:\n{QUOTED}",
    ),
    ("en apple", f"On 7 Dec 2026, at 10:15, {CLINIC} wrote:\n\n{QUOTED}"),
    (
        "en outlook desktop",
        f"-----Original Message-----\nFrom: {CLINIC}\nSent: Monday, December 7, 2026 10:15 AM"
        f"\nTo: {PATIENT}\nSubject: Your appointment\n\n{BODY}",
    ),
    (
        "en outlook web",
        f"________________________________\nFrom: {CLINIC}\nSent: Monday, December 7, 2026 "
        f"10:15\nTo: {PATIENT}\nSubject: Your appointment\n\n{BODY}",
    ),
    (
        "en samsung",
        f"-------- Original message --------\nFrom: {CLINIC}\nDate: 12/7/26 10:15 (GMT+00:00)"
        f"\nTo: {PATIENT}\nSubject: Your appointment\n\n{BODY}",
    ),
    ("de gmail", f"Am Mo., 7. Dez. 2026 um 10:15 Uhr schrieb {CLINIC}:\n\n{QUOTED}"),
    ("de apple", f"Am 07.12.2026 um 10:15 schrieb {CLINIC}:\n\n{QUOTED}"),
    (
        "de outlook",
        f"Von: {CLINIC}\nGesendet: Montag, 7. Dezember 2026 10:15\nAn: {PATIENT}\n"
        f"Betreff: Ihr Termin\n\n{BODY}",
    ),
    (
        "de thunderbird",
        f"-------- Original-Nachricht --------\nBetreff: Ihr Termin\nDatum: 07.12.2026 10:15\n"
        f"Von: {CLINIC}\nAn: {PATIENT}\n\n{BODY}",
    ),
    ("fr gmail", f"Le lun. 7 déc. 2026 à 10:15, {CLINIC} a écrit\u00a0:\n\n{QUOTED}"),
    (
        "fr outlook",
        f"De\u00a0: {CLINIC}\nEnvoyé\u00a0: lundi 7 décembre 2026 10:15\nÀ\u00a0: {PATIENT}\n"
        f"Objet\u00a0: Votre rendez-vous\n\n{BODY}",
    ),
    ("fr thunderbird", f"-------- Message d'origine --------\nDe : {CLINIC}\n\n{BODY}"),
    ("es gmail", f"El lun, 7 dic 2026 a las 10:15, Demo Clinic (<{ADDR}>) escribió:\n\n{QUOTED}"),
    (
        "es outlook",
        f"De: {CLINIC}\nEnviado: lunes, 7 de diciembre de 2026 10:15\nPara: {PATIENT}\n"
        f"Asunto: Su cita\n\n{BODY}",
    ),
    ("pt gmail", f"Em seg., 7 de dez. de 2026 às 10:15, {CLINIC} escreveu:\n\n{QUOTED}"),
    ("pt apple", f"No dia 7/12/2026, às 10:15, {CLINIC} escreveu:\n\n{QUOTED}"),
    ("it gmail", f"Il giorno lun 7 dic 2026 alle ore 10:15 {CLINIC} ha scritto:\n\n{QUOTED}"),
    ("it webmail", f"In data 7 dicembre 2026 10:15:00, {CLINIC} ha scritto:\n\n{QUOTED}"),
    (
        "it outlook",
        f"Da: {CLINIC}\nInviato: lunedì 7 dicembre 2026 10:15\nA: {PATIENT}\n"
        f"Oggetto: Il suo appuntamento\n\n{BODY}",
    ),
    ("it samsung", f"-------- Messaggio originale --------\nDa: {CLINIC}\n\n{BODY}"),
    ("nl gmail", f"Op ma 7 dec 2026 om 10:15 schreef {CLINIC}:\n\n{QUOTED}"),
    ("nl apple", f"Op 7 dec. 2026 om 10:15 heeft {CLINIC} het volgende geschreven:\n\n{QUOTED}"),
    ("da gmail", f"Den man. 7. dec. 2026 kl. 10.15 skrev {CLINIC}:\n\n{QUOTED}"),
    (
        "da samsung",
        f"-------- Oprindelig besked --------\nFra: {CLINIC}\nDato: 07-12-2026 10:15\n"
        f"Til: {PATIENT}\nEmne: Din aftale\n\n{BODY}",
    ),
    (
        "da outlook",
        f"Fra: {CLINIC}\nSendt: 7. december 2026 10:15\nTil: {PATIENT}\nEmne: Din aftale\n\n{BODY}",
    ),
    ("no gmail", f"man. 7. des. 2026 kl. 10:15 skrev {CLINIC}:\n\n{QUOTED}"),
    ("sv gmail", f"Den mån 7 dec. 2026 kl 10:15 skrev {CLINIC}:\n\n{QUOTED}"),
    (
        "sv outlook",
        f"Från: {CLINIC}\nSkickat: den 7 december 2026 10:15\nTill: {PATIENT}\nÄmne: Din tid"
        f"\n\n{BODY}",
    ),
    ("fi gmail", f"ma 7. jouluk. 2026 klo 10.15 Demo Clinic (<{ADDR}>) kirjoitti:\n\n{QUOTED}"),
    (
        "fi outlook",
        f"Lähettäjä: {CLINIC}\nLähetetty: maanantai 7. joulukuuta 2026 10.15\n"
        f"Vastaanottaja: {PATIENT}\nAihe: Aikasi\n\n{BODY}",
    ),
    ("pl gmail", f"pon., 7 gru 2026 o 10:15 {CLINIC} napisał(a):\n\n{QUOTED}"),
    ("pl thunderbird", f"W dniu 7.12.2026 o 10:15, Demo Clinic pisze:\n{QUOTED}"),
    (
        "pl outlook",
        f"Od: {CLINIC}\nWysłano: poniedziałek, 7 grudnia 2026 10:15\nDo: {PATIENT}\n"
        f"Temat: Wizyta\n\n{BODY}",
    ),
    ("ru gmail", f"пн, 7 дек. 2026 г. в 10:15, {CLINIC}:\n\n{QUOTED}"),
    (
        "ru outlook",
        f"От: {CLINIC}\nОтправлено: 7 декабря 2026 г. 10:15\nКому: {PATIENT}\nТема: Ваш приём"
        f"\n\n{BODY}",
    ),
    (
        "ru apple forward",
        f"Начало переадресованного сообщения:\n\nОт: {CLINIC}\nТема: Ваш приём\n"
        f"Дата: 7 декабря 2026 г., 10:15:00 GMT\nКому: {PATIENT}\n\n{BODY}",
    ),
    ("uk gmail", f"пн, 7 груд. 2026 р. о 10:15 {CLINIC} пише:\n\n{QUOTED}"),
    ("tr gmail", f"{CLINIC}, 7 Ara 2026 Pzt, 10:15 tarihinde şunu yazdı:\n\n{QUOTED}"),
    ("cs gmail", f"po 7. 12. 2026 v 10:15 odesílatel {CLINIC} napsal:\n\n{QUOTED}"),
    ("ja gmail", f"2026年12月7日(月) 10:15 {CLINIC}:\n\n{QUOTED}"),
    ("ja apple", f"2026/12/07 10:15、{CLINIC}のメール:\n\n{QUOTED}"),
    ("zh gmail", f"{CLINIC} 于2026年12月7日周一 10:15写道：\n\n{QUOTED}"),
    ("zh apple", f"在 2026年12月7日，10:15，{CLINIC} 写道：\n\n{QUOTED}"),
    ("ko gmail", f"2026년 12월 7일 (월) 오전 10:15, {CLINIC}님이 작성:\n\n{QUOTED}"),
    ("el gmail", f"Στις Δευ 7 Δεκ 2026 στις 10:15, ο/η {CLINIC} έγραψε:\n\n{QUOTED}"),
    (
        "he gmail",
        "\u202bבתאריך יום ב׳, 7 בדצמ׳ 2026 ב-10:15 מאת \u202aDemo Clinic\u202c <\u202a"
        f"{ADDR}\u202c>:\u202c\n\n{QUOTED}",
    ),
    (
        "ar gmail",
        f"\u202bفي الاثنين، 7 ديسمبر 2026 في 10:15 ص، كتب Demo Clinic <\u202a{ADDR}\u202c>:"
        f"\u202c\n\n{QUOTED}",
    ),
    ("hu gmail", f"{CLINIC} ezt írta (időpont: 2026. dec. 7., H, 10:15):\n\n{QUOTED}"),
    # Outlook's header block in more languages (desktop, web and Windows Mail write the same).
    *[
        (
            f"{lang} outlook",
            f"{a}: {CLINIC}\n{b}: 7.12.2026 10:15\n{c}: {PATIENT}\n{d}: x\n\n{BODY}",
        )
        for lang, (a, b, c, d) in {
            "nl": ("Van", "Verzonden", "Aan", "Onderwerp"),
            "no": ("Fra", "Sendt", "Til", "Emne"),
            "cs": ("Od", "Odesláno", "Komu", "Předmět"),
            "tr": ("Kimden", "Gönderildi", "Kime", "Konu"),
            "ja": ("差出人", "送信日時", "宛先", "件名"),
            "zh": ("发件人", "发送时间", "收件人", "主题"),
            "ko": ("보낸 사람", "보낸 날짜", "받는 사람", "제목"),
            "el": ("Από", "Στάλθηκε", "Προς", "Θέμα"),
            "he": ("מאת", "נשלח", "אל", "נושא"),
            "ar": ("من", "تم الإرسال", "إلى", "الموضوع"),
            "hu": ("Feladó", "Elküldve", "Címzett", "Tárgy"),
        }.items()
    ],
    (
        "de gmail forward",
        f"---------- Weitergeleitete Nachricht ---------\nVon: {CLINIC}\n"
        f"Date: Mo., 7. Dez. 2026 um 10:15 Uhr\n\n{BODY}",
    ),
]

LANGUAGES = {case.split()[0] for case, _ in PLAIN}


def reply(body: str, *, html: str | None = None, in_reply_to: str | None = None) -> bytes:
    head = [
        f"From: {PATIENT}",
        f"To: {ADDR}",
        "Subject: Re: Your appointment",
        f"Message-ID: <{uuid.uuid4()}@mail.example.org>",
        "MIME-Version: 1.0",
    ]
    if in_reply_to:
        head += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    if html is None:
        head += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        text = body
    else:
        head += ["Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        text = html
    return ("\r\n".join(head) + "\r\n\r\n" + text.replace("\n", "\r\n")).encode("utf-8")


def test_the_table_covers_fifteen_languages() -> None:
    assert len(LANGUAGES) >= 15, sorted(LANGUAGES)


@pytest.mark.parametrize(("case", "history"), PLAIN, ids=[case for case, _ in PLAIN])
def test_quoted_history_is_hidden_under_each_client_s_reply_header(case: str, history: str) -> None:
    email = parse_email(reply(f"C\n\n{history}"))
    assert email.visible_text == "C", case
    assert "Tuesday at 10:00" in email.text  # the original is kept whole


def test_an_answer_below_a_quote_is_kept_and_a_sign_off_above_it_too() -> None:
    text = (
        "Thanks, I'll come at 10.\n\nPer Avery\n\n"
        f"Il giorno lun 7 dic 2026 alle ore 10:15 {CLINIC} ha scritto:\n{QUOTED}\n"
        "And could I bring my daughter?"
    )
    visible = parse_email(reply(text)).visible_text
    assert visible == "Thanks, I'll come at 10.\n\nPer Avery\n\nAnd could I bring my daughter?"


def test_a_patient_s_last_line_is_never_joined_to_the_header_below_it() -> None:
    header = f"ma 7. jouluk. 2026 klo 10.15 Demo Clinic (<{ADDR}>) kirjoitti:"
    assert parse_email(reply(f"Tulen klo 10.\n{header}\n{QUOTED}")).visible_text == (
        "Tulen klo 10."
    )
    wrapped = header.replace("(<", "(<\n")
    visible = parse_email(reply(f"Tulen klo 10.\n{wrapped}\n{QUOTED}")).visible_text
    assert visible.startswith("Tulen klo 10.")  # shown whole rather than cut above it


@pytest.mark.parametrize(
    "line",
    [
        "My sister wrote:",  # no date or address: the patient's own words
        "Lääkäri kirjoitti:",
        "From: the pharmacy",  # one header-like line is not Outlook's block
        "Da: domani prendo la pillola",
    ],
)
def test_a_patient_s_own_lines_are_not_taken_for_reply_headers(line: str) -> None:
    text = f"C\n{line}\nplease call me back"
    assert parse_email(reply(text)).visible_text == text


ATTR = f'Demo Clinic &lt;<a href="mailto:{ADDR}">{ADDR}</a>&gt;'
HTML = [
    (
        "gmail it",
        '<div dir="ltr">C</div><br><div class="gmail_quote gmail_quote_container">'
        '<div dir="ltr" class="gmail_attr">Il giorno lun 7 dic 2026 alle ore 10:15 '
        f"{ATTR} ha scritto:<br></div>"
        '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px '
        'solid rgb(204,204,204);padding-left:1ex"><div>Your appointment is on Tuesday at '
        "10:00.</div></blockquote></div>",
    ),
    (
        "outlook web de",
        '<div dir="ltr"><div>C</div></div><div id="appendonsend"></div>'
        '<hr style="display:inline-block;width:98%" tabindex="-1">'
        '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" '
        'style="font-size:11pt" color="#000000"><b>Von:</b> Demo Clinic &lt;'
        f"{ADDR}&gt;<br><b>Gesendet:</b> Montag, 7. Dezember 2026 10:15<br><b>An:</b> "
        "Avery Sample<br><b>Betreff:</b> Ihr Termin</font><div>&nbsp;</div></div>"
        "<div><div>Your appointment is on Tuesday at 10:00.</div></div>",
    ),
    (
        "outlook desktop fr",
        '<div class="WordSection1"><p class="MsoNormal">C<o:p></o:p></p><div><div '
        "style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'>"
        '<p class="MsoNormal"><b>De&nbsp;:</b> Demo Clinic &lt;'
        f"{ADDR}&gt;<br><b>Envoyé&nbsp;:</b> lundi 7 décembre 2026 10:15<br>"
        "<b>À&nbsp;:</b> Avery Sample<br><b>Objet&nbsp;:</b> Votre rendez-vous</p></div>"
        '</div><p class="MsoNormal">Your appointment is on Tuesday at 10:00.</p></div>',
    ),
    (
        "apple ja",
        '<html><body dir="auto"><div dir="ltr">C</div><div dir="ltr"><br>'
        '<blockquote type="cite">2026/12/07 10:15、Demo Clinic &lt;'
        f"{ADDR}&gt;のメール:<br><br></blockquote></div>"
        '<blockquote type="cite"><div dir="ltr">Your appointment is on Tuesday at 10:00.'
        "</div></blockquote></body></html>",
    ),
    (
        "thunderbird pl",
        '<p>C</p><div class="moz-cite-prefix">W dniu 7.12.2026 o 10:15, Demo Clinic pisze:'
        '<br></div><blockquote type="cite" cite="mid:0192f3a0@reply.demo-clinic.example.org">'
        "<p>Your appointment is on Tuesday at 10:00.</p><p>Reply C to confirm.</p>"
        '<blockquote type="cite"><p>older</p></blockquote></blockquote>',
    ),
]


@pytest.mark.parametrize(("case", "html"), HTML, ids=[case for case, _ in HTML])
def test_html_only_replies_lose_the_quote_their_client_marked(case: str, html: str) -> None:
    email = parse_email(reply("", html=html))
    assert email.visible_text == "C", case
    assert email.html is not None and "Tuesday at 10:00" in email.html  # kept for the record


# -- a journey answer above a quote, through the intake ------------------------------------

NY = ZoneInfo("America/New_York")
DOMAIN = "reply.demo-clinic.example.org"
CLINIC_INFO = {"name": "Demo Clinic", "phone": "+15550109999"}
ASKS = """\
key: email_asks
name: Email asks
purpose: reminders
anchor: appointment_start
steps:
  - id: ask
    offset: -24h
    template: appointment_reminder
    channels: [email]
    asks: confirmation
    on_reply:
      confirm:
        do: [confirm_appointment, cancel_remaining_asks, notify_staff]
        reply: appointment_confirmed
"""


@pytest.fixture(autouse=True)
def today(set_clock: Any) -> None:
    set_clock(datetime(2026, 11, 20, 12, tzinfo=UTC))


async def asked_by_email(db: Database, ring: KeyRing) -> uuid.UUID:
    """A reminder asking for confirmation went out by email; the hub message id it had."""
    await do_seed_templates(db)
    await journeys.do_install_journey(db, Actor.system("test"), ASKS, "asks.yaml")
    patient_id = await actions.do_create_patient(
        db,
        ring,
        Actor.system("test"),
        NewPatient(
            name="Avery Sample",
            email="avery.sample@example.org",
            time_zone="America/New_York",
            channel_order=["email"],
        ),
        region="US",
    )
    start = datetime(2026, 11, 25, 10, tzinfo=NY)
    await journeys.do_enroll(
        db,
        Actor.system("test"),
        "email_asks",
        patient_id,
        appointment=journeys.NewAppointment("visit-q", start),
        now=datetime(2026, 11, 20, tzinfo=UTC),
    )
    at = start - timedelta(hours=24)
    batch = await do_prepare_batch(
        db,
        ring,
        await journeys.do_claim_due(db, now=at),
        providers=providers_for({Channel.EMAIL}, {}),
        clinic=CLINIC_INFO,
        public_url="https://hub.demo-clinic.example.org",
        now=at,
    )
    [task] = batch.tasks
    return task.outbound.message_id


@pytest.mark.parametrize(
    "case", ["it webmail", "ru gmail", "da samsung", "ja gmail", "fi outlook", "he gmail"]
)
async def test_a_journey_answer_above_a_foreign_quote_confirms(
    db: Database, ring: KeyRing, case: str
) -> None:
    asked = await asked_by_email(db, ring)
    history = dict(PLAIN)[case]
    raw = reply(f"C\n\n{history}", in_reply_to=make_message_id(asked, DOMAIN))
    result = await do_receive_email(
        db, ring, raw, reply_domain=DOMAIN, clinic=CLINIC_INFO, sender=SenderCheck(True, "spf_pass")
    )
    assert result.outcome == "message" and result.threaded_by == "references"
    async with db.reader() as session:
        enrollment = (await session.scalars(select(Enrollment))).one()
        stored = await session.get(Message, result.message_id)
    assert enrollment.confirmed_at is not None  # "C" read as the answer
    assert stored is not None and stored.unseal(ring, "body") == "C"
