"""The customer ends the session: the engineer is told within a second, everything is logged."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent_client import consent_ui as ui
from broker.session.core.facts import END_MESSAGES
from tests.harness import BrokerHarness, HelperProc


async def _engineer_at_work(
    harness: BrokerHarness,
) -> tuple[str, HelperProc, asyncio.subprocess.Process]:
    """A connected customer and an engineer's ssh running a long command."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket)
    engineer = await asyncio.create_subprocess_exec(
        *harness.ssh_args(key, ticket),
        "echo started; sleep 60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert engineer.stdout is not None
    assert await asyncio.wait_for(engineer.stdout.readline(), 10) == b"started\n"
    return ticket, helper, engineer


async def test_ctrl_c_in_the_helper_ends_the_engineers_connection(harness: BrokerHarness) -> None:
    ticket, helper, engineer = await _engineer_at_work(harness)
    assert engineer.stderr is not None

    began = time.monotonic()
    helper.interrupt()
    status = await asyncio.wait_for(engineer.wait(), 5)
    elapsed = time.monotonic() - began

    assert elapsed < 1.0, f"the engineer was told after {elapsed:.2f}s"
    assert status == 255
    assert (await engineer.stderr.read()).decode() == "The customer ended the session.\n"
    assert await helper.finish() == 0
    assert ui.ENDED_BY_CUSTOMER in helper.lines
    ended = await harness.wait_audit(ticket, "session.ended")
    assert ended["reason"] == "customer"
    closed = await harness.wait_audit(ticket, "channel.closed")
    assert closed["reason"] == "customer"
    async with harness.store.read() as db:
        from broker.store import queries as q

        (session,) = await q.list_sessions(db)
        assert session.state == "ended" and session.end_reason == "customer"
        assert session.ended_at is not None


async def test_after_the_end_the_ticket_has_no_customer(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket)
    helper.interrupt()
    assert await helper.finish() == 0
    await harness.wait_audit(ticket, "session.ended", reason="customer")

    result = await harness.ssh(key, ticket, "true")

    assert result.status == 255 and b"No customer is connected" in result.stderr


async def test_helper_killed_ends_the_session_as_network(tmp_path: Path) -> None:
    """A helper that vanishes without a word (kill -9) looks like a network drop: the session
    waits out the grace period for it, then ends with reason network."""
    harness = await BrokerHarness(tmp_path, session_grace=1.0).start()
    try:
        ticket = await harness.ticket()
        await harness.engineer()
        helper = await harness.connected_helper(ticket)
        helper.proc.kill()
        await harness.wait_audit(ticket, "session.disconnected", grace_seconds=1.0)
        await harness.wait_audit(ticket, "session.ended", reason="network")
    finally:
        await harness.stop()


async def test_broker_shutdown_tells_engineer_and_helper(harness: BrokerHarness) -> None:
    ticket, helper, engineer = await _engineer_at_work(harness)
    assert engineer.stderr is not None

    await harness.broker.manager.shutdown()

    assert await asyncio.wait_for(engineer.wait(), 5) == 255
    assert b"The broker is shutting down" in await engineer.stderr.read()
    assert await helper.finish() == 1
    assert ui.SESSION_OVER.format(message=END_MESSAGES["shutdown"]) in helper.lines
    await harness.wait_audit(ticket, "session.ended", reason="shutdown")


async def test_receipt_is_shown_and_saved(harness: BrokerHarness) -> None:
    """At the end the customer sees who did what, and --receipt keeps it as JSON."""
    import json
    import os

    ticket = await harness.ticket()
    key = await harness.engineer()
    receipt_file = harness.tmp / "receipt.json"
    helper = await harness.helper(await harness.code(ticket), "--receipt", str(receipt_file))
    await helper.wait_for("Connected.")
    assert (await harness.ssh(key, ticket, "uname -s")).stdout == (
        os.uname().sysname + "\n"
    ).encode()
    await harness.wait_audit(ticket, "channel.closed")
    helper.interrupt()
    assert await helper.finish() == 0

    assert f"Remote support session on ticket {ticket}: Mail queue stuck" in helper.text
    assert "- Alice Smith: uname -s" in helper.text
    receipt = json.loads(receipt_file.read_text())
    assert receipt["ticket"] == ticket
    assert receipt["engineers"] == [{"name": "alice", "display": "Alice Smith"}]
    (channel,) = receipt["channels"]
    assert channel["command"] == "uname -s" and channel["exit_status"] == 0


async def test_receipt_is_mailed_to_the_customer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With [smtp] set, the customer's address on the ticket gets the receipt (a real SMTP
    server on loopback)."""
    import email
    import threading

    from aiosmtpd.controller import Controller

    from tests.e2e.test_refusals import _free_port

    received: list[bytes] = []
    arrived = threading.Event()

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            received.append(envelope.content)
            arrived.set()
            return "250 OK"

    port = _free_port()
    smtp = Controller(Handler(), hostname="127.0.0.1", port=port)
    smtp.start()
    harness = await BrokerHarness(
        tmp_path, extra={"smtp": {"host": "127.0.0.1", "port": port, "from": "desk@example.com"}}
    ).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        helper = await harness.connected_helper(ticket)
        assert (await harness.ssh(key, ticket, "echo mailed")).status == 0
        await harness.wait_audit(ticket, "channel.closed")
        helper.interrupt()
        assert await helper.finish() == 0
        assert await asyncio.to_thread(arrived.wait, 15)
        message = email.message_from_bytes(received[0])
        assert message["To"] == "ops@example.com"
        assert message["Subject"] == f"Receipt: remote support on ticket {ticket}"
        body = message.get_payload()[0].get_payload(decode=True).decode()
        assert "- Alice Smith: echo mailed" in body
        assert ">From" not in body  # no line the mail would have to escape
        await harness.wait_audit(ticket, "receipt.mailed", sent=True, to="ops@example.com")
    finally:
        await harness.stop()
        smtp.stop()
