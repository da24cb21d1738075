"""Shared helpers for Twilio tests: fixtures on disk, signatures computed by the real SDK."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twilio.request_validator import RequestValidator

FIXTURES = Path(__file__).resolve().parent.parent / "hub" / "channels" / "twilio_sms" / "fixtures"
ACCOUNT_SID = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
CLINIC_NUMBER = "+15550109999"
PATIENT_NUMBER = "+15550100101"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def sign(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))
