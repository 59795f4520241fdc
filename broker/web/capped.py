"""The HTTP listener with a cap on open connections, per address and in all.

aiohttp accepts every connection it is offered. Idle ones cost a descriptor each until the
header timeout closes them, and the broker's SSH port shares the process's descriptors: 1,100
idle HTTP connections under a 1,024-descriptor limit made SSH stop answering. Each accepted
connection is counted here before aiohttp sees it; one over a cap is closed at once.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class ConnectionCaps:
    per_address: int
    total: int
    #: told why each connection over a cap was closed (the broker's metrics)
    refused: Callable[[str], None] = lambda _reason: None
    open: Counter[str] = field(default_factory=Counter)

    def admit(self, address: str) -> bool:
        if self.open[address] >= self.per_address:
            self.refused("http_per_address")
            return False
        if self.open.total() >= self.total:
            self.refused("http_total")
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


class _Gate(asyncio.Protocol):
    """Admits a connection (or closes it), then hands every call to aiohttp's handler."""

    def __init__(self, caps: ConnectionCaps, make: Callable[[], Any]) -> None:
        self.caps = caps
        self.make = make
        self.inner: Any = None
        self.address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        if not self.caps.admit(self.address):
            transport.close()
            return
        self.inner = self.make()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.caps.release(self.address)
            self.inner.connection_lost(exc)


class CappedSite(web.SockSite):
    """:class:`aiohttp.web.SockSite` whose connections pass :class:`ConnectionCaps`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        caps: ConnectionCaps,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, sock, ssl_context=ssl_context)
        self.caps = caps
        self._listening = sock

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Gate(self.caps, server),
            sock=self._listening,
            ssl=self._ssl_context,
            backlog=self._backlog,
        )
