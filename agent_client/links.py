"""Reverse links: on the broker's word, the helper dials it again and is the SSH server there.

The broker asks over the control channel (``{"type": "link", "nonce": ...}``), so only the
broker this helper verified and logged in to can ask. Each link goes to the address the
helper's own connection reached, starts with ``ASSIST-LINK <nonce>``, and then carries the
embedded server, which accepts nothing but the broker's relay key. One link per engineer login.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from agent_client.compat import timeout
from agent_client.control import send
from assist_protocol import messages as msg
from assist_protocol.constants import LINK_PREAMBLE as PREAMBLE

#: the most links open at once; the broker opens one per engineer login
MOST = 64
DIAL_SECONDS = 60.0


class ReverseLinks:
    def __init__(
        self,
        address: tuple[str, int],
        options: asyncssh.SSHServerConnectionOptions,
        on_failed: Callable[[str, str], None] = lambda _nonce, _reason: None,
    ) -> None:
        self.address = address
        self.options = options
        #: told (nonce, reason) when a link could not be dialled, so the broker stops waiting
        self.on_failed = on_failed
        #: set when the helper lost the broker: shells on the links are parked, not hung up
        self.dropped = False
        self._conns: set[asyncssh.SSHServerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def dial(self, nonce: str) -> None:
        if self.dropped:
            return  # the broker is gone: nobody waits for it
        if len(self._tasks) + len(self) >= MOST:
            self.on_failed(nonce, f"this helper keeps at most {MOST} links open")
            return
        task = asyncio.get_running_loop().create_task(self._dial(nonce))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial(self, nonce: str) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.address
        sock: socket.socket | None = None
        try:
            async with timeout(DIAL_SECONDS):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, kind, proto, _, address = infos[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
                await loop.sock_sendall(sock, PREAMBLE + nonce.encode("ascii") + b"\n")
                conn = await asyncssh.run_server(sock, options=self.options)
        except (OSError, asyncssh.Error, TimeoutError, UnicodeError) as exc:
            if sock is not None:
                sock.close()
            if not self.dropped:
                self.on_failed(nonce, str(exc) or type(exc).__name__)
            return
        except BaseException:  # cancelled: the helper is hanging up
            if sock is not None:
                sock.close()
            raise
        self._prune()
        self._conns.add(conn)
        if self.dropped:
            conn.close()

    def close(self, dropped: bool = False) -> None:
        """Hang up every link; ``dropped`` when the broker was lost rather than said goodbye."""
        self.dropped = self.dropped or dropped
        for task in self._tasks:
            task.cancel()
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._conns.clear()

    def _prune(self) -> None:
        self._conns = {c for c in self._conns if not c.is_closed()}

    def __len__(self) -> int:
        self._prune()
        return len(self._conns)


def refuse_forwarded(_orig_host: str, _orig_port: int) -> Any:
    """With reverse links, the helper's forward only says it is ready: nothing comes through."""
    raise asyncssh.ChannelOpenError(
        asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "this helper takes reverse links only"
    )


@dataclass
class Link:
    """One connection to the broker with its control channel and the helper's forward."""

    conn: asyncssh.SSHClientConnection
    writer: asyncssh.SSHWriter[str]
    reader: asyncssh.SSHReader[str]
    listener: asyncssh.SSHAcceptor | asyncssh.SSHListener | None = None
    reverse: ReverseLinks | None = None

    def close(self, dropped: bool = False) -> None:
        if self.reverse is not None:
            self.reverse.close(dropped)
        if self.listener is not None:
            self.listener.close()
        self.conn.close()

    def dial(self, nonce: str) -> None:
        if self.reverse is not None:
            self.reverse.dial(nonce)

    def _report_failed(self, nonce: str, reason: str) -> None:
        # the broker may be gone already: then nobody waits for the answer
        send(self.writer, msg.LinkFailed(nonce=nonce, reason=reason[:200]))

    def dropped(self) -> bool:
        return self.reverse is not None and self.reverse.dropped

    async def serve(
        self, kind: str, server: Callable[[], asyncssh.SSHServer], options: dict[str, Any]
    ) -> None:
        """Make the embedded server reachable the ``kind`` of way the broker said."""
        if kind == "reverse":
            peer = self.conn.get_extra_info("peername")
            if not peer:  # asyncssh forgets the address once the connection is gone
                raise asyncssh.ConnectionLost("the connection to the broker was lost")
            self.reverse = ReverseLinks(
                (str(peer[0]), int(peer[1])),
                asyncssh.SSHServerConnectionOptions(server_factory=server, **options),
                self._report_failed,
            )
            self.listener = await self.conn.create_server(refuse_forwarded, "session", 22)
            return
        self.listener = await asyncssh.listen(
            tunnel=self.conn, host="session", port=22, server_factory=server, **options
        )
