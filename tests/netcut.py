"""A loopback TCP proxy whose network can be cut: the test's stand-in for a dropped Wi-Fi."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field

#: how a reverse link starts (see broker.transport.links); everything else the helper dials is SSH
LINK_PREAMBLE = b"ASSIST-LINK "


@dataclass(frozen=True)
class Trap:
    """Cut a connection the helper dials to log in (not a reverse link) part-way: once
    ``after_bytes`` went through it (both ways together), or ``after_seconds`` after it
    started, whichever comes first. ``silent``: only the helper notices (see
    :meth:`CuttableProxy.cut_client_side`)."""

    after_bytes: int | None = None
    after_seconds: float | None = None
    silent: bool = False

    def __str__(self) -> str:
        at = [f"{self.after_bytes} bytes"] if self.after_bytes is not None else []
        at += [f"{self.after_seconds:.3f} s"] if self.after_seconds is not None else []
        return f"cut after {' or '.join(at) or 'nothing'}{' (silent)' if self.silent else ''}"


@dataclass(eq=False)
class _Connection:
    number: int
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    kind: str = "?"
    #: bytes forwarded so far, both ways together
    bytes: int = 0
    #: (direction, bytes) of every chunk: ">" helper to broker, "<" broker to helper
    chunks: list[tuple[str, int]] = field(default_factory=list)
    trap: Trap | None = None
    cut: bool = False


class CuttableProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``. ``down()`` aborts every
    connection and refuses new ones until ``up()``; :meth:`trap` cuts the next login
    connections part-way. ``history`` says what happened, for a failing test to print."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.is_up = True
        self.accepted = 0
        #: what happened, with seconds since the start, for a failing test to print
        self.history: list[str] = []
        self._began = 0.0
        self.connections: list[_Connection] = []
        #: logins cut by a trap
        self.sprung = 0
        self._traps: deque[Trap] = deque()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        #: the client-facing side of each connection -> its server-facing side
        self._clients: dict[asyncio.StreamWriter, asyncio.StreamWriter] = {}
        #: server-facing sides left open and silent after their client was cut
        self._silent: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    async def start(self) -> CuttableProxy:
        self._began = asyncio.get_running_loop().time()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_up:
            self._note("refused a connection (down)")
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        conn = _Connection(self.accepted, writer, up_writer)
        self.connections.append(conn)
        self._writers |= {writer, up_writer}
        self._clients[writer] = up_writer
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, conn, ">")),
            asyncio.create_task(self._pipe(up_reader, writer, conn, "<")),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._tasks.difference_update(pipes)
        self._writers -= {writer, up_writer}
        self._clients.pop(writer, None)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Connection,
        direction: str,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if conn.kind == "?" and direction == ">":
                    self._classify(conn, data)
                if conn.cut:
                    break
                trap = conn.trap
                if trap is not None and trap.after_bytes is not None:
                    room = trap.after_bytes - conn.bytes
                    if room <= len(data):
                        if room > 0:
                            writer.write(data[:room])
                            await writer.drain()
                            conn.bytes += room
                            conn.chunks.append((direction, room))
                        self._spring(conn)
                        break
                conn.bytes += len(data)
                conn.chunks.append((direction, len(data)))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if writer not in self._silent:
                writer.transport.abort()

    def _classify(self, conn: _Connection, first: bytes) -> None:
        """A reverse link says so in its first bytes; any other connection is a login."""
        conn.kind = "link" if first.startswith(LINK_PREAMBLE[: len(first)]) else "login"
        if conn.kind != "login" or not self._traps:
            return
        conn.trap = trap = self._traps.popleft()
        self._note(f"connection {conn.number}: armed to {trap}")
        if trap.after_seconds is not None:
            timer = asyncio.get_running_loop().call_later(trap.after_seconds, self._spring, conn)
            self._timers.add(timer)

    def _spring(self, conn: _Connection) -> None:
        if conn.cut or conn.trap is None or conn.client.transport.is_closing():
            return
        conn.cut = True
        self.sprung += 1
        assert conn.trap is not None
        self._note(
            f"connection {conn.number}: cut by its trap after {conn.bytes} bytes "
            f"({self._phases(conn)})"
        )
        if conn.trap.silent:
            self._silent.add(conn.server)
        else:
            conn.server.transport.abort()
        conn.client.transport.abort()

    def _note(self, what: str) -> None:
        self.history.append(f"{asyncio.get_running_loop().time() - self._began:7.3f} {what}")

    @staticmethod
    def _phases(conn: _Connection) -> str:
        """The chunks so far, merged by direction: ``>41 <1080 >1200 ...``."""
        merged: list[list[object]] = []
        for direction, size in conn.chunks:
            if merged and merged[-1][0] == direction:
                merged[-1][1] = int(str(merged[-1][1])) + size
            else:
                merged.append([direction, size])
        return " ".join(f"{d}{n}" for d, n in merged) or "nothing"

    def trap(self, *traps: Trap) -> None:
        """Cut the next logins (one trap each, in order) part-way."""
        self._traps.extend(traps)
        self._note(f"trap set: {', '.join(map(str, traps))}")

    def disarm(self) -> None:
        """No more traps: neither for the next logins nor on connections already armed."""
        self._traps.clear()
        for conn in self.connections:
            conn.trap = None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    @property
    def armed(self) -> int:
        return len(self._traps)

    def down(self) -> int:
        """Cut every connection at once (both ends see a reset) and refuse new ones; the
        number of logins (not reverse links) cut."""
        self.is_up = False
        logins = self._logins()
        self._note(f"down: cut {len(self._clients)} connections, {logins} of them logins")
        for writer in list(self._writers):
            writer.transport.abort()
        return logins

    def cut_client_side(self) -> int:
        """Only the client notices: its side is reset, while the server's side stays open
        and silent (as when a laptop changes networks). New connections are let through.
        The number of logins cut."""
        logins = self._logins()
        self._note(f"cut {len(self._clients)} connections, {logins} logins, on one side only")
        for writer, upstream in list(self._clients.items()):
            self._silent.add(upstream)
            writer.transport.abort()
        return logins

    def _logins(self) -> int:
        return sum(
            1 for c in self.connections if c.kind == "login" and not c.client.transport.is_closing()
        )

    def freeze(self) -> None:
        """The network goes silent: nothing is forwarded either way, nothing is closed."""
        for writer in list(self._writers):
            writer.transport.pause_reading()

    def up(self) -> None:
        self.is_up = True
        self._note("up")

    def trace(self) -> str:
        """Every connection with its kind and chunks, one a line."""
        return "\n".join(
            f"{c.number} {c.kind}{' cut' if c.cut else ''}: {self._phases(c)}"
            for c in self.connections
        )

    async def close(self) -> None:
        self.down()
        for timer in self._timers:
            timer.cancel()
        for writer in self._silent:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
