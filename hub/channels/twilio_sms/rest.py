"""What both Twilio adapters (SMS and voice) share: the webhook signature check and one SDK
client on the SDK's async HTTP transport, pointed at ``api_base`` when set (a local fake)."""

from __future__ import annotations

from typing import Any

from twilio.request_validator import RequestValidator

from hub.channels.base import NotConfigured, WebhookRequest

SIGNATURE_HEADER = "X-Twilio-Signature"
API_TIMEOUT_S = 15.0
"""Per request to Twilio's API; a slower answer is treated as a transient failure."""


class TwilioRest:
    """Mixed into an adapter whose ``__init__`` sets these attributes."""

    account_sid: str | None
    api_base: str | None
    _auth_token: str | None
    _validator: RequestValidator | None
    _client: Any
    needs_credentials_to = "use Twilio"
    """Ends the error when credentials are missing ("... must be set to send SMS")."""

    def verify(self, request: WebhookRequest) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        if self._validator is None or not signature:
            return False
        return bool(self._validator.validate(request.url, dict(request.params), signature))

    def _sdk(self) -> Any:
        if self._client is None:
            if not (self.account_sid and self._auth_token):
                raise NotConfigured(
                    "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set to "
                    + self.needs_credentials_to
                )
            from twilio.http.async_http_client import AsyncTwilioHttpClient
            from twilio.rest import Client

            client = Client(
                self.account_sid,
                self._auth_token,
                http_client=AsyncTwilioHttpClient(timeout=API_TIMEOUT_S),
            )
            if self.api_base:
                client.api.base_url = self.api_base.rstrip("/")
            self._client = client
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            session = getattr(self._client.http_client, "session", None)
            if session is not None:
                await session.close()
            self._client = None
