"""The broker's SSH port, shared by SSH logins and helpers' reverse links.

A customer's firewall needs to let out one port only. Each accepted connection is sniffed:
a helper's reverse link begins with the link preamble (see ``links``); everything else is
handed to asyncssh as an SSH server connection. SSH clients send their version line as soon
as they connect (RFC 4253, 4.2: OpenSSH, PuTTY, asyncssh and paramiko do), so the sniff costs
them nothing; one that waits for the server's line first is served as SSH after
``SNIFF_SECONDS``, long enough that a helper's preamble delayed by a lost segment is still
recognised.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncssh
import structlog

from broker.transport.links import MAX_LINE, PREAMBLE

log = structlog.get_logger(__name__)

#: how long a silent new connection may take to show what it is before it is served as SSH
SNIFF_SECONDS = 3.0
#: how long a reverse link may take to finish its preamble line
PREAMBLE_SECONDS = 10.0


@dataclass(frozen=True)
class Limits:
    """Connections not logged in yet: at most ``per_address`` from one address and ``total``
    in all; ``refused`` is told why each extra one was closed (the broker's metrics)."""

    per_address: int = 10
    total: int = 500
    refused: Callable[[str], None] = lambda _reason: None


async def _readable(sock: socket.socket, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


def _peek(sock: socket.socket) -> bytes | None:
    """What has arrived so far, left queued; ``None`` when nothing has."""
    try:
        seen = sock.recv(MAX_LINE, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return None
    if not seen:
        raise ConnectionResetError("closed before a word")
    return seen


async def sniff(sock: socket.socket) -> bytes | None:
    """``None`` for SSH; the nonce for a reverse link (its preamble line consumed).

    The first look ends with a look at the socket itself, so a loop too busy to run the
    wake-up in time cannot mistake a reverse link for a silent SSH client. Once the bytes can
    only be a preamble, they are taken off the socket (never past its newline: the SSH bytes
    behind it stay queued) and the rest is waited for, not polled for, so a slow or stuck
    sender costs nothing but its socket."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PREAMBLE_SECONDS
    await _readable(sock, SNIFF_SECONDS)
    seen = _peek(sock)
    if seen is None:
        return None  # silent: a client that waits for the server to speak first
    if not PREAMBLE.startswith(seen[: len(PREAMBLE)]):
        return None  # SSH (or something asyncssh will refuse)
    line = b""
    while True:
        end = seen.find(b"\n")
        if end >= 0:
            line += sock.recv(end + 1)  # exactly up to the newline
            if not line.startswith(PREAMBLE):
                raise ValueError("not a preamble")
            return line[len(PREAMBLE) :].strip()
        line += sock.recv(len(seen))  # all of it is preamble
        if len(line) >= MAX_LINE or not PREAMBLE.startswith(line[: len(PREAMBLE)]):
            raise ValueError("not a preamble")
        left = deadline - loop.time()
        if left <= 0 or not await _readable(sock, left):
            raise TimeoutError("preamble not finished")
        seen = _peek(sock) or b""


class SharedListener:
    """Accepts on ``sockets``; SSH connections go to asyncssh with ``options``, reverse links
    to ``on_link(nonce, sock, peer)``, which returns False when nobody waits for the nonce."""

    def __init__(
        self,
        sockets: list[socket.socket],
        options: asyncssh.SSHServerConnectionOptions,
        on_link: Callable[[bytes, socket.socket, str], bool],
        limits: Limits | None = None,
    ) -> None:
        self.sockets = sockets
        self._options = options
        self._on_link = on_link
        self.limits = limits or Limits()
        #: connections that have not logged in yet (nor shown a link preamble), per address
        self._unauth: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        for sock in sockets:
            self._spawn(self._accept(sock))

    @classmethod
    async def bind(
        cls,
        host: str,
        port: int,
        options: asyncssh.SSHServerConnectionOptions,
        on_link: Callable[[bytes, socket.socket, str], bool],
        limits: Limits | None = None,
    ) -> SharedListener:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(
                (i[0], i[1], i[2], "", i[4]) for i in infos
            ):
                try:
                    sock = socket.socket(family, kind, proto)
                except OSError as exc:
                    if exc.errno == errno.EAFNOSUPPORT:  # a host without IPv6, say
                        continue
                    raise
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(128)
                sock.setblocking(False)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        if not sockets:
            raise OSError(errno.EAFNOSUPPORT, f"no address family of {host!r} is supported")
        return cls(sockets, options, on_link, limits)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listening)
            except OSError as exc:  # out of descriptors, say: keep listening
                log.warning("accept_failed", error=str(exc))
                await asyncio.sleep(0.1)
                continue
            peer = str(address[0])
            # Checked before anything is awaited for this socket: a flood of silent or
            # slow connections from one address cannot take every descriptor.
            if (
                self._unauth[peer] >= self.limits.per_address
                or self._unauth.total() >= self.limits.total
            ):
                sock.close()
                self.limits.refused("too_many_unauthenticated")
                log.warning("connection_refused", peer=peer, reason="too many not logged in")
                continue
            self._unauth[peer] += 1
            self._spawn(self._serve_counted(sock, peer))

    async def _serve_counted(self, sock: socket.socket, peer: str) -> None:
        try:
            await self._serve(sock, peer)
        finally:
            self._unauth[peer] -= 1
            if self._unauth[peer] <= 0:
                del self._unauth[peer]

    async def _serve(self, sock: socket.socket, peer: str) -> None:
        try:
            sock.setblocking(False)
            nonce = await sniff(sock)
        except (OSError, ValueError, TimeoutError) as exc:
            log.info("connection_dropped_unread", peer=peer, reason=str(exc) or type(exc).__name__)
            sock.close()
            return
        except BaseException:  # cancelled (the broker stops)
            sock.close()
            raise
        if nonce is not None:
            if not self._on_link(nonce, sock, peer):
                log.warning("link_refused", peer=peer, reason="no such link expected")
                sock.close()
            return
        try:
            # It returns once the client logged in (or raises when it did not); the
            # connection's own callbacks do the rest.
            await asyncssh.run_server(sock, options=self._options)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            log.debug("ssh_login_ended", peer=peer, error=str(exc))
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        """Stop accepting; connections already handed over live on."""
        for task in self._tasks:
            task.cancel()
        for sock in self.sockets:
            sock.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
