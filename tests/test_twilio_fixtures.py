"""The synthetic Twilio SMS webhook fixtures: the full set, each shaped like Twilio's payload."""

from __future__ import annotations

import re

import pytest

from tests.twilio_helpers import CLINIC_NUMBER as CLINIC
from tests.twilio_helpers import FIXTURES, fixture
from tests.twilio_helpers import PATIENT_NUMBER as PATIENT

MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-f]{32}")
INBOUND_FIELDS = {
    "ToCountry", "ToState", "SmsMessageSid", "NumMedia", "ToCity", "FromZip", "SmsSid",
    "FromState", "SmsStatus", "FromCity", "Body", "FromCountry", "To", "ToZip", "NumSegments",
    "MessageSid", "AccountSid", "From", "ApiVersion",
}  # fmt: skip
WHATSAPP_FIELDS = {
    "SmsMessageSid", "NumMedia", "ProfileName", "MessageType", "SmsSid", "WaId", "SmsStatus",
    "Body", "To", "NumSegments", "ReferralNumMedia", "MessageSid", "AccountSid", "From",
    "ApiVersion",
}  # fmt: skip
STATUS_FIELDS = {
    "SmsSid", "SmsStatus", "MessageStatus", "To", "From", "MessageSid", "AccountSid", "ApiVersion",
}  # fmt: skip
FIXTURE_NAMES = [
    "inbound_sms", "inbound_sms_messaging_service", "inbound_mms", "status_queued", "status_sent",
    "status_delivered", "status_undelivered_30003", "status_failed_21610", "status_failed_30006",
    "status_read", "inbound_whatsapp", "inbound_whatsapp_button", "inbound_whatsapp_location",
]  # fmt: skip


def test_fixture_set_is_complete() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(FIXTURE_NAMES)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_shape(name: str) -> None:
    data = fixture(name)
    assert set(data) == {"description", "path", "params"} and data["description"]
    params: dict[str, str] = data["params"]
    assert all(isinstance(value, str) for value in params.values())
    assert re.fullmatch(r"AC[0-9a-f]{32}", params["AccountSid"])
    assert MESSAGE_SID.fullmatch(params["MessageSid"])
    assert params["ApiVersion"] == "2010-04-01"
    if "MessagingServiceSid" in params:
        assert re.fullmatch(r"MG[0-9a-f]{32}", params["MessagingServiceSid"])
    # Synthetic numbers only: every phone-number-looking value is in +1555010xxxx.
    for value in params.values():
        for number in re.findall(r"\+\d{7,}", value):
            assert re.fullmatch(r"\+1555010\d{4}", number), number

    if name.startswith("inbound_whatsapp"):
        # WhatsApp: the whatsapp: prefix, WaId (the number without +), no geographic fields.
        assert set(params) >= WHATSAPP_FIELDS and "FromCountry" not in params
        assert (params["From"], params["To"]) == (f"whatsapp:{PATIENT}", f"whatsapp:{CLINIC}")
        assert params["WaId"] == PATIENT.removeprefix("+")
        if params["MessageType"] == "button":
            assert params["ButtonText"] == params["Body"] and params["ButtonPayload"]
            assert re.fullmatch(r"SM[0-9a-f]{32}", params["OriginalRepliedMessageSid"])
        if params["MessageType"] == "location":
            assert params["Body"] == "" and float(params["Latitude"]) and params["Longitude"]
        assert data["path"] == "/webhooks/twilio/sms"
        assert params["SmsSid"] == params["SmsMessageSid"] == params["MessageSid"]
    elif name.startswith("inbound"):
        assert data["path"] == "/webhooks/twilio/sms"
        assert set(params) >= INBOUND_FIELDS
        assert params["SmsSid"] == params["SmsMessageSid"] == params["MessageSid"]
        assert (params["From"], params["To"], params["SmsStatus"]) == (PATIENT, CLINIC, "received")
        assert ("MessagingServiceSid" in params) == (name == "inbound_sms_messaging_service")
        count = int(params["NumMedia"])
        assert params["MessageSid"].startswith("MM" if count else "SM")
        for i in range(count):
            assert params[f"MediaContentType{i}"]
            media = (
                rf"https://api\.twilio\.com/2010-04-01/Accounts/{params['AccountSid']}"
                rf"/Messages/{params['MessageSid']}/Media/ME[0-9a-f]{{32}}"
            )
            assert re.fullmatch(media, params[f"MediaUrl{i}"])
        assert f"MediaUrl{count}" not in params
    else:
        assert data["path"] == "/webhooks/twilio/status"
        assert set(params) >= STATUS_FIELDS
        status = name.split("_")[1]
        assert params["SmsStatus"] == params["MessageStatus"] == status
        assert params["SmsSid"] == params["MessageSid"]
        assert (params["From"], params["To"]) == (CLINIC, PATIENT)
        code = name.split("_")[2] if status in ("undelivered", "failed") else None
        assert params.get("ErrorCode") == code
        if status == "delivered":
            assert re.fullmatch(r"\d{10}", params["RawDlrDoneDate"])
