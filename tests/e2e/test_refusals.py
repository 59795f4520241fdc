"""Deny by default: unknown keys, tickets without a customer, forwards, and helpers that try
to do more than their control channel and their one forward."""

from __future__ import annotations

import asyncio
import json
import socket

import asyncssh
import pytest

from broker.store import queries as q
from tests.harness import BrokerHarness


async def test_unknown_engineer_key_is_denied_and_audited(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    await harness.engineer()
    stranger = harness.tmp / "stranger"
    key = asyncssh.generate_private_key("ssh-ed25519")
    stranger.write_bytes(key.export_private_key())
    stranger.chmod(0o600)

    result = await harness.ssh(stranger, ticket, "true", options=("-o", "LogLevel=INFO"))

    assert result.status == 255
    fingerprint = key.get_fingerprint("sha256")
    assert (
        f"the key {fingerprint} is not registered to an engineer account" in result.stderr.decode()
    )
    failed = await harness.wait_audit(ticket, "engineer.auth_failed")
    assert failed["keys"] == [fingerprint] and failed["source"] == "127.0.0.1"


async def test_ticket_without_customer_gets_the_next_step(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()

    result = await harness.ssh(key, ticket, "true")

    assert result.status == 255
    assert result.stderr.decode() == (
        f"No customer is connected for {ticket}. Issue a code with: "
        f"assist-broker code issue {ticket} --engineer alice\n"
    )


async def test_unknown_ticket_is_named(harness: BrokerHarness) -> None:
    key = await harness.engineer()
    result = await harness.ssh(key, "T-999", "true")
    assert result.status == 255
    assert result.stderr.decode().startswith("There is no ticket T-999.")


async def test_engineer_reaches_only_the_customer_of_the_named_ticket(
    harness: BrokerHarness,
) -> None:
    """Two tickets, one customer: the other ticket's name does not lead to that customer."""
    connected = await harness.ticket(title="Connected")
    other = await harness.ticket(title="Other")
    key = await harness.engineer()
    await harness.connected_helper(connected)

    assert (await harness.ssh(key, connected, "echo yes")).stdout == b"yes\n"
    refused = await harness.ssh(key, other, "echo yes")
    assert refused.status == 255 and refused.stdout == b""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.smoke
async def test_forwards_are_refused_and_audited(harness: BrokerHarness) -> None:
    """-W, -L and -R are not in any consent yet: each is refused and lands in the audit."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)

    stdio = await harness.ssh(key, ticket, options=("-o", "LogLevel=INFO", "-W", "localhost:22"))
    assert stdio.status == 255
    assert (
        b"administratively prohibited: Refused: localhost:22 is not in the consent "
        b"(granted: shell,exec)" in stdio.stderr
    )
    await harness.wait_audit(ticket, "channel.refused", kind="forward", port=22)

    remote = await harness.ssh(
        key, ticket, options=("-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:localhost:22")
    )
    assert remote.status == 255
    await harness.wait_audit(ticket, "channel.refused", kind="remote-forward")

    port = _free_port()
    local = await asyncio.create_subprocess_exec(
        *harness.ssh_args(key, ticket, "-N", "-L", f"{port}:localhost:22"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def reach() -> bytes:
            while True:  # until ssh listens on the local side
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)
                    continue
                data = await reader.read()
                writer.close()
                return data

        assert await asyncio.wait_for(reach(), 10) == b""  # closed at once, nothing relayed
        await harness.wait_audit(ticket, "channel.refused", kind="forward", host="localhost")
    finally:
        local.kill()
        await local.wait()


async def test_unknown_subsystem_is_refused(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    result = await harness.ssh(key, ticket, "netconf", options=("-s",))
    assert result.status == 255
    # the broker's why, then OpenSSH's own generic line
    assert result.stderr.startswith(
        b"Refused: the subsystem 'netconf' is not available (granted: shell,exec).\n"
    )
    await harness.wait_audit(ticket, "channel.refused", kind="subsystem", subsystem="netconf")

    hostile = await harness.ssh(key, ticket, "net\x1b[2Jconf", options=("-s",))
    assert b"the subsystem 'net\\x1b[2Jconf' is not available" in hostile.stderr


async def test_refusals_name_the_scope_only_to_those_who_may_work_on_the_ticket(
    harness: BrokerHarness,
) -> None:
    """An engineer the ticket is not assigned to learns from a refusal neither that a customer
    is connected nor what they granted."""
    ticket = await harness.ticket()
    await harness.engineer()
    eve = await harness.engineer("eve", "Eve Adams")
    async with harness.store.begin() as db:
        await q.set_assignees(db, await q.get_ticket(db, ticket), ["alice"])
    await harness.connected_helper(ticket)
    result = await harness.ssh(eve, ticket, "netconf", options=("-s",))
    assert result.status == 255
    assert result.stderr.startswith(b"Refused: the subsystem 'netconf' is not available.\n")
    assert b"granted" not in result.stderr


async def test_remote_forward_is_refused_with_why_on_the_session(harness: BrokerHarness) -> None:
    """A global request's reply carries no text: the why goes to the session's stderr."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    result = await harness.ssh(
        key, ticket, "echo still-works", options=("-o", "LogLevel=INFO", "-R", "0:localhost:22")
    )
    assert result.status == 0 and result.stdout == b"still-works\n"
    assert (
        b"Refused: remote forwarding (-R) is never allowed (granted: shell,exec).\n"
        in result.stderr
    )
    assert b"Warning: remote port forwarding failed for listen port 0" in result.stderr
    await harness.wait_audit(ticket, "channel.refused", kind="remote-forward")


async def test_a_refusal_is_said_once_however_often_it_is_asked(harness: BrokerHarness) -> None:
    """A client asking for -R again and again (and not reading) gets the line once, not one
    per request piling up in the broker's buffers."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    async with asyncssh.connect(
        "127.0.0.1", harness.port, username=ticket, client_keys=[str(key)], known_hosts=None
    ) as conn:
        proc = await conn.create_process("echo started; sleep 2")
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == "started\n"
        for _ in range(30):
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("", 0, "localhost", 22)
        result = await asyncio.wait_for(proc.wait(), 30)
    said = str(result.stderr)
    assert said.count("Refused: remote forwarding (-R) is never allowed") == 1, said


class _CodeClient(asyncssh.SSHClient):
    def __init__(self, code: str) -> None:
        self.code = code

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(self, *args: object) -> list[str]:
        return [self.code]


@pytest.fixture
async def agent_conn(harness: BrokerHarness) -> asyncssh.SSHClientConnection:
    """An SSH login as a helper (a real code redeemed), driven by the test itself."""
    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket)
    conn = await asyncssh.connect(
        "127.0.0.1",
        harness.port,
        username="agent",
        client_factory=lambda: _CodeClient(code),
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        config=None,
        preferred_auth="keyboard-interactive",
    )
    yield conn
    conn.close()


async def test_helper_cannot_open_a_shell_or_exec_on_the_broker(
    agent_conn: asyncssh.SSHClientConnection,
) -> None:
    with pytest.raises(asyncssh.ChannelOpenError):
        await agent_conn.create_session(asyncssh.SSHClientSession, command="id")
    with pytest.raises(asyncssh.ChannelOpenError):
        await agent_conn.create_session(asyncssh.SSHClientSession)
    with pytest.raises(asyncssh.ChannelOpenError):
        await agent_conn.create_session(asyncssh.SSHClientSession, subsystem="sftp")
    with pytest.raises(asyncssh.ChannelOpenError):
        await agent_conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", 22)


async def test_helper_gets_one_forward_only_after_consent(
    agent_conn: asyncssh.SSHClientConnection,
) -> None:
    async def listen(host: str, port: int) -> object:
        return await agent_conn.create_server(lambda *a: False, host, port)

    with pytest.raises(asyncssh.ChannelListenError):
        await listen("session", 22)  # no consent yet

    writer, reader, _ = await agent_conn.open_session(subsystem="assist-control", encoding="utf-8")
    hello = json.loads(await reader.readline())
    assert hello["type"] == "hello" and hello["ticket"]["key"] == "T-1"
    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    writer.write(json.dumps({"type": "consent", "host_key": host_key, "host": {}}) + "\n")
    assert json.loads(await reader.readline())["type"] == "consented"

    with pytest.raises(asyncssh.ChannelListenError):
        await listen("0.0.0.0", 8022)  # a real port on the broker: never
    assert await listen("session", 22) is not None
    with pytest.raises(asyncssh.ChannelListenError):
        await listen("session", 22)  # a second forward
    with pytest.raises(asyncssh.ChannelOpenError):
        await agent_conn.open_session(subsystem="assist-control")  # a second control channel


async def test_env_agent_and_x11_requests_are_refused_and_audited(
    harness: BrokerHarness,
) -> None:
    """Only TERM, LANG and LC_* reach the customer; agent and X11 forwarding never do."""
    import os

    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    agent = await asyncio.create_subprocess_exec(
        "ssh-agent",
        "-D",
        "-a",
        str(harness.tmp / "agent.sock"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def agent_ready() -> None:
            while not (harness.tmp / "agent.sock").exists():
                await asyncio.sleep(0.02)

        await asyncio.wait_for(agent_ready(), 10)
        os.environ["SSH_AUTH_SOCK"] = str(harness.tmp / "agent.sock")
        os.environ["DISPLAY"] = "127.0.0.1:47"
        result = await harness.ssh(
            key,
            ticket,
            'echo "[$LC_ALL|$SECRET_TOKEN|$SSH_AUTH_SOCK|$DISPLAY]"',
            options=(
                "-A",
                "-X",
                "-o",
                "ForwardX11Trusted=yes",
                "-o",
                "SetEnv=LC_ALL=C.UTF-8 SECRET_TOKEN=hunter2",
            ),
        )
    finally:
        os.environ.pop("SSH_AUTH_SOCK", None)
        os.environ.pop("DISPLAY", None)
        agent.kill()
        await agent.wait()

    assert result.status == 0, result.stderr
    assert result.stdout == b"[C.UTF-8|||]\n"
    env = await harness.wait_audit(ticket, "channel.refused", kind="env")
    assert env["names"] == ["SECRET_TOKEN"]
    await harness.wait_audit(ticket, "channel.refused", kind="agent")
    await harness.wait_audit(ticket, "channel.refused", kind="x11")


async def test_ticket_restricted_to_its_assignees(harness: BrokerHarness) -> None:
    """With assignees, other engineers are refused with a message; codes too."""
    from broker.errors import Invalid
    from broker.store import queries as q

    ticket = await harness.ticket()
    alice = await harness.engineer()
    bob = await harness.engineer("bob", "Bob Jones")
    async with harness.store.begin() as db:
        await q.set_assignees(db, await q.get_ticket(db, ticket), ["alice"])
    await harness.connected_helper(ticket)

    assert (await harness.ssh(alice, ticket, "echo in")).stdout == b"in\n"
    refused = await harness.ssh(bob, ticket, "echo in")
    assert refused.status == 255 and refused.stdout == b""
    assert refused.stderr.decode().startswith(
        f"{ticket} is assigned to alice; you (bob) may not join it."
    )
    with pytest.raises(Invalid, match="is assigned to alice, not to bob"):
        await harness.code(ticket, "bob")


async def test_a_helper_that_floods_the_control_channel_is_cut_off(
    agent_conn: asyncssh.SSHClientConnection, harness: BrokerHarness
) -> None:
    writer, reader, _ = await agent_conn.open_session(subsystem="assist-control", encoding="utf-8")
    assert json.loads(await reader.readline())["type"] == "hello"
    writer.write('{"type": "who"}\n' * 500)

    async def closed() -> None:
        while await reader.readline():
            pass

    await asyncio.wait_for(closed(), 10)
    await harness.wait_audit("T-1", "session.ended")
