"""Settings from the environment (names fixed by the interface contract).

Parsing is pure: ``Settings.from_env`` reads a mapping and raises ``ConfigError`` with a one-line
message naming the variable; the CLI turns that into exit status 2.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import phonenumbers

from hub.contact import DEFAULT_REGION
from hub.crypto import KeyRing, KeyRingError
from hub.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
"""Address `hub serve` binds when HUB_HOST is unset (loopback: expose through a proxy)."""
DEFAULT_PORT = 8080
"""Port `hub serve` listens on when HUB_PORT is unset."""
DEFAULT_INBOUND_SMTP_PORT = 2525
"""Port of the built-in SMTP receiver when HUB_INBOUND_SMTP_PORT is unset."""
DEFAULT_VAR_DIR = "var"
"""Directory (relative to the working directory) for the SQLite file, embedded Redis, dev keys."""

DEFAULT_SEND_RETRY_BASE_S = 30.0
"""First retry of a transiently failed send waits this long; each next one four times longer."""

DEFAULT_JOURNEY_LEASE_S = 300.0
"""How long a dispatch batch owns its claimed journey steps before another may take them."""
DEFAULT_SEND_STUCK_S = 120.0
"""A send without the provider's answer this long after its claim had its sender die."""
DEFAULT_CHAT_OFFLINE_S = 300.0
"""A staff chat reply to a patient away this long goes by their other channel, with a link."""
DEFAULT_EMAIL_MAX_BYTES = 25 * 1024 * 1024
"""Largest inbound email (SMTP receiver and webhook) accepted, attachments included."""
DEFAULT_SESSION_IDLE_MINUTES = 15.0
"""A staff session unused this long is signed out (HIPAA-style automatic logoff)."""
DEFAULT_SESSION_MAX_HOURS = 12.0
"""A staff session ends this long after sign-in however active it is (one working day)."""

DEV_KEYS_FILE = "dev-keys.txt"


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None
    keys: KeyRing | None
    public_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    var_dir: Path = field(default_factory=lambda: Path(DEFAULT_VAR_DIR))
    default_region: str = DEFAULT_REGION
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_api_base: str | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    clinic_name: str = "The clinic"
    clinic_phone: str | None = None
    sms_help_text: str | None = None
    send_retry_base_s: float = DEFAULT_SEND_RETRY_BASE_S
    journey_lease_s: float = DEFAULT_JOURNEY_LEASE_S
    send_stuck_s: float = DEFAULT_SEND_STUCK_S
    session_idle_minutes: float = DEFAULT_SESSION_IDLE_MINUTES
    session_max_hours: float = DEFAULT_SESSION_MAX_HOURS
    smtp_url: str | None = None
    email_from: str | None = None
    reply_domain: str | None = None
    inbound_smtp_port: int = DEFAULT_INBOUND_SMTP_PORT
    clinic_emails: tuple[str, ...] = ()
    """Addresses besides reply+token@HUB_REPLY_DOMAIN the SMTP receiver accepts mail for."""
    email_webhook_secret: str | None = None
    trusted_authserv_id: str | None = None
    """The authserv-id of the clinic's mail provider, whose Authentication-Results header the
    hub believes (mail from ``trusted_mail_relays`` and the inbound-mail webhook)."""
    trusted_mail_relays: tuple[IPv4Network | IPv6Network, ...] = ()
    """Relays whose mail the SMTP receiver judges by their verdict instead of checking SPF."""
    dkim_selector: str | None = None
    dkim_key_file: Path | None = None
    email_max_bytes: int = DEFAULT_EMAIL_MAX_BYTES
    chat_offline_s: float = DEFAULT_CHAT_OFFLINE_S
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    """Reverse proxies whose X-Forwarded-For names the client (sign-in throttling by address)."""
    log_level: str = "INFO"
    log_format: str = "json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value and value.strip() else None

        var_dir = Path(get("HUB_VAR_DIR") or DEFAULT_VAR_DIR)
        database_url = parse_database_url(
            get("HUB_DATABASE_URL") or f"sqlite:///{(var_dir / 'hub.db').as_posix()}"
        )
        redis_url = get("HUB_REDIS_URL")
        if redis_url is not None:
            parse_redis_url(redis_url)

        keys: KeyRing | None = None
        if (spec := get("HUB_KEYS")) is not None:
            try:
                keys = KeyRing.parse(spec)
            except KeyRingError as exc:
                raise ConfigError(
                    "HUB_KEYS",
                    f"malformed: {exc}",
                    "'index:<base64 32 bytes>,<key id>:<base64 32 bytes>,...' "
                    "(make one with `hub keys new`)",
                ) from None

        host = get("HUB_HOST") or DEFAULT_HOST
        port = _port("HUB_PORT", get("HUB_PORT"), DEFAULT_PORT)
        public_url = get("HUB_PUBLIC_URL") or f"http://{host}:{port}"
        _check_http_url("HUB_PUBLIC_URL", public_url)

        region = (get("HUB_DEFAULT_REGION") or DEFAULT_REGION).upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(
                "HUB_DEFAULT_REGION", f"unknown region {region!r}", "an ISO 3166 code such as US"
            )

        twilio_api_base = get("TWILIO_API_BASE")
        if twilio_api_base is not None:
            _check_http_url("TWILIO_API_BASE", twilio_api_base)
        smtp_url = get("HUB_SMTP_URL")
        if smtp_url is not None and urlsplit(smtp_url).scheme not in ("smtp", "smtps"):
            raise ConfigError(
                "HUB_SMTP_URL",
                f"unknown scheme {urlsplit(smtp_url).scheme!r}",
                "smtp://user:pass@host:587 (STARTTLS) or smtps://user:pass@host:465",
            )
        retry_raw = get("HUB_SEND_RETRY_BASE_SECONDS")
        try:
            send_retry_base_s = float(retry_raw) if retry_raw else DEFAULT_SEND_RETRY_BASE_S
            if not 0 < send_retry_base_s <= 3600:
                raise ValueError
        except ValueError:
            raise ConfigError(
                "HUB_SEND_RETRY_BASE_SECONDS",
                f"{retry_raw!r} is not a delay",
                "seconds between 0 and 3600, e.g. 30",
            ) from None
        idle = _positive(
            "HUB_SESSION_IDLE_MINUTES",
            get("HUB_SESSION_IDLE_MINUTES"),
            DEFAULT_SESSION_IDLE_MINUTES,
            24 * 60,
        )
        max_hours = _positive(
            "HUB_SESSION_MAX_HOURS",
            get("HUB_SESSION_MAX_HOURS"),
            DEFAULT_SESSION_MAX_HOURS,
            24 * 30,
        )
        lease = _positive(
            "HUB_JOURNEY_LEASE_SECONDS",
            get("HUB_JOURNEY_LEASE_SECONDS"),
            DEFAULT_JOURNEY_LEASE_S,
            24 * 3600,
        )
        email_from = get("HUB_EMAIL_FROM")
        dkim_selector, dkim_key_file = _dkim(get("HUB_DKIM_SELECTOR"), get("HUB_DKIM_KEY_FILE"))
        stuck = _positive(
            "HUB_SEND_STUCK_SECONDS", get("HUB_SEND_STUCK_SECONDS"), DEFAULT_SEND_STUCK_S, 24 * 3600
        )
        authserv_id = get("HUB_TRUSTED_AUTHSERV_ID")
        mail_relays = _networks("HUB_TRUSTED_MAIL_RELAYS", get("HUB_TRUSTED_MAIL_RELAYS"))
        if mail_relays and not authserv_id:
            raise ConfigError(
                "HUB_TRUSTED_MAIL_RELAYS",
                "is set without HUB_TRUSTED_AUTHSERV_ID, so the relays' verdict cannot be read",
                "also set HUB_TRUSTED_AUTHSERV_ID to the name your provider writes first in its "
                "Authentication-Results header",
            )
        log_format = (get("HUB_LOG_FORMAT") or "json").lower()
        if log_format not in ("json", "text"):
            raise ConfigError("HUB_LOG_FORMAT", f"unknown format {log_format!r}", "json or text")

        return cls(
            database_url=database_url,
            redis_url=redis_url,
            keys=keys,
            public_url=public_url.rstrip("/"),
            host=host,
            port=port,
            var_dir=var_dir,
            default_region=region,
            twilio_account_sid=get("TWILIO_ACCOUNT_SID"),
            twilio_auth_token=get("TWILIO_AUTH_TOKEN"),
            twilio_api_base=twilio_api_base,
            twilio_from_number=get("TWILIO_FROM_NUMBER"),
            twilio_messaging_service_sid=get("TWILIO_MESSAGING_SERVICE_SID"),
            clinic_name=get("HUB_CLINIC_NAME") or "The clinic",
            clinic_phone=get("HUB_CLINIC_PHONE"),
            sms_help_text=get("HUB_SMS_HELP_TEXT"),
            send_retry_base_s=send_retry_base_s,
            journey_lease_s=lease,
            send_stuck_s=stuck,
            chat_offline_s=_positive(
                "HUB_CHAT_OFFLINE_SECONDS",
                get("HUB_CHAT_OFFLINE_SECONDS"),
                DEFAULT_CHAT_OFFLINE_S,
                7 * 24 * 3600,
            ),
            session_idle_minutes=idle,
            session_max_hours=max_hours,
            smtp_url=smtp_url,
            email_from=email_from,
            reply_domain=get("HUB_REPLY_DOMAIN"),
            inbound_smtp_port=_port(
                "HUB_INBOUND_SMTP_PORT", get("HUB_INBOUND_SMTP_PORT"), DEFAULT_INBOUND_SMTP_PORT
            ),
            clinic_emails=_addresses("HUB_CLINIC_EMAILS", get("HUB_CLINIC_EMAILS"), email_from),
            email_webhook_secret=get("HUB_EMAIL_WEBHOOK_SECRET"),
            trusted_authserv_id=authserv_id,
            trusted_mail_relays=mail_relays,
            dkim_selector=dkim_selector,
            dkim_key_file=dkim_key_file,
            trusted_proxies=_networks("HUB_TRUSTED_PROXIES", get("HUB_TRUSTED_PROXIES")),
            log_level=(get("HUB_LOG_LEVEL") or "INFO").upper(),
            log_format=log_format,
        )

    @property
    def email_connected(self) -> bool:
        """Outbound email needs an SMTP server and a sender address."""
        return bool(self.smtp_url and self.email_from)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def key_ring(self) -> KeyRing:
        """The configured ring, or a development ring kept under ./var/ (with a warning)."""
        if self.keys is not None:
            return self.keys
        return load_dev_key_ring(self.var_dir)

    @property
    def clinic(self) -> dict[str, str | None]:
        """The clinic's variables for message templates ({{ clinic.name }}, {{ clinic.phone }})."""
        # Without HUB_CLINIC_PHONE, the number patients text is the natural one to call back.
        return {"name": self.clinic_name, "phone": self.clinic_phone or self.twilio_from_number}

    @property
    def help_text(self) -> str:
        """The answer to an SMS HELP (carriers require one)."""
        return self.sms_help_text or (
            f"{self.clinic_name}: reply STOP to stop texts, START to resume. "
            "In an emergency call your local emergency number."
        )

    def with_keys(self, keys: KeyRing) -> Settings:
        return replace(self, keys=keys)


def load_dev_key_ring(var_dir: Path) -> KeyRing:
    path = var_dir / DEV_KEYS_FILE
    log.warning(
        "HUB_KEYS is unset: using the development key ring in %s; "
        "set HUB_KEYS before storing any real patient data",
        path,
    )
    if path.exists():
        try:
            return KeyRing.parse(path.read_text())
        except KeyRingError as exc:
            raise ConfigError(
                "HUB_KEYS",
                f"unset, and the dev ring {path} is malformed: {exc}",
                "HUB_KEYS set, or the dev ring file removed so a new one is made",
            ) from None
    var_dir.mkdir(parents=True, exist_ok=True)
    ring = KeyRing.generate("dev1")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(ring.to_spec() + "\n")
    return ring


def parse_database_url(url: str) -> str:
    """Map a user-facing URL to the async driver URL SQLAlchemy needs."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    expected = "postgresql://user@host:5432/dbname or sqlite:///path/to/hub.db"
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        if not parts.hostname and "host=" not in parts.query:
            raise ConfigError("HUB_DATABASE_URL", "names no host", expected)
        if not parts.path.strip("/"):
            raise ConfigError("HUB_DATABASE_URL", "names no database", expected)
        return urlunsplit(parts._replace(scheme="postgresql+asyncpg"))
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        if not url.split("://", 1)[1].lstrip("/"):
            raise ConfigError("HUB_DATABASE_URL", "names no SQLite file", expected)
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    raise ConfigError(
        "HUB_DATABASE_URL", f"unknown database scheme {parts.scheme or url!r}", expected
    )


def parse_redis_url(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            "HUB_REDIS_URL",
            f"unknown scheme {scheme or url!r}",
            "redis://host:6379/0, rediss://… or unix:///path/redis.sock "
            "(or unset it to use the embedded Redis)",
        )
    return url


def redact_url(url: str) -> str:
    """The URL with any password replaced, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _port(name: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(name, f"{raw!r} is not a port number", "an integer from 1 to 65535")
    return int(raw)


def _networks(name: str, raw: str | None) -> tuple[IPv4Network | IPv6Network, ...]:
    found = []
    for value in (v.strip() for v in (raw or "").split(",")):
        if not value:
            continue
        try:
            found.append(ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(
                name, f"{value!r} is not an IP address or network", "10.0.0.5, 10.0.1.0/24"
            ) from None
    return tuple(found)


def _addresses(name: str, raw: str | None, email_from: str | None) -> tuple[str, ...]:
    from email.utils import parseaddr

    values = [v.strip() for v in (raw or "").split(",") if v.strip()]
    if not values and email_from:
        values = [email_from]
    found = []
    for value in values:
        address = parseaddr(value)[1].lower()
        if "@" not in address:
            raise ConfigError(name, f"{value!r} is not an email address", "a@b.org, c@b.org")
        found.append(address)
    return tuple(found)


def _dkim(selector: str | None, key_file: str | None) -> tuple[str | None, Path | None]:
    if not selector and not key_file:
        return None, None
    if not (selector and key_file):
        raise ConfigError(
            "HUB_DKIM_SELECTOR" if not selector else "HUB_DKIM_KEY_FILE",
            "DKIM needs both a selector and a key file",
            "set HUB_DKIM_SELECTOR and HUB_DKIM_KEY_FILE together, or neither",
        )
    path = Path(key_file)
    if not path.is_file():
        raise ConfigError("HUB_DKIM_KEY_FILE", f"{key_file!r} is not a readable file", "a PEM file")
    return selector, path


def _positive(name: str, raw: str | None, default: float, maximum: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= maximum:
        raise ConfigError(
            name, f"{raw!r} is out of range", f"a number above 0 and at most {maximum:g}"
        )
    return value


def _check_http_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(name, f"{url!r} is not an http(s) URL", "https://hub.example-clinic.org")
