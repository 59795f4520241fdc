"""The broker's client connections to the helper's embedded server, one per engineer login.

The helper asks to forward ``session:22``; the broker answers with a :class:`VirtualListener`,
which opens no port: the forward says the helper is ready, and its cancellation that the
customer ended. The connections themselves come two ways (``settings.helper_link``):

- ``reverse`` (the default): over a reverse link the helper dials for it (see ``links``);
- ``nested``: carried as a channel of the helper's own connection, so two encryption layers.

Either way the helper's host key (sent over the control channel at consent) is pinned and the
broker's relay key logs in.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import asyncssh
import structlog

from assist_protocol import messages as msg
from assist_protocol.constants import FORWARD_HOST, FORWARD_PORT
from broker.errors import BrokerError
from broker.transport.context import CIPHERS, Context
from broker.transport.links import LinkFailed

log = structlog.get_logger(__name__)


class VirtualListener(asyncssh.SSHListener):
    """Stands for the helper's forward; ``on_close`` runs when the helper cancels it."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        super().__init__()
        self._on_close = on_close

    def close(self) -> None:
        self._on_close()

    async def wait_closed(self) -> None:
        return None


def client_options(
    helper_host_key: str, relay_key: asyncssh.SSHKey, username: str, keepalive_interval: float
) -> asyncssh.SSHClientConnectionOptions:
    """Log in as ``username`` (the engineer) with the relay key, to the pinned host key only."""
    return asyncssh.SSHClientConnectionOptions(
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


async def connect_nested(
    helper: asyncssh.SSHServerConnection, options: asyncssh.SSHClientConnectionOptions
) -> asyncssh.SSHClientConnection:
    """A connection carried as a channel of the helper's own connection (two layers)."""
    return await asyncssh.connect(
        FORWARD_HOST, FORWARD_PORT, tunnel=helper, options=options, config=None
    )


async def connect_link(
    sock: socket.socket, options: asyncssh.SSHClientConnectionOptions, timeout: float
) -> asyncssh.SSHClientConnection:
    """A connection over a reverse link the helper dialled (one layer)."""
    return await asyncssh.run_client(sock, options=options, config=None, connect_timeout=timeout)


#: how long a helper may take to dial a reverse link it was asked for
LINK_TIMEOUT = 60.0
LINK_LATE = (
    "The customer's helper did not connect back to the broker in time; it may have stopped. "
    "Try again in a moment."
)
GONE = "the helper's connection is gone"
LINK_GONE = "The customer's computer could not be reached; the helper may have stopped."
LINK_FAILED = (
    "The customer's helper could not open a second connection to the broker; their network "
    "may let only one through. An admin can set helper_link = nested on the broker."
)


class HelperLinks:
    """One helper's embedded-server connections, opened the configured way; when the helper's
    own connection goes, :meth:`close` takes every one of them along."""

    def __init__(
        self,
        ctx: Context,
        helper: asyncssh.SSHServerConnection,
        send: Callable[[msg.Message], None],
    ) -> None:
        self.ctx = ctx
        self.helper = helper
        self._send = send
        self._open: set[asyncssh.SSHClientConnection] = set()
        #: links asked for and not yet arrived: failed at once when the helper goes
        self._asked: set[str] = set()
        self.closed = False

    async def open(
        self, kind: str, helper_host_key: str, username: str
    ) -> asyncssh.SSHClientConnection:
        """A connection to the helper's server, the ``kind`` of way agreed at consent."""
        options = client_options(
            helper_host_key, self.ctx.keys.relay_key, username, self.ctx.settings.keepalive_interval
        )
        if kind != "reverse":
            return await connect_nested(self.helper, options)
        if self.closed:
            raise BrokerError(LINK_GONE, code="link_failed")
        nonce, arrived = self.ctx.links.expect()
        self._asked.add(nonce)
        self._send(msg.Link(nonce))
        try:
            sock = await asyncio.wait_for(arrived, LINK_TIMEOUT)
        except TimeoutError:
            raise BrokerError(LINK_LATE, code="link_failed") from None
        except LinkFailed as exc:
            log.warning("link_failed", reason=str(exc)[:200])
            gone = str(exc) == GONE
            raise BrokerError(LINK_GONE if gone else LINK_FAILED, code="link_failed") from None
        finally:
            self._asked.discard(nonce)
        try:
            conn = await connect_link(sock, options, LINK_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        self._open = {c for c in self._open if not c.is_closed()}
        self._open.add(conn)
        return conn

    def close(self, lost: bool = False) -> None:
        """Hang up every link. ``lost`` when the helper's own connection went without a word:
        the helper then parks its shells (a clean hang-up would end them)."""
        self.closed = True
        for nonce in list(self._asked):
            self.ctx.links.failed(nonce, GONE)
        for conn in self._open:
            if lost:
                conn.disconnect(asyncssh.DISC_CONNECTION_LOST, "the helper's connection was lost")
            else:
                conn.close()
        self._open.clear()
