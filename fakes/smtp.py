"""A local SMTP server (aiosmtpd) standing in for the clinic's mail relay or a patient's mail
server: it speaks real SMTP, keeps what it accepted, and can refuse recipients the way real
servers do (4xx try later, 5xx no such user).

    fake = FakeSmtp(); await fake.start()      # fake.url -> "smtp://127.0.0.1:<port>"
    fake.refuse("gone@example.org", 550, "5.1.1 user unknown")
    await fake.wait_for(lambda f: len(f.messages) == 1)
    fake.messages[0].message  # email.message.EmailMessage

`hub demo` runs one with ``save_dir`` as the clinic's relay, so demo mail is kept as .eml files
on disk instead of leaving the machine.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage = field(init=False)

    def __post_init__(self) -> None:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.message = parsed

    def __repr__(self) -> str:
        return f"Received(to={len(self.rcpt_tos)} recipients, {len(self.raw)} bytes)"


class FakeSmtp:
    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, save_dir: Path | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.save_dir = save_dir
        self.messages: list[Received] = []
        self._refusals: dict[str, tuple[int, str]] = {}
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def refuse(self, address: str, code: int, text: str) -> None:
        """Answer RCPT TO for ``address`` with ``code text`` (e.g. 550 "5.1.1 user unknown")."""
        self._refusals[address.lower()] = (code, text)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, decode_data=False, enable_SMTPUTF8=True, hostname="fake-smtp"),
            host=self.host,
            port=self.port,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(
        self,
        predicate: Callable[[FakeSmtp], Any],
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Any:
        async with asyncio.timeout(timeout), self._changed:
            return await self._changed.wait_for(lambda: predicate(self))

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        refusal = self._refusals.get(address.lower())
        if refusal is not None:
            return f"{refusal[0]} {refusal[1]}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        self.messages.append(
            Received(str(envelope.mail_from or ""), list(envelope.rcpt_tos), bytes(raw))
        )
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            # Time first so a listing reads in order; earlier demo runs' files stay.
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
            (self.save_dir / name).write_bytes(bytes(raw))
        async with self._changed:
            self._changed.notify_all()
        return "250 OK: queued"
