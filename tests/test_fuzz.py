"""Property tests (hypothesis) of what the hub reads from outside: the Twilio SMS, status and
voice parsers, SMS keyword detection and segment math as pure functions, then every provider
webhook over HTTP with correctly signed, generated bodies. A parser raises only its documented
error; a webhook answers 2xx or 4xx, never 5xx, and a 4xx stores nothing.

The email parser's own properties are in test_email_parse.py; here the inbound-mail webhook is
fuzzed over HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import string
import unicodedata
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub.channels.base import MalformedPayload, UnknownEvent, WebhookRequest
from hub.channels.twilio_sms.adapter import MAX_BODY_CHARS, MAX_MEDIA, TwilioSmsAdapter
from hub.channels.twilio_voice.adapter import TwilioVoiceAdapter
from hub.channels.twilio_voice.events import parse_call, parse_recording, parse_transcription
from hub.config import Settings
from hub.db import Database
from hub.inbox.actions.intake import (
    HELP_WORDS,
    START_WORDS,
    STOP_WORDS,
    Keyword,
    detect_keyword,
)
from hub.templates.segments import (
    GSM7,
    GSM7_BASIC,
    GSM7_EXTENSION,
    GSM7_PART,
    GSM7_SINGLE,
    UCS2,
    UCS2_PART,
    UCS2_SINGLE,
    segment_info,
)
from tests.conftest import stored_rows
from tests.twilio_helpers import ACCOUNT_SID, AUTH_TOKEN, CLINIC_NUMBER, sign
from web.app import create_app

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent / "hub" / "channels"
PUBLIC = "https://hub.test-clinic.example.org"
EMAIL_SECRET = "whsec-fuzz-only"

PURE = settings(max_examples=300, deadline=None)
OVER_HTTP = settings(
    max_examples=25,
    deadline=None,
    database=None,
    # The app and its database are the test's, built once; examples share them on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _fixtures(channel: str) -> dict[str, dict[str, Any]]:
    return {
        path.stem: json.loads(path.read_text())
        for path in sorted((ROOT / channel / "fixtures").glob("*.json"))
    }


SMS_FIXTURES = _fixtures("twilio_sms")
VOICE_FIXTURES = _fixtures("twilio_voice")
EMAIL_FIXTURES = sorted((ROOT / "email_smtp" / "fixtures").glob("*.eml"))

FIELD_NAMES = sorted(
    {name for f in [*SMS_FIXTURES.values(), *VOICE_FIXTURES.values()] for name in f["params"]}
    | {f"MediaUrl{i}" for i in range(12)}
    | {f"MediaContentType{i}" for i in range(12)}
    | {"ErrorCode", "RecordingStatus", "TranscriptionText", "TranscriptionStatus"}
)
"""Every field Twilio posts to the hub, so generated forms hit the parsers' branches."""

sids = st.builds(
    lambda prefix, digits: prefix + digits,
    st.sampled_from(["SM", "MM", "CA", "RE", "AC", "sm", "", "SM0"]),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=30, max_size=34),
)
phones = st.one_of(
    st.builds(lambda n: f"+1555010{n:04d}", st.integers(0, 9999)),
    st.sampled_from(["anonymous", "restricted", "+266696687", "client:alice", "5550100101"]),
    st.text(max_size=20),
)
values = st.one_of(
    st.text(max_size=40),
    sids,
    phones,
    st.integers(-5, 20).map(str),
    st.sampled_from(
        [
            "https://api.twilio.com/2010-04-01/Media/ME1",
            "http://127.0.0.1/x",
            "ftp://example.org/x",
            "image/jpeg",
            "completed",
            "failed",
            "delivered",
            "no-answer",
            "in-progress",
            "STOP",
            " help ",
            "1",
            "2",
            "#",
            "86400",
            "86401",
            "x" * (MAX_BODY_CHARS + 1),
        ]
    ),
)
field_names = st.one_of(st.sampled_from(FIELD_NAMES), st.text(min_size=1, max_size=12))


def mutated(fixtures: dict[str, dict[str, Any]]) -> st.SearchStrategy[dict[str, str]]:
    """A real payload with fields changed, removed or added: deep into the parser."""

    def apply(base: dict[str, str], changes: dict[str, str], dropped: list[str]) -> dict[str, str]:
        params = {**base, **changes}
        for name in dropped:
            params.pop(name, None)
        return params

    return st.builds(
        apply,
        st.sampled_from([f["params"] for f in fixtures.values()]),
        st.dictionaries(field_names, values, max_size=6),
        st.lists(st.sampled_from(FIELD_NAMES), max_size=4),
    )


def forms(fixtures: dict[str, dict[str, Any]]) -> st.SearchStrategy[dict[str, str]]:
    return st.one_of(mutated(fixtures), st.dictionaries(field_names, values, max_size=12))


queries = st.fixed_dictionaries(
    {},
    optional={
        # The hub's own reference on the URLs it gives Twilio: message id, attempt, menu.
        "m": st.one_of(st.uuids().map(str), st.text(max_size=12)),
        "a": st.one_of(
            st.integers(-(2**70), 2**70).map(str),
            st.sampled_from(["0", "-1", "2147483648", "9" * 30, "1e3", " 1"]),
            st.text(max_size=6),
        ),
        "menu": st.one_of(
            st.sampled_from(["main", "appointment", "voicemail", "other"]), st.text(max_size=8)
        ),
    },
)


sms = TwilioSmsAdapter(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, region="US")
voice = TwilioVoiceAdapter(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, public_url=PUBLIC)


def _hook(params: dict[str, str], query: dict[str, str] | None = None) -> WebhookRequest:
    return WebhookRequest(url=PUBLIC + "/webhooks/twilio/sms", params=params, query=query or {})


# -- parsers (pure) -------------------------------------------------------------------------


@PURE
@given(forms(SMS_FIXTURES))
def test_sms_parser_raises_only_malformed_payload(params: dict[str, str]) -> None:
    try:
        inbound = sms.parse_inbound(_hook(params))
    except MalformedPayload:
        return
    assert inbound.from_address.startswith("+") and inbound.from_address[1:].isdigit()
    assert len(inbound.body) <= MAX_BODY_CHARS
    assert len(inbound.media) <= MAX_MEDIA
    assert inbound.body or inbound.media
    assert all(m.url.startswith(("https://", "http://")) for m in inbound.media)
    assert inbound.account_id in (None, "", ACCOUNT_SID)


@PURE
@given(forms(SMS_FIXTURES), queries)
def test_status_parsers_raise_only_their_documented_errors(
    params: dict[str, str], query: dict[str, str]
) -> None:
    for adapter in (sms, voice):
        try:
            update = adapter.parse_status(_hook(params, query))
        except (MalformedPayload, UnknownEvent):
            continue
        assert update.provider == adapter.name
        assert (update.hub_message_id is None) == ("m" not in query)


@pytest.mark.parametrize("attempt", ["0", "-1", "2147483648", "9" * 30])
def test_a_callback_naming_an_impossible_attempt_is_malformed(attempt: str) -> None:
    """Found by the HTTP property below on PostgreSQL: the attempt went to the database as a
    32-bit integer and the callback got a 500."""
    query = {"m": "01a2b3c4-0000-7000-8000-000000000001", "a": attempt}
    for adapter, fixture in (
        (sms, SMS_FIXTURES["status_delivered"]),
        (voice, VOICE_FIXTURES["status_completed"]),
    ):
        with pytest.raises(MalformedPayload, match="message reference is damaged"):
            adapter.parse_status(_hook(fixture["params"], query))


@PURE
@given(forms(VOICE_FIXTURES))
def test_voice_parsers_raise_only_malformed_payload(params: dict[str, str]) -> None:
    parsers: list[Callable[[], object]] = [
        lambda: parse_call(params, region="US", account_sid=ACCOUNT_SID),
        lambda: parse_recording(params, region="US", account_sid=ACCOUNT_SID),
        lambda: parse_transcription(params, account_sid=ACCOUNT_SID),
        lambda: voice.parse_inbound(_hook(params)),
    ]
    for parse in parsers:
        try:
            event = parse()
        except (MalformedPayload, UnknownEvent):
            continue
        caller = getattr(event, "from_address", None)
        assert caller is None or (caller.startswith("+") and caller[1:].isdigit())


@PURE
@given(
    st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=8),
    st.text(max_size=40),
    st.text(max_size=60),
)
def test_signature_check_is_a_plain_no_for_anything_forged(
    params: dict[str, str], signature: str, path: str
) -> None:
    request = WebhookRequest(
        url=PUBLIC + "/" + path, params=params, headers={"X-Twilio-Signature": signature}
    )
    genuine = sign(request.url, params)
    assert sms.verify(request) is (signature == genuine)
    assert voice.verify(request) is (signature == genuine)


# -- keywords ----------------------------------------------------------------------------------

KEYWORDS = sorted(STOP_WORDS | START_WORDS | HELP_WORDS)
FAMILY = {
    **dict.fromkeys(STOP_WORDS, Keyword.STOP),
    **dict.fromkeys(START_WORDS, Keyword.START),
    **dict.fromkeys(HELP_WORDS, Keyword.HELP),
}
spacing = st.text(alphabet=" \t\r\n\u00a0\u2003", max_size=4)


@st.composite
def keyword_messages(draw: st.DrawFn) -> tuple[str, str]:
    """A keyword as patients type it: any case, padded, maybe with a final '.' or '!'."""
    word = draw(st.sampled_from(KEYWORDS))
    cased = "".join(c.lower() if draw(st.booleans()) else c for c in word)
    ending = draw(st.sampled_from(["", ".", "!", "!!", ". "]))
    return word, draw(spacing) + cased + ending + draw(spacing)


@PURE
@given(keyword_messages())
def test_every_keyword_is_found_whatever_its_case_and_spacing(typed: tuple[str, str]) -> None:
    word, body = typed
    assert detect_keyword(body) == (FAMILY[word], word)


@PURE
@given(st.text(max_size=60), spacing, spacing)
def test_keyword_detection_never_raises_and_ignores_padding(
    body: str, before: str, after: str
) -> None:
    found = detect_keyword(body)
    assert detect_keyword(before + body + after) == found
    assert detect_keyword(found[1] if found else "") == found
    if found is not None:
        keyword, word = found
        assert FAMILY[word] is keyword
        assert word == unicodedata.normalize("NFKC", body).strip().rstrip(".!").strip().upper()


@pytest.mark.parametrize(
    ("typed", "word"),
    [
        ("\uff33\uff34\uff2f\uff30", "STOP"),  # full-width STOP
        ("\uff53\uff54\uff4f\uff50\uff01", "STOP"),  # full-width stop!
        ("REVO\u212aE", "REVOKE"),  # the Kelvin sign for K
        ("\uff28\uff25\uff2c\uff30", "HELP"),
    ],
)
def test_keywords_typed_in_full_width_or_compatibility_letters_count(typed: str, word: str) -> None:
    """Patients on CJK keyboards type full-width letters; an opt-out is honoured as it looks."""
    assert detect_keyword(typed) == (FAMILY[word], word)


@PURE
@given(st.sampled_from(KEYWORDS), st.text(string.ascii_letters + string.digits, min_size=1))
def test_a_keyword_inside_a_sentence_is_an_ordinary_message(word: str, other: str) -> None:
    assert detect_keyword(f"{word} {other}") is None
    assert detect_keyword(f"{other} {word}") is None


# -- segment math ------------------------------------------------------------------------------

GSM_BASIC = "".join(sorted(GSM7_BASIC))
GSM_EXTENSION = "".join(sorted(GSM7_EXTENSION))
gsm_texts = st.text(alphabet=GSM_BASIC + GSM_EXTENSION, max_size=700)
any_texts = st.one_of(
    gsm_texts,
    st.text(max_size=400),
    st.text(alphabet=GSM_BASIC + "é€😀ü中", max_size=400),
)


def _units(text: str) -> tuple[str, int]:
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        return GSM7, sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    return UCS2, len(text.encode("utf-16-le")) // 2


@PURE
@given(any_texts)
def test_segment_counts_keep_the_known_invariants(text: str) -> None:
    info = segment_info(text)
    encoding, units = _units(text)
    assert (info.encoding, info.units) == (encoding, units)
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding == GSM7 else (UCS2_SINGLE, UCS2_PART)
    if units == 0:
        assert info.segments == 0
    elif units <= single:
        assert (info.segments, info.per_segment) == (1, single)
    else:
        assert info.per_segment == part
        # Packing never beats division, and loses at most one unit per part (an escape or a
        # surrogate pair moved whole to the next part).
        assert math.ceil(units / part) <= info.segments <= math.ceil(units / (part - 1))
    assert set(info.non_gsm) == {c for c in text if c not in GSM7_BASIC | GSM7_EXTENSION}
    assert len(info.non_gsm) == len(set(info.non_gsm))


@PURE
@given(st.text(alphabet=GSM_BASIC, max_size=800))
def test_plain_gsm_text_is_160_then_153_per_segment(text: str) -> None:
    info = segment_info(text)
    expected = 0 if not text else 1 if len(text) <= 160 else math.ceil(len(text) / 153)
    assert (info.encoding, info.units, info.segments) == (GSM7, len(text), expected)


@PURE
@given(st.text(alphabet="中文éü", min_size=1, max_size=400).filter(lambda t: {"中", "文"} & set(t)))
def test_bmp_unicode_text_is_70_then_67_per_segment(text: str) -> None:
    info = segment_info(text)
    expected = 1 if len(text) <= 70 else math.ceil(len(text) / 67)
    assert (info.encoding, info.units, info.segments) == (UCS2, len(text), expected)


@PURE
@given(st.text(alphabet=GSM_BASIC, max_size=300), st.sampled_from(GSM_EXTENSION))
def test_extension_characters_count_double(text: str, extended: str) -> None:
    assert segment_info(text + extended).units == segment_info(text).units + 2
    assert segment_info(text + extended).encoding == GSM7


@PURE
@given(any_texts, st.characters(codec="utf-8"))
def test_a_longer_text_never_costs_fewer_segments(text: str, extra: str) -> None:
    before, after = segment_info(text), segment_info(text + extra)
    if before.encoding == after.encoding:
        assert after.segments >= before.segments
    else:  # one character outside GSM-7 moves the whole text to UCS-2
        assert (before.encoding, after.encoding) == (GSM7, UCS2)
        assert after.segments >= before.segments


# -- webhooks over HTTP ---------------------------------------------------------------------


@pytest.fixture
def fuzz_settings(settings: Settings) -> Settings:
    return replace(
        settings,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=CLINIC_NUMBER,
        public_url=PUBLIC,
        email_webhook_secret=EMAIL_SECRET,
    )


@pytest.fixture
async def client(
    db: Database, fuzz_settings: Settings, aiohttp_client: Any, fresh_redis: None
) -> TestClient:
    return await aiohttp_client(create_app(fuzz_settings, db=db))  # type: ignore[no-any-return]


class Bridge:
    """Runs hypothesis (synchronous) in a thread while the test's loop serves the app."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __call__(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)


ALL_FIXTURES = {**SMS_FIXTURES, **VOICE_FIXTURES}
TWILIO_PATHS = [
    "/webhooks/twilio/sms",
    "/webhooks/twilio/status",
    "/webhooks/twilio/voice",
    "/webhooks/twilio/voice/gather",
    "/webhooks/twilio/voice/outbound",
    "/webhooks/twilio/voice/recording",
    "/webhooks/twilio/voice/transcription",
    "/webhooks/twilio/voice/status",
]


def own_posts(path: str) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(form, query) of each real payload Twilio posts to this endpoint."""
    own = [
        (f["params"], dict(parse_qsl(urlsplit(f["path"]).query)))
        for f in ALL_FIXTURES.values()
        if urlsplit(f["path"]).path == path
    ]
    assert own, f"no fixture for {path}"
    return own


def posts_to(path: str) -> st.SearchStrategy[tuple[dict[str, str], dict[str, str]]]:
    """(form, query) for one endpoint: mostly its own fixtures changed (and the query the hub
    gave Twilio, sometimes damaged), sometimes any form at all."""
    own = own_posts(path)

    def apply(
        base: tuple[dict[str, str], dict[str, str]],
        changes: dict[str, str],
        dropped: list[str],
        query: dict[str, str] | None,
    ) -> tuple[dict[str, str], dict[str, str]]:
        params = {**base[0], **changes}
        for name in dropped:
            params.pop(name, None)
        return params, base[1] if query is None else {**base[1], **query}

    changed = st.builds(
        apply,
        st.sampled_from(own),
        st.dictionaries(field_names, values, max_size=4),
        st.lists(st.sampled_from(FIELD_NAMES), max_size=3),
        st.one_of(st.none(), st.none(), queries),
    )
    return st.one_of(changed, changed, st.tuples(forms(ALL_FIXTURES), queries))


async def _check_twilio_post(
    client: TestClient, db: Database, path: str, params: dict[str, str], query: dict[str, str]
) -> int:
    before = await stored_rows(db)
    # Twilio signs the URL exactly as it requests it; the client may re-quote the query.
    sent = client.make_url(path + ("?" + urlencode(query) if query else "")).raw_path_qs
    # Encoded here: aiohttp's form encoder refuses control characters in field names, and
    # Twilio (or someone with its token) can send them.
    response = await client.post(
        sent,
        data=urlencode(params).encode(),
        headers={
            "X-Twilio-Signature": sign(PUBLIC + sent, params),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    text = await response.text()
    assert response.status in (200, 204, 400), (sent, response.status, text)
    if response.status >= 400:
        assert await stored_rows(db) == before, (sent, text)
    return response.status


@pytest.mark.parametrize("path", TWILIO_PATHS)
async def test_signed_generated_forms_get_2xx_or_400_and_a_400_stores_nothing(
    client: TestClient, db: Database, path: str
) -> None:
    run = Bridge(asyncio.get_running_loop())
    statuses: set[int] = set()

    @OVER_HTTP
    @given(posts_to(path))
    @example(own_posts(path)[0])  # the real payload: the property also covers what is stored
    def post(request: tuple[dict[str, str], dict[str, str]]) -> None:
        statuses.add(run(_check_twilio_post(client, db, path, *request)))

    await asyncio.to_thread(post)
    assert statuses & {200, 204}, statuses


def _mime_mutations() -> st.SearchStrategy[bytes]:
    def mutate(raw: bytes, cut: int, insert: bytes, header: bytes) -> bytes:
        at = cut % (len(raw) + 1)
        return header + raw[:at] + insert + raw[at:]

    return st.builds(
        mutate,
        st.sampled_from([path.read_bytes() for path in EMAIL_FIXTURES]),
        st.integers(0, 100_000),
        st.binary(max_size=40),
        st.sampled_from(
            [
                b"",
                b"From: <avery@example.org>\r\n",
                b"Content-Type: multipart/mixed\r\n",
                b"Message-ID: <>\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"Subject: =?utf-8?b?////?=\r\n",
            ]
        ),
    )


async def _check_email_post(client: TestClient, db: Database, raw: bytes) -> int:
    before = await stored_rows(db)
    signature = "sha256=" + hmac.new(EMAIL_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    response = await client.post(
        "/webhooks/email/inbound",
        data=raw,
        headers={"X-Hub-Signature-256": signature, "Content-Type": "message/rfc822"},
    )
    text = await response.text()
    assert response.status in (200, 400), (response.status, text)
    if response.status == 400:
        assert await stored_rows(db) == before, text
    return response.status


async def test_signed_generated_mail_gets_200_or_400_and_a_400_stores_nothing(
    client: TestClient, db: Database
) -> None:
    run = Bridge(asyncio.get_running_loop())
    statuses: set[int] = set()

    @OVER_HTTP
    @given(st.one_of(_mime_mutations(), st.binary(max_size=500)))
    @example((ROOT / "email_smtp" / "fixtures" / "new_message_with_attachment.eml").read_bytes())
    @example(b"not an email at all")
    def post(raw: bytes) -> None:
        statuses.add(run(_check_email_post(client, db, raw)))

    await asyncio.to_thread(post)
    assert 200 in statuses and 400 in statuses, statuses
