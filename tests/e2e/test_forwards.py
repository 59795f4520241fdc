"""Port forwards within the consent: -L and -W reach a real server on the customer's side; any
other destination is refused by the broker, and by the helper even if the broker lets it by."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.e2e.test_refusals import _free_port
from tests.harness import BrokerHarness

PAGE = b"hello from the customer's side\n"


@pytest.fixture
async def web_port() -> AsyncIterator[int]:
    """A tiny HTTP server on the customer's machine (this one), on a free port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(PAGE), PAGE))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _fetch(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data


async def test_local_forward_reaches_an_allowed_port(harness: BrokerHarness, web_port: int) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket, scope=f"shell,port:{web_port}")
    local = _free_port()
    ssh = await asyncio.create_subprocess_exec(
        *harness.ssh_args(key, ticket, "-N", "-L", f"{local}:localhost:{web_port}"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def fetch_when_listening() -> bytes:
            while True:
                try:
                    return await _fetch(local)
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)  # ssh has not bound the local port yet

        response = await asyncio.wait_for(fetch_when_listening(), 15)
        assert response.endswith(b"\r\n\r\n" + PAGE)
        closed = await harness.wait_audit(ticket, "channel.closed", kind="forward")
        assert closed["bytes_in"] == len(b"GET / HTTP/1.0\r\n\r\n")
        assert closed["bytes_out"] == len(response)
        assert isinstance(closed["duration_ms"], int)
        opened = await harness.wait_audit(ticket, "channel.opened", kind="forward")
        assert (opened["host"], opened["port"]) == ("localhost", web_port)
        await helper.wait_for(f"connected to port {web_port} on localhost")
    finally:
        ssh.kill()
        await ssh.wait()


async def test_stdio_forward_follows_the_same_rule(harness: BrokerHarness, web_port: int) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket, scope=f"port:127.0.0.1:{web_port}")

    allowed = await harness.ssh(
        key, ticket, stdin=b"GET / HTTP/1.0\r\n\r\n", options=("-W", f"127.0.0.1:{web_port}")
    )
    assert allowed.status == 0 and allowed.stdout.endswith(PAGE)

    other_port = await harness.ssh(
        key, ticket, stdin=b"", options=("-o", "LogLevel=INFO", "-W", f"127.0.0.1:{web_port + 1}")
    )
    assert other_port.status == 255
    expected = (
        f"127.0.0.1:{web_port + 1} is not in the consent (granted: port:127.0.0.1:{web_port})"
    )
    assert expected.encode() in other_port.stderr
    await harness.wait_audit(ticket, "channel.refused", kind="forward", port=web_port + 1)

    other_host = await harness.ssh(key, ticket, stdin=b"", options=("-W", f"127.0.0.2:{web_port}"))
    assert other_host.status == 255
    await harness.wait_audit(ticket, "channel.refused", kind="forward", host="127.0.0.2")


async def test_helper_refuses_what_a_faulty_broker_lets_through(
    harness: BrokerHarness, web_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the broker's own check switched off, the helper still refuses a port not granted."""
    from assist_protocol.scope import Decision
    from broker.session.core import door

    monkeypatch.setattr(door, "decide", lambda scope, request: Decision(True, "test: bypassed"))
    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket, scope="shell")

    forward = await harness.ssh(
        key, ticket, stdin=b"", options=("-o", "LogLevel=INFO", "-W", f"localhost:{web_port}")
    )
    assert forward.status == 255
    assert b"Refused by the customer's helper" in forward.stderr

    command = await harness.ssh(key, ticket, "echo should-not-run")
    assert command.status == 255 and command.stdout == b""
    assert b"The customer's helper refused the channel" in command.stderr
    await helper.wait_for("Refused for Alice Smith")
