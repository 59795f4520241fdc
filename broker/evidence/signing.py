"""The broker's Ed25519 audit key (``audit_ed25519_key`` in the data dir, mode 0600)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.evidence.chain import checkpoint_message
from broker.transport.keys import ensure_data_dir, write_private

KEY_FILE = "audit_ed25519_key"


class Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = key.public_key()

    @classmethod
    def load(cls, data_dir: Path) -> Signer:
        """Load the audit key, creating it on first use."""
        ensure_data_dir(data_dir)
        path = data_dir / KEY_FILE
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_private(path, pem)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return cls(key)

    def sign(self, seq: int, head: str) -> str:
        return base64.b64encode(self._key.sign(checkpoint_message(seq, head))).decode()

    @property
    def public_pem(self) -> str:
        return public_pem(self.public)

    @property
    def key_id(self) -> str:
        return key_id(self.public)


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def load_public(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def valid(public: Ed25519PublicKey, seq: int, head: str, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature), checkpoint_message(seq, head))
    except (InvalidSignature, ValueError):
        return False
    return True
