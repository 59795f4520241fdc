"""Settings: defaults < file < ASSIST_* environment < flags; bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import load_settings, parse_duration, parse_size
from broker.errors import ConfigError


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path)}, environ={})
    assert (settings.ssh_host, settings.ssh_port) == ("127.0.0.1", 2222)
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert settings.code_ttl == 600
    assert settings.db_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'broker.db'}"


def test_precedence(tmp_path: Path) -> None:
    (tmp_path / "broker.toml").write_text(
        'ssh_listen = "0.0.0.0:2000"\ncode_ttl = "5m"\nlog_level = "debug"\n[smtp]\nhost = "x"\n'
    )
    env = {"ASSIST_DATA_DIR": str(tmp_path), "ASSIST_CODE_TTL": "90s", "ASSIST_SSH_PORT": "2100"}
    settings = load_settings({"ssh_listen": "127.0.0.2:2300"}, environ=env)
    assert settings.data_dir == tmp_path
    assert settings.code_ttl == 90  # env beats file
    assert settings.log_level == "debug"  # file beats default
    assert (settings.ssh_host, settings.ssh_port) == ("127.0.0.2", 2300)  # flag beats all
    assert settings.extra["smtp"] == {"host": "x"}


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"ssh_listen": "nohost"}, {}, "must look like HOST:PORT"),
        ({"ssh_listen": "h:99999"}, {}, "out of range"),
        ({}, {"ASSIST_CODE_TTL": "soon"}, "must be a duration"),
        ({}, {"ASSIST_SSH_PORT": "x"}, "must be a whole number"),
        ({}, {"ASSIST_NONSENSE": "1"}, "unknown setting 'NONSENSE' in the environment"),
        ({"config": "/nonexistent/broker.toml"}, {}, "does not exist"),
    ],
)
def test_bad_settings_are_named(flags: dict[str, str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(flags, environ=env)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("45", 45), (3.5, 3.5)],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text, what="x") == seconds


def test_recording_limits_take_sizes(tmp_path: Path) -> None:
    (tmp_path / "broker.toml").write_text('recording_session_cap = "1G"\nrecording_cap = 4096\n')
    env = {"ASSIST_DATA_DIR": str(tmp_path), "ASSIST_RECORDINGS_MIN_FREE": "512M"}
    settings = load_settings({}, environ=env)
    assert settings.recordings_min_free == 512 * 1024 * 1024
    assert settings.recording_session_cap == 1024**3
    assert settings.recording_cap == 4096
    defaults = load_settings({"data_dir": str(tmp_path / "none")}, environ={})
    assert defaults.recordings_min_free == 256 * 1024 * 1024


@pytest.mark.parametrize(
    ("text", "size"),
    [("512M", 512 << 20), ("2G", 2 << 30), ("2GiB", 2 << 30), ("64k", 64 << 10), ("0", 0)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text, what="x") == size


def test_bad_size_is_named() -> None:
    with pytest.raises(ConfigError, match="recordings_min_free must be a size such as 512M"):
        load_settings({}, environ={"ASSIST_RECORDINGS_MIN_FREE": "lots"})
