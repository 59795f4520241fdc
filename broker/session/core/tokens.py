"""Resume tokens: the helper's way back after a network drop (never the code again).

A token is ``SESSION.SECRET``; only SHA-256 of the secret is kept, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable


class ResumeTokens:
    def __init__(
        self, session_id: str, new_secret: Callable[[], str] = lambda: secrets.token_urlsafe(32)
    ) -> None:
        self.session_id = session_id
        self._new_secret = new_secret
        self._digests: list[bytes] = []

    def issue(self) -> str:
        """A fresh token. Until the helper's forward is up again (:meth:`confirm`), the token
        it logged in with stays valid too: the helper may not have read the new one when the
        connection drops again."""
        secret = self._new_secret()
        self._digests = [*self._digests[:1], hashlib.sha256(secret.encode()).digest()]
        return f"{self.session_id}.{secret}"

    def confirm(self) -> None:
        """The helper is back with its forward (it asks for it only after reading the new
        token): only the newest token stays valid."""
        self._digests = self._digests[-1:]

    def valid(self, secret: str) -> bool:
        return self._match(secret) is not None

    def used(self, secret: str) -> None:
        """A resume logged in with ``secret``: the helper holds that token and no other it was
        sent, so only it stays valid until the next one. Were the token it was never seen to
        read kept instead, a second drop before the forward is up would lock the helper out
        with the only token it has."""
        digest = self._match(secret)
        if digest is not None:
            self._digests = [digest]

    def revoke(self) -> None:
        self._digests = []

    @property
    def any(self) -> bool:
        return bool(self._digests)

    def _match(self, secret: str) -> bytes | None:
        digest = hashlib.sha256(secret.encode()).digest()
        matches = [hmac.compare_digest(digest, valid) for valid in self._digests]
        return digest if any(matches) else None
