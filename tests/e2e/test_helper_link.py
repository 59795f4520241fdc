"""How the broker reaches the helper's embedded server: reverse links (the default) or nested
connections; both with the real helper and the real ssh. The shared SSH port's sniffing."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import asyncssh
import pytest

from bench.tunnels import open_tunnel
from broker.transport.links import PREAMBLE
from broker.transport.nested import client_options, connect_link
from tests.harness import TIMEOUT, BrokerHarness


def established_to(pid: int, port: int) -> int:
    """TCP connections of process ``pid`` whose far end is 127.0.0.1:``port``, established."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}") if fd.isdigit() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if fields[3] == "01" and remote_port == port and fields[9] in inodes:
            count += 1
    return count


@pytest.mark.parametrize("kind, connections", [("reverse", 2), ("nested", 1)])
async def test_engineer_reaches_the_customer_either_way(
    tmp_path: Path, kind: str, connections: int
) -> None:
    """With reverse links, an engineer's login makes the helper dial a second connection (it
    goes when the engineer leaves); nested, everything rides the helper's one connection."""
    harness = await BrokerHarness(tmp_path, helper_link=kind).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        helper = await harness.connected_helper(ticket)
        pid = helper.proc.pid
        assert established_to(pid, harness.port) == 1

        engineer = await asyncio.create_subprocess_exec(
            *harness.ssh_args(key, ticket),
            "echo ready; read line; echo got-$line",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert engineer.stdin is not None and engineer.stdout is not None
        ready = await asyncio.wait_for(engineer.stdout.readline(), TIMEOUT)
        assert ready == b"ready\n"
        assert established_to(pid, harness.port) == connections

        engineer.stdin.write(b"ping\n")
        engineer.stdin.close()
        rest = await asyncio.wait_for(engineer.stdout.read(), TIMEOUT)
        assert rest == b"got-ping\n"
        assert await asyncio.wait_for(engineer.wait(), TIMEOUT) == 0
        await harness.wait_audit(ticket, "channel.closed", exit_status=0)

        async def back_to_one() -> None:
            while established_to(pid, harness.port) != 1:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(back_to_one(), TIMEOUT)
    finally:
        await harness.stop()


async def read_all(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> bytes:
    """What the broker sent before it hung up (closed or reset)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def test_a_client_that_waits_for_the_server_is_served_as_ssh(harness: BrokerHarness) -> None:
    """A client that says nothing first still gets the broker's SSH version line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    line = await asyncio.wait_for(reader.readline(), TIMEOUT)
    writer.close()
    assert line.startswith(b"SSH-2.0-")


async def test_unknown_reused_and_overlong_links_are_hung_up(harness: BrokerHarness) -> None:
    """A reverse link whose nonce nobody waits for gets no SSH and is closed; a nonce works
    once; a preamble line without an end is closed too. The one waiting keeps waiting."""
    assert harness.broker.ctx is not None
    links = harness.broker.ctx.links
    nonce, arrived = links.expect()

    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    writer.write(PREAMBLE + b"x" * 43 + b"\n")
    assert await read_all(reader) == b""  # closed, not a byte of SSH
    writer.close()
    assert not arrived.done()

    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    writer.write(PREAMBLE + b"y" * 200)
    assert await read_all(reader) == b""
    writer.close()

    first = socket.create_connection(("127.0.0.1", harness.port))
    first.sendall(PREAMBLE + nonce.encode() + b"\n")
    got = await asyncio.wait_for(arrived, TIMEOUT)
    assert got.getpeername() == first.getsockname()
    got.close()
    first.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    writer.write(PREAMBLE + nonce.encode() + b"\n")
    assert await read_all(reader) == b""  # used up
    writer.close()
    assert len(links) == 0


async def test_a_link_with_another_host_key_is_refused(harness: BrokerHarness) -> None:
    """The broker pins the host key the helper gave at consent: a link served with any other
    key fails before the broker logs in."""
    assert harness.broker.ctx is not None and harness.broker.keys is not None
    ctx = harness.broker.ctx
    nonce, arrived = ctx.links.expect()
    pinned = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    impostor = asyncssh.generate_private_key("ssh-ed25519")

    async def serve_impostor() -> None:
        sock = socket.create_connection(("127.0.0.1", harness.port))
        sock.sendall(PREAMBLE + nonce.encode() + b"\n")
        sock.setblocking(False)
        try:
            await asyncssh.run_server(sock, server_host_keys=[impostor], config=None)
        except (asyncssh.Error, OSError):
            pass

    impostor_task = asyncio.create_task(serve_impostor())
    sock = await asyncio.wait_for(arrived, TIMEOUT)
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await connect_link(sock, client_options(pinned, ctx.keys.relay_key, "alice", 30), TIMEOUT)
    await asyncio.wait_for(impostor_task, TIMEOUT)


async def test_a_helper_that_knows_no_links_is_reached_nested(harness: BrokerHarness) -> None:
    """A helper whose consent does not mention links (one older than them) gets the nested
    design, and the audit says which way the broker reached it."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    code = await harness.code(ticket)
    helper_key = asyncssh.generate_private_key("ssh-ed25519")
    public = helper_key.export_public_key().decode().strip()
    tunnel = await open_tunnel(harness.port, code, public, serve=helper_key, links=False)
    try:
        consented = await harness.wait_audit(ticket, "session.consented")
        assert consented["helper_link"] == "nested"
        result = await harness.ssh(key, ticket, "echo through-nested")
        assert result.status == 0 and result.stdout == b"through-nested\n"
    finally:
        tunnel.close()


async def test_a_link_the_helper_cannot_dial_is_told_at_once(harness: BrokerHarness) -> None:
    """When the helper reports that it could not connect back, the engineer reads why within
    seconds, not after the link timeout, and the refusal is audited."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    code = await harness.code(ticket)
    public = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    tunnel = await open_tunnel(harness.port, code, public)  # a helper that answers no links
    try:
        control = tunnel.control  # type: ignore[attr-defined]
        reader = tunnel.control_reader  # type: ignore[attr-defined]

        async def refuse_links() -> None:
            while line := await reader.readline():
                message = json.loads(line)
                if message.get("type") == "link":
                    control.write(
                        json.dumps(
                            {"type": "link_failed", "nonce": message["nonce"], "reason": "test"}
                        )
                        + "\n"
                    )

        refusing = asyncio.create_task(refuse_links())
        result = await harness.ssh(key, ticket, "true", timeout=10)
        refusing.cancel()
        assert result.status == 255
        assert b"could not open a second connection to the broker" in result.stderr
        refused = await harness.wait_audit(ticket, "channel.refused")
        assert "could not open a second connection" in str(refused["reason"])
    finally:
        tunnel.close()


async def test_a_preamble_in_pieces_or_late_is_still_a_link(harness: BrokerHarness) -> None:
    """A helper whose first segment was lost or delayed still gets its link: the broker
    waits for the rest of the line (by readiness, not by polling)."""
    assert harness.broker.ctx is not None
    links = harness.broker.ctx.links
    for first_pause, second_pause in ((0.0, 0.5), (1.0, 0.0)):
        nonce, arrived = links.expect()
        line = PREAMBLE + nonce.encode() + b"\n"
        _, writer = await asyncio.open_connection("127.0.0.1", harness.port)
        await asyncio.sleep(first_pause)  # the broker must not take the silence for SSH
        writer.write(line[:7])
        await writer.drain()
        await asyncio.sleep(second_pause)
        writer.write(line[7:] + b"SSH-2.0-after-the-line\r\n")
        got = await asyncio.wait_for(arrived, TIMEOUT)
        got.setblocking(True)
        got.settimeout(TIMEOUT)
        assert got.recv(100) == b"SSH-2.0-after-the-line\r\n"  # nothing past the newline eaten
        got.close()
        writer.close()


async def test_links_asked_for_fail_at_once_when_the_helper_goes(harness: BrokerHarness) -> None:
    """An engineer waiting for a link the helper never dialled is told as soon as the helper's
    connection goes, not after the link timeout."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    code = await harness.code(ticket)
    public = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    tunnel = await open_tunnel(harness.port, code, public)  # it never dials a link
    reader = tunnel.control_reader  # type: ignore[attr-defined]
    engineer = asyncio.create_task(harness.ssh(key, ticket, "true", timeout=15))
    while (line := await asyncio.wait_for(reader.readline(), TIMEOUT)) and json.loads(line).get(
        "type"
    ) != "link":
        pass
    tunnel.abort()  # the helper vanishes
    result = await engineer
    assert result.status == 255
    assert b"could not be reached" in result.stderr or b"dropped" in result.stderr
    assert harness.broker.ctx is not None
    assert len(harness.broker.ctx.links) == 0  # the request did not outlive the helper
