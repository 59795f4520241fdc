"""The first remote session end to end, with the real helper and the real OpenSSH client."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from tests.harness import BrokerHarness


async def test_exec_exit_status_and_stderr_kept_apart(harness: BrokerHarness) -> None:
    """`ssh T-1@broker 'cmd; exit 3'` prints the customer's output and exits 3."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)

    result = await harness.ssh(key, ticket, "uname -s; echo to-stderr >&2; exit 3")

    assert result.status == 3
    assert result.stdout == (os.uname().sysname + "\n").encode()
    assert result.stderr == b"to-stderr\n"
    closed = await harness.wait_audit(ticket, "channel.closed", exit_status=3)
    assert closed["kind"] == "exec"
    assert closed["bytes_out"] == len(result.stdout) + len(result.stderr)


async def test_stdin_eof_reaches_the_customer(harness: BrokerHarness) -> None:
    """A 1 MiB stdin followed by EOF is counted exactly by `wc -c` on the customer's side."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    payload = os.urandom(1024 * 1024)

    counted = await harness.ssh(key, ticket, "wc -c", stdin=payload)
    digest = await harness.ssh(key, ticket, "sha256sum", stdin=payload)

    assert counted.status == 0 and counted.stdout.split() == [b"1048576"]
    assert digest.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()


async def test_command_runs_as_the_customers_user(harness: BrokerHarness) -> None:
    """The engineer's command runs as the user who started the helper, in their home."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)

    result = await harness.ssh(key, ticket, "id -un; echo $ASSIST_SESSION")

    import getpass

    assert result.stdout.decode().split() == [getpass.getuser(), "1"]


@pytest.mark.smoke
async def test_session_and_channels_are_logged_against_the_ticket(harness: BrokerHarness) -> None:
    """Code issued, redeemed, consented, started, channel opened/closed: all on the ticket."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    await harness.ssh(key, ticket, "true")
    await harness.wait_audit(ticket, "channel.closed", exit_status=0)

    actions = [action for action, _ in await harness.audit(ticket)]

    assert actions[:5] == [
        "ticket.created",
        "consent.issued",
        "consent.redeemed",
        "session.consented",
        "session.started",
    ]
    assert actions[5:7] == ["channel.opened", "channel.closed"]
    opened = dict(await harness.audit(ticket))["channel.opened"]
    assert opened["command"] == "true" and opened["pty"] is False


async def test_twenty_sessions_at_once_move_data_intact(harness: BrokerHarness) -> None:
    """20 tickets, 20 helpers, 20 engineers' ssh at once, 1 MiB each: every checksum matches."""
    key = await harness.engineer()
    tickets = [await harness.ticket(title=f"Ticket {i}") for i in range(20)]
    await asyncio.gather(*(harness.connected_helper(t) for t in tickets))
    payloads = {t: os.urandom(1024 * 1024) for t in tickets}

    results = await asyncio.gather(
        *(harness.ssh(key, t, "sha256sum", stdin=payloads[t], timeout=60) for t in tickets)
    )

    for ticket, result in zip(tickets, results, strict=True):
        assert result.status == 0, result.stderr
        assert result.stdout.split()[0].decode() == hashlib.sha256(payloads[ticket]).hexdigest()


async def test_healthz_counts_live_sessions(harness: BrokerHarness) -> None:
    """The HTTP side answers on its own port and sees the live session."""
    import aiohttp

    ticket = await harness.ticket()
    await harness.engineer()
    url = f"http://127.0.0.1:{harness.http_port}/healthz"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok", "live_sessions": 0, "tunnels": 0}
        await harness.connected_helper(ticket)
        async with http.get(url) as response:
            assert await response.json() == {"status": "ok", "live_sessions": 1, "tunnels": 1}


async def test_a_session_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """The same flow with the broker's state in PostgreSQL (skipped where no server runs)."""
    harness = await BrokerHarness(tmp_path, database_url=pg_url).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        helper = await harness.connected_helper(ticket)
        result = await harness.ssh(key, ticket, "echo on-postgres; exit 4")
        assert (result.status, result.stdout) == (4, b"on-postgres\n")
        helper.interrupt()
        assert await helper.finish() == 0
        await harness.wait_audit(ticket, "session.ended", reason="customer")
        await harness.wait_audit(ticket, "channel.closed", exit_status=4)
    finally:
        await harness.stop()


async def test_signals_reach_the_customers_command(harness: BrokerHarness) -> None:
    """An SSH `signal` request reaches the command; its exit signal comes back to the engineer."""
    import asyncssh

    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    async with asyncssh.connect(
        "127.0.0.1",
        harness.port,
        username=ticket,
        client_keys=[str(key)],
        known_hosts=str(harness.known_hosts),
        agent_path=None,
        config=None,
    ) as conn:
        process = await conn.create_process("echo ready; exec sleep 60")
        assert await asyncio.wait_for(process.stdout.readline(), 10) == "ready\n"
        process.send_signal("TERM")
        completed = await asyncio.wait_for(process.wait(), 10)
    assert completed.exit_signal is not None and completed.exit_signal[0] == "TERM"
    closed = await harness.wait_audit(ticket, "channel.closed", exit_signal="TERM")
    assert closed["exit_status"] is None
