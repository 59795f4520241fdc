"""Admin requests from the command line to the running broker: hand a session over, end it."""

from __future__ import annotations

import asyncio
import sys

from agent_client import consent_ui as ui
from broker.session.core.facts import END_MESSAGES
from tests.harness import BrokerHarness, Result


async def cli(harness: BrokerHarness, *args: str) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        *args,
        "--data-dir",
        str(harness.settings.data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Result(proc.returncode, out, err)


async def test_handoff_leaves_the_first_engineer_out(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    alice = await harness.engineer()
    bob = await harness.engineer("bob", "Bob Jones")
    helper = await harness.helper(await harness.code(ticket), yes=False)
    await helper.wait_for("Allow? [y/N]")
    await helper.type("y")
    await helper.wait_for("Connected.")
    alice_ssh = await asyncio.create_subprocess_exec(
        *harness.ssh_args(alice, ticket),
        "echo started; sleep 60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert alice_ssh.stdout is not None and alice_ssh.stderr is not None
    assert await asyncio.wait_for(alice_ssh.stdout.readline(), 10) == b"started\n"
    (session,) = harness.broker.manager.live()

    handed = await cli(harness, "session", "handoff", session.id[:8], "--to", "bob")

    assert handed.status == 0, handed.stderr
    assert b"is handed over to bob (disconnected: alice)" in handed.stdout
    assert await asyncio.wait_for(alice_ssh.wait(), 5) == 255
    assert b"The session was handed over to another engineer." in await alice_ssh.stderr.read()
    await helper.wait_for("The session was handed over to Bob Jones")
    refused = await harness.ssh(alice, ticket, "true")
    assert (
        refused.status == 255
        and b"was handed over to bob; only they may continue" in refused.stderr
    )
    joining = asyncio.ensure_future(harness.ssh(bob, ticket, "echo bob-here"))
    await helper.wait_for("Bob Jones from support wants to join")
    await helper.type("y")
    assert (await joining).stdout == b"bob-here\n"
    handoff = await harness.wait_audit(ticket, "session.handoff")
    assert handoff["to"] == "bob" and handoff["disconnected"] == ["alice"]


async def test_admin_ends_a_session_from_the_command_line(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    await harness.engineer()
    helper = await harness.connected_helper(ticket)
    (session,) = harness.broker.manager.live()

    ended = await cli(harness, "session", "end", session.id)

    assert ended.status == 0 and ended.stdout == f"Session {session.id} ended.\n".encode()
    assert await helper.finish() == 1
    over = ui.SESSION_OVER.format(message=END_MESSAGES["admin"])
    assert over in helper.lines  # word for word
    await harness.wait_audit(ticket, "session.ended", reason="admin")
    again = await cli(harness, "session", "end", session.id)
    assert again.status == 1
    assert again.stderr.decode() == f"assist-broker: No live session {session.id} on this broker.\n"
