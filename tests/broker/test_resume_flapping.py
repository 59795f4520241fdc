"""The broker's side of a flapping network, on a real broker and store without the helper:
resumes cut short before the helper's forward is up, and drops that follow a return at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.errors import CodeRejected
from broker.session.model import LiveSession
from tests.harness import BrokerHarness

GRACE = 1.0
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[BrokerHarness, LiveSession]]:
    """A started session as the broker keeps it, its helper stood in for by the test."""
    harness = await BrokerHarness(tmp_path, session_grace=GRACE).start()
    manager = harness.broker.manager
    ticket = await harness.ticket()
    await harness.engineer()
    live = await manager.redeem(await harness.code(ticket), "127.0.0.1")
    await manager.consented(live, None, HOST_KEY, {})
    await manager.started(live)
    yield harness, live
    await harness.stop()


async def test_resumes_cut_before_the_forward_never_lock_the_helper_out(
    running: tuple[BrokerHarness, LiveSession],
) -> None:
    """Each resume sends a new token; a connection cut before the helper read it leaves the
    helper with the one it logged in with, however often that happens in a row."""
    harness, live = running
    manager = harness.broker.manager
    held = live.new_resume_token()  # given at consent
    for _ in range(3):
        assert await manager.resume(held, "127.0.0.1") is live
        live.new_resume_token()  # sent with "resumed", lost with the connection
    assert await manager.resume(held, "127.0.0.1") is live
    read = live.new_resume_token()  # this one arrives; then the forward request is cut
    assert await manager.resume(read, "127.0.0.1") is live
    newest = live.new_resume_token()
    await manager.started(live)  # back with its forward: the helper has read the newest
    for spent in (held, read):
        with pytest.raises(CodeRejected):
            await manager.resume(spent, "127.0.0.1")
    assert await manager.resume(newest, "127.0.0.1") is live


async def test_a_drop_right_after_a_return_gets_its_own_grace_period(
    running: tuple[BrokerHarness, LiveSession],
) -> None:
    """The helper is back and gone again before the wait for the first drop has woken up:
    the second drop is still recorded and still ends the session once its grace is over."""
    harness, live = running
    manager = harness.broker.manager
    first = asyncio.create_task(manager.dropped(live, GRACE))
    await harness.wait_audit(live.ticket_key, "session.disconnected")
    await manager.started(live)  # back ...
    await manager.dropped(live, GRACE)  # ... and gone again in the same moment
    await asyncio.wait_for(live.ended.wait(), GRACE + 5)
    await asyncio.wait_for(first, 5)
    assert live.end_reason == "network"
    actions = [name for name, _ in await harness.audit(live.ticket_key)]
    assert actions.count("session.disconnected") == 2
    assert actions.index("session.resumed") < actions.index("session.ended")
