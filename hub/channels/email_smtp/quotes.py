"""Where quoted history starts in a reply, read from the lines mail clients write above it in
many languages. Consulted before quotequail, which reads the English and a handful of other
attribution lines but neither Outlook's header block in other languages, nor Gmail's Russian,
Japanese or Korean date lines, nor most "Original message" separators.

Three shapes, each a table below (words as each client writes them, lower-case):
- an attribution line, possibly wrapped over two or three lines: Gmail "On <date> <name>
  <address> wrote:", Apple Mail "On <date>, at <time>, <name> wrote:", Thunderbird, Android
  (Gmail app, Samsung), in each client's translations;
- a separator line: Outlook "-----Original Message-----", Thunderbird and Samsung
  "-------- Original message --------", Gmail "---------- Forwarded message ---------", Apple
  "Begin forwarded message:", translated;
- Outlook's header block (desktop, web and Windows Mail): "From:", then "Sent:" or "Date:",
  then "To:" or "Subject:", translated.

Only text is read here; HTML is made text first (display.py), after the quote containers
clients mark in HTML are taken out.
"""

# The tables are words in other scripts (Cyrillic, Greek, CJK full-width colons): letters that
# look like Latin ones are meant.
# ruff: noqa: RUF001

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ATTRIBUTION_CHARS = 400
"""An attribution line (joined from its wrapped lines) longer than this is not one."""
MAX_WRAPPED_LINES = 3
"""Lines an attribution may be wrapped over (Gmail wraps plain text at 78 characters)."""
HEADER_BLOCK_LINES = 6
"""Lines after a "From:" line within which Outlook's other header lines must come."""

_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u202f\u2007]+")

# Every real attribution names a date, a time or an address: a patient's own line ending in
# "wrote:" or "skrev:" without any of them is left alone.
_EVIDENCE = re.compile(r"\d|@")

_ATTRIBUTIONS = [
    r"^on\b.{4,}\bwrote:$",  # English (Gmail, Apple Mail, Thunderbird, Outlook for Mac)
    r"^am\b.{4,}\bschrieb\b.*:$",  # German
    r"^le\b.{4,}\ba écrit ?:$",  # French
    r"^el\b.{4,}\bescribió:$",  # Spanish
    r"^.{4,}\bva escriure:$",  # Catalan
    r"^(em|no dia|a|às)\b.{4,}\bescreveu:$",  # Portuguese (Brazil, Portugal)
    r"^(il giorno|in data|il|alle)\b.{4,}\bha scritto:$",  # Italian
    r"^op\b.{4,}\b(schreef\b.*|het volgende geschreven):$",  # Dutch
    r"^.{4,}\bskrev\b.*:$",  # Danish, Norwegian, Swedish ("Den ... skrev ...:")
    r"^.{4,}\bkirjoitti:$",  # Finnish
    r"^.{4,}\b(napisał\(a\)|napisał|napisała|pisze):$",  # Polish (Gmail, Thunderbird)
    r"^wiadomość napisana przez\b.{4,}:$",  # Polish (Apple Mail)
    r"^.{4,}\b(napsal\(a\)|napsal|napsala|napísal\(a\)|napísal|napísala):$",  # Czech, Slovak
    r"^.{4,}\b(şunu yazdı|yazdı):$",  # Turkish
    r"^.{4,}\b(написал\(а\)|написал|написала|пишет|пише|написав|написала):$",  # Russian, Ukr.
    r"^(пн|вт|ср|чт|пт|сб|вс|нд), .{4,}\bг\. в \d{1,2}:\d{2}, .{1,}:$",  # Russian Gmail
    r"^.{4,}\bέγραψε:$",  # Greek
    r"^.{4,}\bezt írta\b.*:$",  # Hungarian
    r"^.{4,}\ba scris:$",  # Romanian
    r"^.{4,}\bđã viết:$",  # Vietnamese
    r"^.{4,}\bmenulis:$",  # Indonesian, Malay
    r"^.{4,}เขียนว่า:$",  # Thai
    r"^\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日.*\d{1,2}:\d{2}.*[:：]$",  # Japanese, Chinese dates
    r"^.{2,}(のメール|のメッセージ|は書きました|さんは書きました)[:：]$",  # Japanese
    r"^.{2,}(写道|寫道)[:：]$",  # Chinese (simplified, traditional)
    r"^.{2,}(님이 작성|작성)[:：]$",  # Korean
    r"^בתאריך .{4,}[:：]$",  # Hebrew (Gmail: "בתאריך ... מאת ...:")
    r"^.{4,}(כתב|כתבה|כתב/ה)[:：]$",  # Hebrew
    r"^(في|بتاريخ)\b.{4,}\bكتب\b.*[:：]$",  # Arabic
]
ATTRIBUTIONS = tuple(re.compile(p, re.IGNORECASE) for p in _ATTRIBUTIONS)
"""Attribution lines, matched against the line with its wrapped continuation joined."""

SEPARATOR_PHRASES = frozenset(
    {
        # English
        "original message",
        "forwarded message",
        "begin forwarded message",
        # German
        "original-nachricht",
        "originalnachricht",
        "ursprüngliche nachricht",
        "weitergeleitete nachricht",
        "anfang der weitergeleiteten nachricht",
        "anfang der weitergeleiteten e-mail",
        # French
        "message d'origine",
        "message d’origine",
        "message original",
        "message transféré",
        "début du message réexpédié",
        "début du message transféré",
        # Spanish, Catalan
        "mensaje original",
        "mensaje reenviado",
        "inicio del mensaje reenviado",
        "missatge original",
        "missatge reenviat",
        # Portuguese
        "mensagem original",
        "mensagem encaminhada",
        "início da mensagem reencaminhada",
        "início da mensagem encaminhada",
        # Italian
        "messaggio originale",
        "messaggio inoltrato",
        "inizio messaggio inoltrato",
        # Dutch
        "oorspronkelijk bericht",
        "origineel bericht",
        "doorgestuurd bericht",
        "begin doorgestuurd bericht",
        # Danish, Norwegian, Swedish
        "oprindelig besked",
        "oprindelig meddelelse",
        "videresendt besked",
        "videresendt meddelelse",
        "opprinnelig melding",
        "videresendt melding",
        "ursprungligt meddelande",
        "originalmeddelande",
        "vidarebefordrat meddelande",
        "vidarebefordrat brev",
        # Finnish
        "alkuperäinen viesti",
        "välitetty viesti",
        "välitetty viesti alkaa",
        # Polish
        "oryginalna wiadomość",
        "wiadomość oryginalna",
        "przekazana wiadomość",
        "wiadomość przekazana dalej",
        "początek przekazywanej wiadomości",
        # Russian, Ukrainian
        "исходное сообщение",
        "оригинальное сообщение",
        "пересылаемое сообщение",
        "пересланное сообщение",
        "начало переадресованного сообщения",
        "оригінальне повідомлення",
        "переслане повідомлення",
        # Czech, Slovak
        "původní zpráva",
        "přeposlaná zpráva",
        "začátek přeposlané zprávy",
        "pôvodná správa",
        # Turkish
        "orijinal mesaj",
        "özgün ileti",
        "iletilen mesaj",
        "iletilmiş ileti",
        # Greek
        "αρχικό μήνυμα",
        "προωθημένο μήνυμα",
        # Hungarian, Romanian
        "eredeti üzenet",
        "továbbított üzenet",
        "mesaj original",
        "mesaj redirecționat",
        # Japanese, Chinese, Korean
        "元のメッセージ",
        "転送されたメッセージ",
        "原始邮件",
        "原始郵件",
        "转发的邮件",
        "轉寄的郵件",
        "원본 메시지",
        "전달된 메시지",
        # Hebrew, Arabic
        "הודעה מקורית",
        "הודעה שהועברה",
        "الرسالة الأصلية",
        "رسالة معاد توجيهها",
    }
)
"""Words of separator lines, between runs of dashes or ending in a colon."""

_DASHED = re.compile(r"^[-_=*]{2,}\s*(.{3,60}?)\s*[-_=*]{2,}$")
_COLONED = re.compile(r"^(.{3,60}?)\s*[:：]$")
_RULE = re.compile(r"^[_\-=]{10,}$")

FROM_WORDS = frozenset(
    {
        "from",
        "von",
        "de",
        "da",
        "van",
        "fra",
        "från",
        "frá",
        "lähettäjä",
        "od",
        "от",
        "від",
        "kimden",
        "από",
        "feladó",
        "de la",
        "šalje",
        "dari",
        "từ",
        "差出人",
        "发件人",
        "寄件者",
        "寄件人",
        "보낸 사람",
        "מאת",
        "من",
    }
)
SENT_WORDS = frozenset(
    {
        "sent",
        "date",
        "gesendet",
        "datum",
        "envoyé",
        "enviado",
        "enviado el",
        "enviada",
        "fecha",
        "data",
        "inviato",
        "verzonden",
        "sendt",
        "dato",
        "skickat",
        "lähetetty",
        "päivämäärä",
        "wysłano",
        "wysłane",
        "отправлено",
        "дата",
        "надіслано",
        "odesláno",
        "gönderildi",
        "gönderilme",
        "tarih",
        "στάλθηκε",
        "ημερομηνία",
        "elküldve",
        "dátum",
        "trimis",
        "poslano",
        "dikirim",
        "đã gửi",
        "送信日時",
        "日付",
        "发送时间",
        "發送時間",
        "寄件日期",
        "보낸 날짜",
        "נשלח",
        "تم الإرسال",
        "التاريخ",
        "enviat",
    }
)
TO_WORDS = frozenset(
    {
        "to",
        "an",
        "à",
        "a",
        "para",
        "per a",
        "aan",
        "til",
        "till",
        "vastaanottaja",
        "do",
        "кому",
        "kime",
        "προς",
        "címzett",
        "către",
        "prima",
        "kepada",
        "đến",
        "宛先",
        "收件人",
        "收件者",
        "받는 사람",
        "אל",
        "إلى",
    }
)
SUBJECT_WORDS = frozenset(
    {
        "subject",
        "betreff",
        "objet",
        "asunto",
        "assumpte",
        "assunto",
        "oggetto",
        "onderwerp",
        "emne",
        "ämne",
        "aihe",
        "temat",
        "тема",
        "předmět",
        "predmet",
        "konu",
        "θέμα",
        "tárgy",
        "subiect",
        "perihal",
        "chủ đề",
        "件名",
        "主题",
        "主旨",
        "제목",
        "נושא",
        "الموضوع",
    }
)
_HEADER_LINE = re.compile(r"^\*?([^:：*<>@]{1,30}?)\s*\*?\s*[:：]\s*\*?\s*(.*)$")


@dataclass(frozen=True)
class QuoteSpan:
    start: int
    """First line of the quoted history (its attribution, separator or header block)."""
    end: int
    """Line after it: ``len(lines)`` when it runs to the end; less when the sender wrote
    more below a ">" quote (an inline answer)."""


def normalize(line: str) -> str:
    """A line as the tables read it: direction marks removed (Gmail wraps Hebrew and Arabic
    attributions in them), every kind of space one space, no leading quote marks."""
    line = _SPACES.sub(" ", _BIDI.sub("", line)).strip()
    return line.lstrip("> ").strip() if line.startswith(">") else line


def _attribution(lines: list[str], index: int) -> int | None:
    """The last line of an attribution starting at ``index``, if one does."""
    joined = ""
    # A wrapped attribution opens a paragraph below the reply (clients leave a blank line
    # above it); joining a patient's line to the header below it would hide that line.
    wraps = MAX_WRAPPED_LINES if index > 0 and not lines[index - 1].strip() else 1
    for offset in range(wraps):
        if index + offset >= len(lines):
            break
        part = normalize(lines[index + offset])
        if not part:
            break
        # "<" at a line end and the address on the next line: Gmail wraps there.
        joined = f"{joined}{part}" if joined.endswith("<") else f"{joined} {part}".strip()
        if len(joined) > MAX_ATTRIBUTION_CHARS:
            break
        if _EVIDENCE.search(joined) and any(p.match(joined) for p in ATTRIBUTIONS):
            return index + offset
    return None


def _separator(line: str) -> bool:
    line = normalize(line)
    match = _DASHED.match(line) or _COLONED.match(line)
    if match is None:
        return False
    phrase = _SPACES.sub(" ", match.group(1).strip(" -_=*").lower())
    return phrase in SEPARATOR_PHRASES


def _header_name(line: str) -> str | None:
    match = _HEADER_LINE.match(normalize(line))
    if match is None or not match.group(2).strip():
        return None
    return _SPACES.sub(" ", match.group(1).strip().lower())


def _header_block(lines: list[str], index: int) -> bool:
    """Outlook's "From: / Sent: / To: / Subject:" block, in any of its languages."""
    if _header_name(lines[index]) not in FROM_WORDS:
        return False
    names = set()
    for line in lines[index + 1 : index + 1 + HEADER_BLOCK_LINES]:
        if not line.strip():
            continue
        name = _header_name(line)
        if name is None:
            break
        names.add(name)
    return bool(names & SENT_WORDS) and bool(names & (TO_WORDS | SUBJECT_WORDS))


def _previous(lines: list[str], index: int) -> int | None:
    for back in range(index - 1, -1, -1):
        if lines[back].strip():
            return back
    return None


def _quoted_run_end(lines: list[str], start: int) -> int:
    """After an attribution: where its ">" quote ends, or the end when it is not a ">" quote
    (everything below an attribution without quote marks is the quoted mail)."""
    index = start
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index >= len(lines) or not lines[index].lstrip().startswith(">"):
        return len(lines)
    while index < len(lines) and (
        lines[index].lstrip().startswith(">") or not lines[index].strip()
    ):
        index += 1
    return index if index < len(lines) else len(lines)


def find_quote(lines: list[str]) -> QuoteSpan | None:
    """The first quoted history in ``lines``, or None when no table knows its start."""
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        end = _attribution(lines, index)
        if end is not None:
            return QuoteSpan(index, _quoted_run_end(lines, end + 1))
        if _separator(line):
            return QuoteSpan(index, len(lines))
        if _header_block(lines, index):
            # Outlook draws a rule above the block ("____", or an <hr> made into dashes).
            before = _previous(lines, index)
            start = before if before is not None and _RULE.match(lines[before].strip()) else index
            return QuoteSpan(start, len(lines))
    return None
