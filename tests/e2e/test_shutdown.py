"""A broker that stops leaves every recording closed and hashed in the audit chain, also for
channels whose engineer's client is slow to close them."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from broker.store import queries as q
from broker.store.db import Store
from tests.harness import BrokerHarness


async def test_stop_waits_for_a_channel_its_client_closes_late(tmp_path: Path) -> None:
    """The engineer's ssh answers nothing (stopped): its channel closes only when the broker
    hangs up on it, after the session ended. The recording is still closed and hashed before
    the store closes (it was cut off with the store before)."""
    harness = await BrokerHarness(tmp_path).start()
    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket)
    engineer = await asyncio.create_subprocess_exec(
        *harness.ssh_args(key, ticket),
        "echo working; sleep 60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert engineer.stdout is not None
        assert await asyncio.wait_for(engineer.stdout.readline(), 30) == b"working\n"
        await harness.wait_audit(ticket, "channel.opened")
        engineer.send_signal(signal.SIGSTOP)
        await harness.broker.stop()
    finally:
        engineer.send_signal(signal.SIGCONT)
        engineer.kill()
        await engineer.wait()
        await helper.stop()

    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'broker.db'}")
    try:
        async with store.read() as db:
            events = await q.list_audit(db, await q.get_ticket(db, ticket))
    finally:
        await store.close()
    actions = [e.action for e in events]
    assert "session.ended" in actions and "channel.closed" in actions
    (closed,) = [e.details for e in events if e.action == "recording.closed"]
    assert closed["sha256"] and closed["size"]
