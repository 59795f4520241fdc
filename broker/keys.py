"""The broker's keys, created on first run under the data dir with mode 0600.

- ``ssh_host_ed25519_key``: the broker's SSH host key (customers pin its fingerprint);
- ``relay_ed25519_key``: the client key of the broker's nested connections to helpers;
- ``code_hmac.key``: the secret of the consent-code hashes.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # asyncssh is imported where it is used: the command line mostly needs none
    import asyncssh


def ensure_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 atomically; never widen the mode of an existing file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _ssh_key(path: Path) -> asyncssh.SSHKey:
    import asyncssh

    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"assist-broker {path.name}")
        write_private(path, key.export_private_key())
    return asyncssh.read_private_key(path)


def _secret(path: Path) -> bytes:
    if not path.exists():
        write_private(path, secrets.token_bytes(32).hex().encode())
    return bytes.fromhex(path.read_text().strip())


@dataclass(frozen=True)
class BrokerKeys:
    host_key: asyncssh.SSHKey
    relay_key: asyncssh.SSHKey
    code_key: bytes

    @property
    def host_fingerprint(self) -> str:
        return str(self.host_key.get_fingerprint("sha256"))

    @classmethod
    def load(cls, data_dir: Path) -> BrokerKeys:
        """Load every key, creating what is missing."""
        ensure_data_dir(data_dir)
        return cls(
            host_key=_ssh_key(data_dir / "ssh_host_ed25519_key"),
            relay_key=_ssh_key(data_dir / "relay_ed25519_key"),
            code_key=_secret(data_dir / "code_hmac.key"),
        )


SEAL_FILE = "audit_seal.key"


def load_seal_key(data_dir: Path, *, create: bool = True) -> bytes | None:
    """The secret that seals audit events (see broker.store.chain); ``None`` when it does
    not exist and ``create`` is false (verifying a store this data dir never wrote to)."""
    path = data_dir / SEAL_FILE
    if not create and not path.exists():
        return None
    ensure_data_dir(data_dir)
    return _secret(path)


def load_code_key(data_dir: Path) -> bytes:
    """Only the code secret: what the command line needs to issue a code."""
    ensure_data_dir(data_dir)
    return _secret(data_dir / "code_hmac.key")


def fingerprint_of(public_key_line: str) -> tuple[str, str, str | None]:
    """Validate an OpenSSH public key line -> ``(fingerprint, normalized line, comment)``."""
    import asyncssh

    key = asyncssh.import_public_key(public_key_line.strip())
    comment = key.get_comment()
    line = key.export_public_key("openssh").decode().strip()
    return str(key.get_fingerprint("sha256")), line, comment


def host_public_key(data_dir: Path) -> str | None:
    """The broker's host key as an OpenSSH public key line (``None``: never created)."""
    import asyncssh

    path = data_dir / "ssh_host_ed25519_key"
    if not path.exists():
        return None
    return asyncssh.read_private_key(path).export_public_key().decode().strip()
