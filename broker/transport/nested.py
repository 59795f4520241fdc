"""The helper's one forward and the nested connections through it.

The helper asks to forward ``session:22``; the broker answers with a :class:`VirtualListener`,
which opens no port. Each engineer login then gets its own SSH client connection to the
helper's embedded server, carried as a channel of the helper's own connection: the helper's
host key (sent over the control channel at consent) is pinned, the broker's relay key logs in.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncssh

from broker.session.model import FORWARD_HOST, FORWARD_PORT
from broker.transport.context import CIPHERS


class VirtualListener(asyncssh.SSHListener):
    """Stands for the helper's forward; ``on_close`` runs when the helper cancels it."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        super().__init__()
        self._on_close = on_close

    def close(self) -> None:
        self._on_close()

    async def wait_closed(self) -> None:
        return None


async def connect_nested(
    helper: asyncssh.SSHServerConnection,
    helper_host_key: str,
    relay_key: asyncssh.SSHKey,
    username: str,
    keepalive_interval: float,
) -> asyncssh.SSHClientConnection:
    """A new connection to the helper's embedded server, as ``username`` (the engineer)."""
    return await asyncssh.connect(
        FORWARD_HOST,
        FORWARD_PORT,
        tunnel=helper,
        username=username,
        client_keys=[relay_key],
        known_hosts=([asyncssh.import_public_key(helper_host_key)], [], []),
        agent_path=None,
        config=None,
        preferred_auth="publickey",
        encryption_algs=list(CIPHERS),
        compression_algs=None,
        keepalive_interval=keepalive_interval,
    )
