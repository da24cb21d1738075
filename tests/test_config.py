"""Settings parse from the environment; each bad value is one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hub.config import Settings, redact_url
from hub.crypto import KeyRing
from hub.errors import ConfigError
from tests.conftest import hub_env


def test_defaults_are_embedded(tmp_path: Path) -> None:
    s = Settings.from_env({"HUB_VAR_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path}/hub.db"
    assert s.redis_url is None and s.keys is None
    assert s.public_url == "http://127.0.0.1:8080"


def test_postgres_url_gets_the_async_driver() -> None:
    s = Settings.from_env({"HUB_DATABASE_URL": "postgresql://hub:pw@db.internal:5432/hub"})
    assert s.database_url == "postgresql+asyncpg://hub:pw@db.internal:5432/hub"
    assert not s.is_sqlite


def test_public_url_is_configured_not_guessed() -> None:
    s = Settings.from_env({"HUB_PUBLIC_URL": "https://hub.clinic.example.org/"})
    assert s.public_url == "https://hub.clinic.example.org"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"HUB_KEYS": "k1:short"}, "HUB_KEYS"),
        ({"HUB_DATABASE_URL": "mysql://db/hub"}, "HUB_DATABASE_URL"),
        ({"HUB_DATABASE_URL": "postgresql://db.internal"}, "HUB_DATABASE_URL"),
        ({"HUB_REDIS_URL": "http://cache:6379"}, "HUB_REDIS_URL"),
        ({"HUB_PORT": "eighty"}, "HUB_PORT"),
        ({"HUB_PUBLIC_URL": "hub.clinic.org"}, "HUB_PUBLIC_URL"),
        ({"HUB_SMTP_URL": "imap://mail"}, "HUB_SMTP_URL"),
        ({"HUB_DEFAULT_REGION": "XX"}, "HUB_DEFAULT_REGION"),
        ({"HUB_TRUSTED_PROXIES": "10.0.0.5, nginx"}, "HUB_TRUSTED_PROXIES"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")
    assert "expected" in str(info.value)


def test_trusted_proxies_are_addresses_or_networks() -> None:
    settings = Settings.from_env({"HUB_TRUSTED_PROXIES": "10.0.0.5, 10.0.1.0/24,::1"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.5/32", "10.0.1.0/24", "::1/128"]
    assert Settings.from_env({}).trusted_proxies == ()


def test_redact_url_hides_passwords() -> None:
    assert redact_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert "s3cret" not in redact_url("postgresql+asyncpg://hub:s3cret@db/hub")


def test_dev_key_ring_is_generated_once_and_kept(tmp_path: Path) -> None:
    s = Settings.from_env({"HUB_VAR_DIR": str(tmp_path)})
    first = s.key_ring()
    assert (tmp_path / "dev-keys.txt").stat().st_mode & 0o777 == 0o600
    assert s.key_ring().to_spec() == first.to_spec()


def _hub(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        env=hub_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env", "variable", "fragment"),
    [
        (["migrate"], {"HUB_KEYS": "index:abc,k1:def"}, "HUB_KEYS", "malformed"),
        (["migrate"], {"HUB_KEYS": "not a key ring"}, "HUB_KEYS", "malformed"),
        (
            ["migrate"],
            {"HUB_DATABASE_URL": "mysql://db.internal/hub"},
            "HUB_DATABASE_URL",
            "unknown database scheme 'mysql'",
        ),
        (
            ["migrate"],
            {"HUB_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/hub"},
            "HUB_DATABASE_URL",
            "cannot connect",
        ),
        (
            ["serve"],
            {"HUB_REDIS_URL": "redis://127.0.0.1:1/0"},
            "HUB_REDIS_URL",
            "cannot reach Redis at redis://127.0.0.1:1/0",
        ),
        (
            ["worker"],
            {"HUB_REDIS_URL": "redis://:pw@127.0.0.1:1/0"},
            "HUB_REDIS_URL",
            "redis://:***@127.0.0.1:1/0",
        ),
        (["serve"], {"HUB_PORT": "99999"}, "HUB_PORT", "not a port number"),
    ],
    ids=[
        "keys-short",
        "keys-garbage",
        "db-scheme",
        "db-unreachable",
        "redis-unreachable",
        "redis-password-hidden",
        "port",
    ],
)
def test_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], variable: str, fragment: str
) -> None:
    env = {"HUB_VAR_DIR": str(tmp_path / "var"), "HUB_KEYS": KeyRing.generate().to_spec(), **env}
    if args != ["migrate"]:
        assert (
            _hub(
                ["migrate"],
                {k: v for k, v in env.items() if "REDIS" not in k and k != "HUB_PORT"},
                tmp_path,
            ).returncode
            == 0
        )
    done = _hub(args, env, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"hub: {variable}: "), lines[0]
    assert fragment in lines[0]
    assert "expected" in lines[0]
    assert "Traceback" not in done.stderr and "pw@" not in done.stderr


@pytest.mark.slow
def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    env = {"HUB_VAR_DIR": str(tmp_path / "var"), "HUB_KEYS": KeyRing.generate().to_spec()}
    done = _hub(["serve"], env, tmp_path)
    assert done.returncode == 2
    assert "run `hub migrate` first" in done.stderr
