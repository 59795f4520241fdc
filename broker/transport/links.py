"""Reverse links: the helper's second kind of TCP connection, on which it is the SSH server.

When an engineer needs the customer's machine, the broker sends the helper a one-time nonce
over its authenticated control channel; the helper dials the broker's SSH port again, writes
``ASSIST-LINK <nonce>`` and a newline, and then runs its embedded SSH server on that socket.
The broker is the SSH client of that connection (``nested.connect_link``): it pins the host
key the helper sent at consent, and logs in with its relay key, which is all the helper's
server accepts.

One encryption layer on the broker-helper hop instead of two (the nested design carries the
connection inside a channel of the helper's own): ``python -m bench.hops`` measured that hop's
one-byte round trip 1.6x faster (189 against 311 us) and its bulk 2.8x faster (617 against
222 MB/s) on a quiet 2-core machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import socket

from assist_protocol.constants import LINK_MAX_LINE as MAX_LINE
from assist_protocol.constants import LINK_PREAMBLE as PREAMBLE

__all__ = ["MAX_LINE", "PREAMBLE", "LinkFailed", "LinkWaiters"]


class LinkFailed(Exception):
    """The helper said it could not dial a link; the message is its reason (its own words)."""


class LinkWaiters:
    """Nonces handed to helpers, each waiting for the one socket that presents it.

    Only SHA-256 digests of the nonces are kept, and a socket is matched by the digest of what
    it presents, so a lookup reveals nothing about a nonce; each is single-use."""

    def __init__(self) -> None:
        self._waiting: dict[bytes, asyncio.Future[socket.socket]] = {}

    def expect(self) -> tuple[str, asyncio.Future[socket.socket]]:
        nonce = secrets.token_urlsafe(32)
        digest = hashlib.sha256(nonce.encode()).digest()
        arrived: asyncio.Future[socket.socket] = asyncio.get_running_loop().create_future()
        self._waiting[digest] = arrived
        arrived.add_done_callback(lambda _f: self._waiting.pop(digest, None))
        return nonce, arrived

    def arrived(self, nonce: bytes, sock: socket.socket) -> bool:
        """Hand ``sock`` to whoever waits for ``nonce``; False (and the caller closes the
        socket) for a nonce nobody waits for: unknown, used, or given up on."""
        waiting = self._waiting.pop(hashlib.sha256(nonce).digest(), None)
        if waiting is None or waiting.done():
            return False
        waiting.set_result(sock)
        return True

    def failed(self, nonce: str, reason: str) -> None:
        """The helper could not dial the link for ``nonce``: its waiter learns at once."""
        waiting = self._waiting.pop(hashlib.sha256(nonce.encode()).digest(), None)
        if waiting is not None and not waiting.done():
            waiting.set_exception(LinkFailed(reason))

    def __len__(self) -> int:
        return len(self._waiting)
