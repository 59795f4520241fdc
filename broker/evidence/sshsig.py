"""Checking OpenSSH SSHSIG signatures (``ssh-keygen -Y sign`` / ``-Y verify``) of Ed25519 keys.

The broker creates them with asyncssh; checking is written out here, small enough for an
outside auditor to compare with OpenSSH's PROTOCOL.sshsig, so that nothing but the key they
trust decides: the signature names its key and its namespace, and both must be the expected
ones before the Ed25519 signature over the SSHSIG "signed data" is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAGIC = b"SSHSIG"
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
HASHES = {b"sha256": hashlib.sha256, b"sha512": hashlib.sha512}

#: what checkpoints and bundle manifests are signed for (ssh-keygen -Y ... -n NAMESPACE)
CHECKPOINT_NAMESPACE = "assist-broker-checkpoint"
BUNDLE_NAMESPACE = "assist-broker-bundle"
#: the principal auditors name in their allowed_signers file (ssh-keygen -Y verify -I ...)
PRINCIPAL = "assist-broker-audit"


@dataclass(frozen=True)
class SshSig:
    public_blob: bytes
    namespace: str
    hash_name: bytes
    signature: bytes

    @property
    def fingerprint(self) -> str:
        """The signing key as OpenSSH prints it (``ssh-keygen -lf``)."""
        return blob_fingerprint(self.public_blob)


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(data):
        raise ValueError("truncated")
    (size,) = struct.unpack(">I", data[at : at + 4])
    end = at + 4 + size
    if end > len(data):
        raise ValueError("truncated")
    return data[at + 4 : end], end


def _ssh_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def parse(armored: str) -> SshSig:
    """The parts of an armored SSHSIG; ``ValueError`` if it is not one."""
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        raise ValueError("not an SSH signature")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error:
        raise ValueError("not an SSH signature (bad base64)") from None
    if blob[:6] != MAGIC or blob[6:10] != struct.pack(">I", 1):
        raise ValueError("not an SSH signature (magic or version)")
    public, at = _string(blob, 10)
    namespace, at = _string(blob, at)
    _reserved, at = _string(blob, at)
    hash_name, at = _string(blob, at)
    signature, at = _string(blob, at)
    if at != len(blob):
        raise ValueError("not an SSH signature (trailing bytes)")
    return SshSig(public, namespace.decode("utf-8", "replace"), hash_name, signature)


def public_blob(key: Ed25519PublicKey) -> bytes:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _ssh_string(b"ssh-ed25519") + _ssh_string(raw)


def blob_fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def openssh_line(key: Ed25519PublicKey) -> str:
    """``ssh-ed25519 AAAA...``, as in an authorized_keys or allowed_signers file."""
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def allowed_signers_line(key: Ed25519PublicKey) -> str:
    namespaces = f"{CHECKPOINT_NAMESPACE},{BUNDLE_NAMESPACE}"
    return f'{PRINCIPAL} namespaces="{namespaces}" {openssh_line(key)}'


def problem(message: bytes, armored: str, namespace: str, trusted: Ed25519PublicKey) -> str | None:
    """Why ``armored`` is not ``trusted``'s signature of ``message`` for ``namespace``; ``None``
    when it is."""
    try:
        sig = parse(armored)
    except ValueError as exc:
        return str(exc)
    if sig.namespace != namespace:
        return f"it was made for {sig.namespace!r}, not {namespace!r}"
    if sig.public_blob != public_blob(trusted):
        return f"it was made by the key {sig.fingerprint}, not by the trusted key"
    hasher = HASHES.get(sig.hash_name)
    if hasher is None:
        return "it uses an unknown hash"
    try:
        algorithm, at = _string(sig.signature, 0)
        raw, at = _string(sig.signature, at)
    except ValueError:
        return "its signature blob is malformed"
    if algorithm != b"ssh-ed25519" or at != len(sig.signature):
        return "its signature blob is malformed"
    signed = (
        MAGIC
        + _ssh_string(namespace.encode())
        + _ssh_string(b"")
        + _ssh_string(sig.hash_name)
        + _ssh_string(hasher(message).digest())
    )
    try:
        trusted.verify(raw, signed)
    except InvalidSignature:
        return "the signature does not match (the signed text was changed)"
    return None
