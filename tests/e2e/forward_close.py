"""Every way a forwarded connection can end, as a table: the real ``ssh -W`` through the broker
and the helper to a tiny server on the customer's side (this machine), run many times over.

Shared by ``test_forward_close.py`` and ``loop_forward_close.py`` (hundreds of runs by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import BrokerHarness

REQUEST = b"GET /%04d HTTP/1.0\r\n\r\n"  # one length for every run
ANSWER = b"HTTP/1.0 200 OK\r\n\r\nhello from the customer's side\n"
BYE = b"busy, try later\n"
BIG = os.urandom(4 * 1024 * 1024)  # beyond one channel window (2 MiB) on every hop
#: beyond a window and the customer's socket buffer (up to 4 MiB), so that a slow destination
#: holds the upload back all the way to ssh
UPLOAD = BIG * 2
#: one run may take this long on a loaded machine; a hung ssh takes it all
RUN_SECONDS = 20.0

Handler = Callable[["Case", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _run_id(reader: asyncio.StreamReader) -> int:
    request = await reader.readuntil(b"\r\n\r\n")
    return int(request.split(b" ")[1].lstrip(b"/"))


async def answer_and_close(
    case: Case, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    run = await _run_id(reader)
    case.answering(run).set()  # a "crossing" engineer sends its EOF now
    if case.client == "cross":
        # a few ms either way, so that over the runs either EOF reaches the helper first
        await asyncio.sleep(random.uniform(0, 0.004))
    w.write(ANSWER)


async def close_without_reading(
    case: Case, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    w.write(BYE)


async def read_to_eof_then_answer(
    case: Case, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    request = await reader.read()
    w.write(b"GOT %d\n" % len(request))


async def slowly_read_to_eof_then_answer(
    case: Case, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """A slow destination: the engineer's upload waits in every buffer on the way."""
    received = 0
    while chunk := await reader.read(16384):
        received += len(chunk)
        await asyncio.sleep(0.002)
    w.write(b"GOT %d\n" % received)


async def big_answer(case: Case, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    w.write(BIG)


async def answer_then_reset(
    case: Case, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await reader.readuntil(b"\r\n\r\n")
    w.write(ANSWER)
    await w.drain()
    # SO_LINGER 0: the close sends a reset, not a FIN
    w.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )


@dataclass
class Case:
    """One close path: what the server does, what the engineer's side does, what must arrive.

    ``client``: ``open`` keeps ssh's stdin open until ssh ends (a proxy client does that);
    ``eof`` closes it right after the request; ``cross`` closes it once the server has read
    the request, as the server answers and closes, so the two EOFs cross on the way; ``slow``
    keeps it open and reads the answer slowly; ``upload`` sends 8 MiB after the request, then
    EOF."""

    name: str
    handler: Handler | None  # None: nothing listens, the connection is refused
    client: str
    expected: bytes | None  # None: any prefix of ANSWER (a reset may overtake the bytes)
    status: int | None  # None: any exit status, as long as ssh exits
    runs: int = 12
    said: bytes = b""  # what ssh must print on stderr
    _answering: dict[int, asyncio.Event] = field(default_factory=dict)

    def answering(self, run: int) -> asyncio.Event:
        return self._answering.setdefault(run, asyncio.Event())


CASES = [
    Case("answer, close; stdin open", answer_and_close, "open", ANSWER, 0, runs=24),
    Case("answer, close; EOF after request", answer_and_close, "eof", ANSWER, 0),
    Case("answer, close; EOFs cross", answer_and_close, "cross", ANSWER, 0, runs=24),
    Case("close without reading", close_without_reading, "open", BYE, 0),
    Case(
        "engineer EOF first, then answer",
        read_to_eof_then_answer,
        "eof",
        b"GOT %d\n" % len(REQUEST % 0),
        0,
    ),
    Case("4 MiB answer, close", big_answer, "open", BIG, 0, runs=8),
    Case("4 MiB answer, close; EOF after request", big_answer, "eof", BIG, 0, runs=8),
    Case("4 MiB answer, close; a slow reader", big_answer, "slow", BIG, 0, runs=6),
    Case(
        "8 MiB upload to a slow reader, EOF, answer",
        slowly_read_to_eof_then_answer,
        "upload",
        b"GOT %d\n" % (len(REQUEST % 0) + len(UPLOAD)),
        0,
        runs=6,
    ),
    Case("answer, reset", answer_then_reset, "open", None, None),
    Case("connection refused", None, "open", b"", 255, said=b"stdio forwarding failed"),
]


@dataclass
class Outcome:
    run: int
    status: int | None  # None: ssh did not exit in time and was killed
    stdout: bytes
    stderr: bytes

    def problem(self, case: Case) -> str | None:
        if self.status is None:
            return f"run {self.run}: ssh did not exit within {RUN_SECONDS:.0f} s"
        if case.status is not None and self.status != case.status:
            return f"run {self.run}: exit status {self.status}, stderr {self.stderr[-300:]!r}"
        wrong = (
            not ANSWER.startswith(self.stdout)
            if case.expected is None
            else self.stdout != case.expected
        )
        if wrong:
            return f"run {self.run}: {len(self.stdout)} bytes {self.stdout[:60]!r}"
        if case.said not in self.stderr:
            return f"run {self.run}: stderr {self.stderr[-300:]!r}"
        return None


@contextlib.asynccontextmanager
async def target(case: Case) -> AsyncIterator[int]:
    """The customer's server for ``case``; yields its port (a closed one for a refusal)."""
    if case.handler is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        yield port
        return
    handler = case.handler

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(case, reader, writer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the engineer's side went first: this run's outcome says so
        finally:
            writer.close()

    # a small receive buffer, so that a slow server holds data back along the way rather than
    # the kernel taking all of it
    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    listening.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(handle, sock=listening)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def engineer(
    harness: BrokerHarness, key: Path, ticket: str, port: int, case: Case, run: int
) -> Outcome:
    """``ssh -W 127.0.0.1:PORT``: send the request, read until EOF, wait for ssh to exit."""
    proc = await asyncio.create_subprocess_exec(
        *harness.ssh_args(key, ticket, "-W", f"127.0.0.1:{port}"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())
    status: int | None = None
    out = b""
    try:
        async with asyncio.timeout(RUN_SECONDS):
            with contextlib.suppress(ConnectionError):  # ssh may have ended already
                proc.stdin.write(REQUEST % run)
                await proc.stdin.drain()
                if case.client == "upload":
                    proc.stdin.write(UPLOAD)
                    await proc.stdin.drain()
                if case.client in ("eof", "upload"):
                    proc.stdin.close()
                elif case.client == "cross":
                    await case.answering(run).wait()
                    proc.stdin.close()
            if case.client == "slow":
                while chunk := await proc.stdout.read(16384):
                    out += chunk
                    await asyncio.sleep(0.001)
            else:
                out = await proc.stdout.read()
            status = await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
    finally:
        proc.stdin.close()
    return Outcome(run, status, out, await errors)


async def run_many(
    harness: BrokerHarness, key: Path, ticket: str, port: int, case: Case, runs: range, batch: int
) -> list[str]:
    """The ``runs`` (numbered), ``batch`` at a time; stops after the first batch with a
    problem."""
    problems: list[str] = []
    for first in range(runs.start, runs.stop, batch):
        outcomes = await asyncio.gather(
            *(
                engineer(harness, key, ticket, port, case, run)
                for run in range(first, min(first + batch, runs.stop))
            )
        )
        problems += [p for o in outcomes if (p := o.problem(case)) is not None]
        if problems:
            break
    return problems


def open_sockets_to(port: int) -> int:
    """Sockets on this machine connected *to* ``port`` and not yet fully closed (TIME_WAIT is
    closed): the helper's ends of forwarded connections that were left open."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                state = fields[3]
                if remote_port == port and state not in ("06", "0A"):  # TIME_WAIT, LISTEN
                    count += 1
    return count
