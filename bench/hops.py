"""``python -m bench.hops``: the broker-helper hop alone, nested against single-layer.

Two processes on loopback, the same asyncssh options as the product (AES-GCM, no compression,
``encoding=None``): a "broker" (this process, which measures) and a "helper" (a child process)
whose embedded server echoes or swallows what it gets.

- **nested**: the helper logs in to the broker and forwards ``session:22``; each measurement
  connection is an SSH client connection carried as a channel of the helper's connection
  (two encryption layers on the hop, as the product did first).
- **reverse**: the helper dials a second TCP connection and acts as the SSH *server* on it
  (``asyncssh.connect_reverse``); the broker is its client (one layer).

It prints one-byte echo round trips (p50/p99 in microseconds) and bulk MB/s for both, and the
ratios. The engineer's hop is not part of this measurement; ``python -m bench`` measures the
whole path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from asyncio.subprocess import Process
from typing import Any

import asyncssh

from bench.measure import percentile

CIPHERS = ["aes128-gcm@openssh.com"]
OPTIONS: dict[str, Any] = {
    "encryption_algs": CIPHERS,
    "compression_algs": None,
    "encoding": None,
}


class EchoSession(asyncssh.SSHServerSession[bytes]):
    """``echo``: writes back what it gets; ``sink``: counts it and says how much at EOF."""

    def __init__(self) -> None:
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.command = ""
        self.count = 0

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        assert self.chan is not None
        if self.command == "echo":
            self.chan.write(data)
        else:
            self.count += len(data)

    def eof_received(self) -> bool:
        assert self.chan is not None
        self.chan.write(str(self.count).encode())
        self.chan.exit(0)
        return False


class HelperServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # the hop's authentication is not what is measured

    def session_requested(self) -> EchoSession:
        return EchoSession()


class Forwarded(asyncssh.SSHListener):
    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None


class BrokerServer(asyncssh.SSHServer):
    """The broker side of the helper's own connection in the nested design."""

    def __init__(self, arrived: asyncio.Future[asyncssh.SSHServerConnection]) -> None:
        self.arrived = arrived
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def begin_auth(self, username: str) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> asyncssh.SSHListener:
        assert self.conn is not None
        if not self.arrived.done():
            self.arrived.set_result(self.conn)
        return Forwarded()


async def helper_main(mode: str, port: int) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    if mode == "nested":
        conn = await asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="agent", config=None, **OPTIONS
        )
        await asyncssh.listen(
            tunnel=conn,
            host="session",
            port=22,
            server_factory=HelperServer,
            server_host_keys=[key],
            **OPTIONS,
        )
    else:
        conn = await asyncssh.connect_reverse(
            "127.0.0.1", port, server_factory=HelperServer, server_host_keys=[key], **OPTIONS
        )
    await conn.wait_closed()


async def open_hop(mode: str) -> tuple[asyncssh.SSHClientConnection, Process]:
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[Any] = loop.create_future()
    if mode == "nested":
        key = asyncssh.generate_private_key("ssh-ed25519")
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_factory=lambda: BrokerServer(arrived),
            server_host_keys=[key],
            **OPTIONS,
        )
    else:
        server = await asyncssh.listen_reverse(
            "127.0.0.1",
            0,
            known_hosts=None,
            username="engineer",
            config=None,
            acceptor=lambda conn: arrived.done() or arrived.set_result(conn),
            **OPTIONS,
        )
    port = server.get_port()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.hops", "--helper", mode, str(port)
    )
    peer = await asyncio.wait_for(arrived, 30)
    server.close()
    if mode == "nested":
        conn = await asyncssh.connect(
            "session", 22, tunnel=peer, known_hosts=None, username="engineer", config=None,
            **OPTIONS,
        )  # fmt: skip
        return conn, child
    return peer, child


async def echo(conn: asyncssh.SSHClientConnection, count: int) -> list[float]:
    writer, reader, _ = await conn.open_session(command="echo", encoding=None)
    took = []
    for i in range(count):
        key = bytes([97 + i % 26])
        start = time.perf_counter()
        writer.write(key)
        got = await reader.read(1)
        took.append((time.perf_counter() - start) * 1e6)
        assert got == key, got
    writer.close()
    return took


async def bulk(conn: asyncssh.SSHClientConnection, mib: int) -> float:
    writer, reader, _ = await conn.open_session(command="sink", encoding=None)
    block = os.urandom(1 << 20)
    start = time.perf_counter()
    for _ in range(mib):
        writer.write(block)
        await writer.drain()
    writer.write_eof()
    count = int(await reader.read())
    took = time.perf_counter() - start
    assert count == mib << 20, count
    return mib * (1 << 20) / took / 1e6


async def measure(mode: str, count: int, mib: int) -> dict[str, float]:
    conn, child = await open_hop(mode)
    try:
        await echo(conn, 50)  # warm up
        took = await echo(conn, count)
        rate = await bulk(conn, mib)
    finally:
        conn.close()
        child.terminate()
        await asyncio.wait_for(child.wait(), 10)
    return {"p50": percentile(took, 50), "p99": percentile(took, 99), "bulk": rate}


async def main(rounds: int, count: int, mib: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"nested": [], "reverse": []}
    for _ in range(rounds):  # alternated, so both see the same minutes
        for mode in runs:
            runs[mode].append(await measure(mode, count, mib))
    best = {
        mode: {k: sorted(r[k] for r in results)[len(results) // 2] for k in results[0]}
        for mode, results in runs.items()
    }
    return best


def report(best: dict[str, Any]) -> None:
    nested, reverse = best["nested"], best["reverse"]
    print("hop broker<->helper  nested   reverse  reverse/nested")
    for key, unit in (("p50", "us"), ("p99", "us"), ("bulk", "MB/s")):
        print(
            f"{key:>6} ({unit:>4})      {nested[key]:8.0f} {reverse[key]:8.0f}"
            f"  {reverse[key] / nested[key]:.2f}"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__)
    parser.add_argument("--helper", nargs=2, metavar=("MODE", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if args.helper:
        asyncio.run(helper_main(args.helper[0], int(args.helper[1])))
        return
    best = asyncio.run(main(args.rounds, args.count, args.mib))
    report(best)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(best, out, indent=2)


if __name__ == "__main__":
    cli()
