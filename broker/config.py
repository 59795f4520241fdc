"""Settings: one frozen object, built once.

Precedence, lowest first: built-in defaults < the settings file (TOML) < ``ASSIST_*`` environment
variables < command-line flags. This is the only module that reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assist_protocol.constants import DEFAULT_SSH_PORT
from broker.errors import ConfigError

ENV_PREFIX = "ASSIST_"


def parse_hostport(text: str, *, what: str) -> tuple[str, int]:
    """``"127.0.0.1:2222"`` / ``"[::1]:2222"`` -> ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"{what} must look like HOST:PORT, got {text!r}")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ConfigError(f"{what}: port {number} is out of range")
    return host.strip("[]"), number


def parse_duration(text: str | int | float, *, what: str) -> float:
    """``"10m"``, ``"90s"``, ``"2h"``, ``"1d"`` or a number of seconds -> seconds."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = text.strip().lower()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        scale = units.get(raw[-1:], None)
        number = raw[:-1] if scale else raw
        try:
            seconds = float(number) * (scale or 1)
        except ValueError:
            raise ConfigError(
                f"{what} must be a duration such as 90s, 10m or 2h, got {text!r}"
            ) from None
    if seconds <= 0:
        raise ConfigError(f"{what} must be positive, got {text!r}")
    return seconds


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int, *, what: str) -> int:
    """``"512M"``, ``"2G"``, ``"64KiB"`` or a number of bytes -> bytes (binary units)."""
    if isinstance(text, int):
        size = text
    else:
        raw = text.strip().lower().removesuffix("b").removesuffix("i")
        number, unit = (raw[:-1], raw[-1]) if raw[-1:] in _SIZE_UNITS else (raw, "")
        try:
            size = int(float(number) * _SIZE_UNITS[unit])
        except ValueError:
            raise ConfigError(
                f"{what} must be a size such as 512M, 2G or a number of bytes, got {text!r}"
            ) from None
    if size < 0:
        raise ConfigError(f"{what} must not be negative, got {text!r}")
    return size


@dataclass(frozen=True)
class Settings:
    """Everything the broker can be told. Build with :func:`load_settings`."""

    data_dir: Path = Path("var")
    ssh_host: str = "127.0.0.1"
    ssh_port: int = DEFAULT_SSH_PORT
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    #: address customers and engineers use to reach the broker, if not the listen address
    public_host: str | None = None
    database_url: str | None = None
    code_ttl: float = 600.0
    default_scope: str = "shell,exec"
    #: wrong codes allowed per source address within ``code_fail_window`` seconds
    code_fail_per_source: int = 5
    #: wrong codes (and passwords) allowed per IPv4 /24 within ``code_fail_window`` seconds
    #: (an address counts against its /32 and /24; an IPv6 address against its /64)
    code_fail_per_prefix: int = 20
    #: wrong codes allowed from all sources together within ``code_fail_window`` seconds
    code_fail_global: int = 200
    code_fail_window: float = 300.0
    keepalive_interval: float = 15.0
    #: a connection that has not logged in by then is dropped
    login_timeout: float = 60.0
    #: connections not logged in yet, per source address and in all; more are closed at once
    ssh_unauth_per_address: int = 32
    ssh_unauth_total: int = 1000
    #: open HTTP connections per address and in all (at most a quarter of the open files)
    http_connections_per_address: int = 64
    http_connections_total: int = 1000
    #: distinct public keys one SSH connection may offer before it is disconnected
    ssh_max_keys: int = 10
    #: how the broker reaches a helper's embedded server: ``reverse`` (the helper dials a second
    #: connection and is its SSH server; one encryption layer) or ``nested`` (an SSH connection
    #: inside a channel of the helper's own; two layers, measured slower by python -m bench.hops)
    helper_link: str = "reverse"
    #: recordings of shell and exec channels (default DATA_DIR/recordings)
    recordings_dir: Path | None = None
    #: keep what engineers type in recordings (else only output, and the audit says so)
    record_input: bool = True
    #: bytes of a channel's output (and of a PTY's input) kept in its recording; beyond, only
    #: counted and hashed
    recording_cap: int = 16 * 1024 * 1024
    #: bytes of a non-PTY input stream (an upload piped through a command) kept; all is hashed
    recording_input_cap: int = 1024 * 1024
    #: bytes kept by all the recordings of one session together; beyond, only counted and hashed
    recording_session_cap: int = 256 * 1024 * 1024
    #: with less free space than this in the recordings folder, no recorded channel opens and
    #: recorded sessions end (fail closed before a write fails); 0 turns the check off
    recordings_min_free: int = 256 * 1024 * 1024
    #: the longest a session may last; Severity 1 and 2 tickets get ``session_max_severe``
    session_max: float = 2 * 3600.0
    session_max_severe: float = 8 * 3600.0
    #: a session with no engineer traffic for this long ends
    session_idle: float = 30 * 60.0
    #: the customer is warned this long before the time limit
    session_warn_before: float = 5 * 60.0
    #: how long a session waits for its helper to come back after a network drop
    session_grace: float = 2 * 60.0
    #: HTTPS for the API and web UI: a PEM certificate (chain) and its key (both or neither)
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    #: the longest an audit event may wait for a signed checkpoint; audit verify fails beyond
    checkpoint_window: float = 60.0
    #: how often the broker looks at the chain head and signs it if it moved
    checkpoint_interval: float = 5.0
    #: optional: each new checkpoint is also POSTed (JSON) to this URL, outside the broker
    checkpoint_post_url: str | None = None
    #: when set, /metrics answers only requests with ``Authorization: Bearer <metrics_token>``
    #: (unset: /metrics is open to whoever reaches the HTTP port, like /healthz)
    metrics_token: str | None = None
    #: seconds a client may take to send a request's headers (a slow client is cut off)
    http_header_timeout: float = 15.0
    #: seconds a client may take to send a request's body
    http_body_timeout: float = 30.0
    log_level: str = "info"
    log_format: str = "auto"  # auto | json | console
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def recordings(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    @property
    def advertised_host(self) -> str:
        if self.public_host:
            return self.public_host
        if self.ssh_host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming, not binding
            return "BROKER-HOST"
        return self.ssh_host


HELPER_LINKS = ("reverse", "nested")
SIZES = ("recording_cap", "recording_input_cap", "recording_session_cap", "recordings_min_free")

_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "extra"}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    if name in ("data_dir", "recordings_dir", "http_tls_cert", "http_tls_key"):
        return Path(value)
    if name == "helper_link":
        if value not in HELPER_LINKS:
            raise ConfigError(f"helper_link must be reverse or nested, got {value!r}")
        return str(value)
    if name == "record_input":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigError(f"record_input must be true or false, got {value!r}")
        return text in ("1", "true", "yes", "on")
    if name in SIZES:
        return parse_size(value, what=name)
    if name in (
        "code_ttl",
        "code_fail_window",
        "keepalive_interval",
        "login_timeout",
        "checkpoint_window",
        "checkpoint_interval",
        "http_header_timeout",
        "http_body_timeout",
    ) or name.startswith("session_"):
        return parse_duration(value, what=name)
    if "int" in str(kind) and "str" not in str(kind):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    return str(value) if value is not None else None


def _apply(values: dict[str, Any], source: Mapping[str, Any], origin: str) -> None:
    for key, value in source.items():
        name = key.replace("-", "_").lower()
        if name == "ssh_listen":
            values["ssh_host"], values["ssh_port"] = parse_hostport(str(value), what=key)
        elif name == "http_listen":
            values["http_host"], values["http_port"] = parse_hostport(str(value), what=key)
        elif name in _FIELDS:
            values[name] = _coerce(name, value)
        else:
            raise ConfigError(f"unknown setting {key!r} in {origin}")


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings: defaults < file < environment < flags (``None`` flags are ignored)."""
    env = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    values: dict[str, Any] = {}

    data_dir = Path(flags.get("data_dir") or env.get(ENV_PREFIX + "DATA_DIR") or "var")
    config_file = flags.get("config") or env.get(ENV_PREFIX + "CONFIG")
    path = Path(config_file) if config_file else data_dir / "broker.toml"
    extra: dict[str, Any] = {}
    if path.exists():
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from None
        top = {k: v for k, v in document.items() if not isinstance(v, dict)}
        extra = {k: v for k, v in document.items() if isinstance(v, dict)}
        _apply(values, top, str(path))
    elif config_file:
        raise ConfigError(f"settings file {path} does not exist")

    from_env = {
        key[len(ENV_PREFIX) :]: value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG"
    }
    _apply(values, from_env, "the environment")
    _apply(values, {k: v for k, v in flags.items() if k != "config"}, "the command line")
    values["data_dir"] = Path(values.get("data_dir", data_dir))
    return Settings(**values, extra=extra)
