"""Every way an engineer might reach something outside the consent is refused, and every
refusal is in the audit. One connected customer on T-1 (scope: shell, exec, one web port),
another on T-2 that is assigned to someone else; the engineer is alice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_files import _common, _run
from tests.harness import BrokerHarness, Result


@dataclass
class World:
    harness: BrokerHarness
    alice: Path
    web_port: int


@pytest.fixture
async def world(harness: BrokerHarness) -> AsyncIterator[World]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t1 = await harness.ticket(title="Customer one")
    t2 = await harness.ticket(title="Customer two")
    alice = await harness.engineer()
    await harness.engineer("bob", "Bob Jones")
    from broker.store import queries as q

    async with harness.store.begin() as db:
        await q.set_assignees(db, await q.get_ticket(db, t2), ["bob"])
    await harness.connected_helper(t1, scope=f"shell,exec,port:{port}")
    await harness.connected_helper(t2, "bob", scope="shell,exec,sftp,observe")
    yield World(harness, alice, port)
    server.close()
    await server.wait_closed()


async def _ssh(w: World, user: str, *args: str) -> Result:
    return await w.harness.ssh(w.alice, user, *args, stdin=b"")


CASES = {
    # name: (ssh user, ssh options and command, audit action, detail that must be in it)
    "another ticket's customer": (
        "T-2",
        ("echo x",),
        "channel.refused",
        {"kind": "exec", "reason_has": "assigned to bob"},
    ),
    "another ticket by watching": (
        "T-2+watch",
        ("-tt",),
        "channel.refused",
        {"kind": "observe", "reason_has": "assigned to bob"},
    ),
    "a ticket that does not exist": (
        "T-99",
        ("echo x",),
        "channel.refused",
        {"kind": "exec", "reason_has": "There is no ticket T-99"},
    ),
    "the broker's own login": ("agent", ("echo x",), "engineer.auth_failed", {"user": "agent"}),
    "a made-up user name": (
        "root",
        ("echo x",),
        "channel.refused",
        {"reason_has": "There is no ticket root"},
    ),
    "a mode that is not watch": (
        "T-1+admin",
        ("echo x",),
        "channel.refused",
        {"user": "T-1+admin"},
    ),
    "a host on the customer's network": (
        "T-1",
        ("-W", "127.0.0.2:{port}"),
        "channel.refused",
        {"kind": "forward", "host": "127.0.0.2"},
    ),
    "a named host not in scope": (
        "T-1",
        ("-W", "db.internal:{port}"),
        "channel.refused",
        {"kind": "forward", "host": "db.internal"},
    ),
    "a port not in scope": (
        "T-1",
        ("-W", "localhost:{port_plus}"),
        "channel.refused",
        {"kind": "forward"},
    ),
    "the customer's ssh port": (
        "T-1",
        ("-W", "localhost:22"),
        "channel.refused",
        {"kind": "forward", "port": 22},
    ),
    "a remote forward": (
        "T-1",
        ("-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:localhost:22"),
        "channel.refused",
        {"kind": "remote-forward"},
    ),
    "file transfer not in scope": ("T-1", ("-s", "sftp"), "channel.refused", {"kind": "sftp"}),
    "another subsystem": ("T-1", ("-s", "netconf"), "channel.refused", {"kind": "subsystem"}),
    "watching without observe": (
        "T-1+watch",
        ("-tt",),
        "channel.refused",
        {"kind": "observe", "reason_has": "watching is not in"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_refused_and_audited(world: World, case: str) -> None:
    user, args, action, expected = CASES[case]
    h = world.harness
    args = tuple(a.format(port=world.web_port, port_plus=world.web_port + 1) for a in args)
    before = len(await h.audit())

    result = await _ssh(world, user, *args)

    assert result.status != 0, result
    assert result.stdout == b""

    async def refusal() -> dict[str, object]:
        while True:
            for name, details in (await h.audit())[before:]:
                if name != action:
                    continue
                reason = str(details.get("reason", ""))
                plain = {k: v for k, v in expected.items() if k != "reason_has"}
                if (
                    all(details.get(k) == v for k, v in plain.items())
                    and str(expected.get("reason_has", "")) in reason
                ):
                    return details
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(refusal(), 5)
    except TimeoutError:
        found = (await h.audit())[before:]
        raise AssertionError(f"{case}: no {action} {expected} in {found}") from None


async def test_scp_to_a_customer_without_file_transfer_is_refused(world: World) -> None:
    h = world.harness
    result = await _run(
        "/usr/bin/scp",
        *_common(h, world.alice),
        "-O",
        "T-1@127.0.0.1:/etc/hostname",
        str(h.tmp / "stolen"),
    )
    assert result.status != 0 and not (h.tmp / "stolen").exists()
    await h.wait_audit("T-1", "channel.refused", kind="scp")


class _StubConn:
    """Just enough of a server connection to drive the SSH edge's hooks directly."""

    def __init__(self) -> None:
        self.closed = False
        self.banners: list[str] = []

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def send_auth_banner(self, msg: str) -> None:
        self.banners.append(msg)

    def close(self) -> None:
        self.closed = True


async def test_changing_the_user_name_during_login_gets_nowhere(harness: BrokerHarness) -> None:
    """A key probed for T-1 (no proof needed) then a code as `agent` on the same connection
    must not make an engineer out of a helper login: the name change locks the login."""
    import asyncssh

    from broker.transport.ssh_server import BrokerSSHServer

    ticket = await harness.ticket()
    alice = await harness.engineer()
    code = await harness.code(ticket)
    ctx = harness.broker.ctx
    assert ctx is not None
    server = BrokerSSHServer(ctx, harness.broker.tunnels)
    server.connection_made(_StubConn())  # type: ignore[arg-type]
    public = asyncssh.read_private_key(str(alice)).convert_to_public()

    assert server.begin_auth(ticket) is True
    assert await server.validate_public_key(ticket, public) is True  # a probe, no signature
    server.begin_auth("agent")
    assert server.kbdint_auth_supported() is False
    assert await server.validate_kbdint_response("agent", [code]) is False
    assert await server.validate_public_key(ticket, public) is False
    assert server.engineer is None and server.agent is None
    assert not [a for a, _ in await harness.audit(ticket) if a == "consent.redeemed"]
    assert harness.broker.manager.live() == []  # the code was never even tried
