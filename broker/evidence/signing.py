"""The broker's Ed25519 audit key (``audit_ed25519_key`` in the data dir, mode 0600).

It signs checkpoints and bundle manifests in OpenSSH's SSHSIG format (``ssh-keygen -Y verify``
checks them); :mod:`broker.evidence.sshsig` checks them without asyncssh. Older checkpoints carry
a raw Ed25519 signature (:func:`valid`)."""

from __future__ import annotations

import base64
from pathlib import Path

import asyncssh
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.evidence import sshsig
from broker.keys import ensure_data_dir, write_private
from broker.store.chain import checkpoint_message

KEY_FILE = "audit_ed25519_key"


class Signer:
    def __init__(self, key: Ed25519PrivateKey, pem: bytes, data_dir: Path) -> None:
        self._key = key
        #: where the key lives, and with it the checkpoint log
        self.data_dir = data_dir
        self._ssh_key = asyncssh.import_private_key(pem)
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
        pem = path.read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return cls(key, pem, data_dir)

    def sign(self, seq: int, head: str) -> str:
        """A v1 signature (kept for tests of older databases)."""
        return base64.b64encode(self._key.sign(checkpoint_message(seq, head))).decode()

    def sshsig(self, message: bytes, namespace: str) -> str:
        """An armored SSHSIG of ``message`` (``ssh-keygen -Y verify -n NAMESPACE`` checks it)."""
        signed = asyncssh.create_sshsig(self._ssh_key, message, namespace=namespace)
        return signed.decode()

    @property
    def openssh_public(self) -> str:
        return sshsig.openssh_line(self.public)

    @property
    def allowed_signers(self) -> str:
        """The line for an auditor's allowed_signers file."""
        return sshsig.allowed_signers_line(self.public)

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
    """The key's fingerprint as OpenSSH prints it (``ssh-keygen -lf``)."""
    return sshsig.blob_fingerprint(sshsig.public_blob(key))


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
