"""A loopback TCP proxy whose network can be cut: the test's stand-in for a dropped Wi-Fi."""

from __future__ import annotations

import asyncio
import contextlib


class CuttableProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``. ``down()`` aborts every
    connection and refuses new ones until ``up()``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.is_up = True
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        #: the client-facing side of each connection -> its server-facing side
        self._clients: dict[asyncio.StreamWriter, asyncio.StreamWriter] = {}
        #: server-facing sides left open and silent after their client was cut
        self._silent: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_up:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        self._clients[writer] = up_writer
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._tasks.difference_update(pipes)
        self._writers -= {writer, up_writer}
        self._clients.pop(writer, None)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if writer not in self._silent:
                writer.transport.abort()

    def down(self) -> None:
        """Cut every connection at once (both ends see a reset) and refuse new ones."""
        self.is_up = False
        for writer in list(self._writers):
            writer.transport.abort()

    def cut_client_side(self) -> None:
        """Only the client notices: its side is reset, while the server's side stays open
        and silent (as when a laptop changes networks). New connections are let through."""
        for writer, upstream in list(self._clients.items()):
            self._silent.add(upstream)
            writer.transport.abort()

    def freeze(self) -> None:
        """The network goes silent: nothing is forwarded either way, nothing is closed."""
        for writer in list(self._writers):
            writer.transport.pause_reading()

    def up(self) -> None:
        self.is_up = True

    async def close(self) -> None:
        self.down()
        for writer in self._silent:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
