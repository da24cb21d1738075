from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import redis

from hub.embedded_redis import EmbeddedRedis
from hub.errors import ConfigError


@pytest.fixture
def short_dir():  # type: ignore[no-untyped-def]
    path = Path(tempfile.mkdtemp(prefix="hube"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_starts_a_real_server_on_a_unix_socket_and_stops_it(short_dir: Path) -> None:
    embedded = EmbeddedRedis(short_dir)
    with embedded as url:
        assert url.startswith("unix://")
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.info("server")["redis_version"].startswith("6.")
        client.close()
        # A second hub process on the machine reuses it rather than starting another.
        second = EmbeddedRedis(short_dir)
        assert second.start() == url and not second.owned
    assert not embedded.socket.exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()


def test_socket_path_too_long_is_a_config_error(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    with pytest.raises(ConfigError, match="too long"):
        EmbeddedRedis(deep).start()
