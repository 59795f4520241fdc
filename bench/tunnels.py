"""Many customers at once, without many helper processes: each idle tunnel is one asyncssh
connection from this process that does what the helper does up to its forward (redeem a code,
consent, bring up the ``session`` forward), so the broker's side is the real one. Also: how
many consent codes the store redeems per second."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncssh

from broker.keys import load_code_key, load_seal_key
from broker.session.consent import CodeHasher, ConsentCodes
from broker.store import queries as q
from broker.store.db import Store


async def issue_codes(
    store: Store, data_dir: Path, count: int, engineer: str, scope: str = "shell"
) -> list[tuple[str, str]]:
    """``count`` (ticket, code) pairs: one ticket each (a ticket has one live session)."""
    # the bench stands in for an admin's command line: its events are sealed as theirs are
    store.seal_key = store.seal_key or load_seal_key(data_dir)
    codes = ConsentCodes(store, CodeHasher(load_code_key(data_dir)))
    async with store.begin() as db:
        keys = [
            (await q.create_ticket(db, title=f"tunnel {i}", severity=4)).key for i in range(count)
        ]
    return [(key, (await codes.issue(key, engineer, scope, 3600))[0]) for key in keys]


class _Client(asyncssh.SSHClient):
    def __init__(self, code: str) -> None:
        self.code = code

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        return True  # the bench trusts its own broker

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Any
    ) -> list[str]:
        return [self.code]


async def open_tunnel(
    port: int,
    code: str,
    host_key: str,
    serve: asyncssh.SSHKey | None = None,
    links: bool = True,
) -> asyncssh.SSHClientConnection:
    """A customer's connection up to its forward. With ``serve`` (the private key of
    ``host_key``), the helper's real embedded server answers engineers on it (echo commands
    run as processes, as in the helper); without, the forward leads nowhere (an idle tunnel).
    ``links=False`` behaves like a helper that predates reverse links (it never mentions them)."""
    conn = await asyncssh.connect(
        "127.0.0.1",
        port,
        username="agent",
        client_factory=lambda: _Client(code),
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        config=None,
        preferred_auth="keyboard-interactive",
    )
    writer, reader, _ = await conn.open_session(subsystem="assist-control", encoding="utf-8")
    hello = json.loads(await reader.readline())
    assert hello["type"] == "hello", hello
    consent = {"type": "consent", "host_key": host_key, "host": {}}
    kind = str(hello.get("link", "nested")) if links else "nested"
    if links:
        consent["link"] = kind
    writer.write(json.dumps(consent) + "\n")
    consented = json.loads(await reader.readline())
    assert consented["type"] == "consented", consented
    conn.control = writer  # type: ignore[attr-defined]  # to say "end" later
    conn.control_reader = reader  # type: ignore[attr-defined]
    if serve is None:
        await conn.forward_remote_port("session", 22, "127.0.0.1", 9)  # the helper's forward
        return conn
    from agent_client.links import Link
    from agent_client.server import HelperServer
    from assist_protocol.scope import Scope

    scope = Scope.parse(consented["scope"])
    link = Link(conn, writer, reader)
    await link.serve(
        kind,
        lambda: HelperServer(scope, lambda _kind, _detail: None),
        {
            "server_host_keys": [serve],
            "authorized_client_keys": asyncssh.import_authorized_keys(hello["relay_key"] + "\n"),
            "encoding": None,
            "agent_forwarding": False,
            "x11_forwarding": False,
            "allow_scp": False,
        },
    )

    async def follow() -> None:  # the broker asks for a reverse link per engineer login
        while line := await reader.readline():
            message = json.loads(line)
            if message.get("type") == "link":
                link.dial(message["nonce"])

    conn.follower = asyncio.ensure_future(follow())  # type: ignore[attr-defined]
    return conn


async def idle_tunnels(
    port: int, codes: list[str], parallel: int = 20
) -> list[asyncssh.SSHClientConnection]:
    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    gate = asyncio.Semaphore(parallel)

    async def one(code: str) -> asyncssh.SSHClientConnection:
        async with gate:
            return await open_tunnel(port, code, host_key)

    return list(await asyncio.gather(*(one(code) for code in codes)))


async def redemptions_per_second(store: Store, data_dir: Path, count: int) -> float:
    """Codes redeemed per second by the store path (hash, conditional claim, session row,
    chained audit event), ``count`` at once from 10 concurrent callers."""
    async with store.begin() as db:
        if await q.find_account(db, "redeemer") is None:
            await q.add_account(db, name="redeemer", role="engineer", display_name="R")
    codes_api = ConsentCodes(store, CodeHasher(load_code_key(data_dir)))
    codes = [code for _, code in await issue_codes(store, data_dir, count, "redeemer")]
    gate = asyncio.Semaphore(10)

    async def redeem(code: str) -> None:
        async with gate:
            await codes_api.redeem(code, "127.0.0.1")

    start = time.perf_counter()
    await asyncio.gather(*(redeem(code) for code in codes))
    return count / (time.perf_counter() - start)


async def active_sessions(
    port: int, data_dir: Path, count: int, key: asyncssh.SSHKey, seconds: float = 5.0
) -> tuple[int, float]:
    """``count`` customers each with a recorded ``cat`` that an engineer keeps echoing 4 KiB
    messages through for ``seconds``. Returns the bytes echoed in all, and the seconds a new
    customer took meanwhile to get in (code, consent, forward up): is the broker responsive?"""
    store = Store(f"sqlite+aiosqlite:///{data_dir / 'broker.db'}")
    helper_key = asyncssh.generate_private_key("ssh-ed25519")
    public = helper_key.export_public_key().decode().strip()
    try:
        pairs = await issue_codes(store, data_dir, count + 1, "bench", "shell,exec")
    finally:
        await store.close()
    pairs, (_, newcomer_code) = pairs[:-1], pairs[-1]
    tunnels = [await open_tunnel(port, code, public, serve=helper_key) for _, code in pairs]
    message = b"x" * 4096
    deadline = time.monotonic() + seconds

    async def echo(ticket: str) -> int:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username=ticket,
            client_keys=[key],
            known_hosts=None,
            agent_path=None,
            config=None,
        ) as conn:
            writer, reader, _ = await conn.open_session("cat", encoding=None)
            moved = 0
            while time.monotonic() < deadline:
                writer.write(message)
                moved += len(await reader.readexactly(len(message)))
            writer.write_eof()
            return moved

    async def newcomer() -> float:
        await asyncio.sleep(min(1.0, seconds / 2))  # the load is on
        start = time.perf_counter()
        tunnels.append(await open_tunnel(port, newcomer_code, public))
        return time.perf_counter() - start

    try:
        late = asyncio.ensure_future(newcomer())
        moved = sum(await asyncio.gather(*(echo(ticket) for ticket, _ in pairs)))
        return moved, await late
    finally:
        for tunnel in tunnels:
            tunnel.close()
