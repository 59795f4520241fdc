"""The session runner on a flapping network, with a real broker and store and the helper stood
in for by the test: resumes cut short before the helper's forward is up, and drops that follow
a return at once. (The core's side of the same is in test_session_core.py, without I/O.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from assist_protocol import messages as msg
from assist_protocol.constants import FORWARD_HOST, FORWARD_PORT
from broker.errors import CodeRejected
from broker.session.core.commands import Accept
from broker.session.core.events import Consented, ControlOpened, ForwardRequested, HelperLost
from broker.session.live import LiveSession, new_id
from tests.harness import BrokerHarness

GRACE = 1.0
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


class Helper:
    """A helper connection as the runner sees it: what it was sent, whether it was closed."""

    def __init__(self) -> None:
        self.conn = new_id()
        self.sent: list[msg.Message] = []
        self.hung_up = False
        self.goodbyes: list[str] = []

    def send(self, message: msg.Message) -> None:
        self.sent.append(message)

    def hang_up(self) -> None:
        self.hung_up = True

    def goodbye(self, reason: str) -> None:
        self.goodbyes.append(reason)

    def token(self) -> str:
        """The newest resume token this connection was sent."""
        tokens = [m.resume for m in self.sent if isinstance(m, msg.Consented | msg.Resumed)]
        return f"{tokens[-1]}"


async def forward(live: LiveSession, helper: Helper) -> None:
    verdict = await live.ask(ForwardRequested(helper.conn, new_id(), FORWARD_HOST, FORWARD_PORT))
    assert isinstance(verdict, Accept)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[BrokerHarness, LiveSession, Helper]]:
    """A started session as the broker keeps it."""
    harness = await BrokerHarness(tmp_path, session_grace=GRACE).start()
    manager = harness.broker.manager
    ticket = await harness.ticket()
    await harness.engineer()
    helper = Helper()
    live = await manager.redeem(await harness.code(ticket), "127.0.0.1", helper.conn, helper)
    await live.step(ControlOpened(helper.conn, "relay-key"))
    await live.step(Consented(helper.conn, None, HOST_KEY, {}, "nested"))
    await forward(live, helper)
    yield harness, live, helper
    await harness.stop()


async def resume(harness: BrokerHarness, token: str) -> tuple[LiveSession, Helper]:
    helper = Helper()
    live = await harness.broker.manager.resume(token, "127.0.0.1", helper.conn, helper)
    await live.step(ControlOpened(helper.conn, "relay-key"))
    return live, helper


async def test_resumes_cut_before_the_forward_never_lock_the_helper_out(
    running: tuple[BrokerHarness, LiveSession, Helper],
) -> None:
    """Each resume sends a new token; a connection cut before the helper read it leaves the
    helper with the one it logged in with, however often that happens in a row."""
    harness, live, first = running
    held = first.token()  # given at consent
    for _ in range(3):
        again, helper = await resume(harness, held)
        assert again is live and helper.sent  # sent "resumed" with a new token, lost
        await live.step(HelperLost(helper.conn))
    assert first.hung_up  # the first connection, not noticed dead, was closed
    again, helper = await resume(harness, held)
    read = helper.token()  # this one arrives; then the forward request is cut
    await live.step(HelperLost(helper.conn))
    again, helper = await resume(harness, read)
    await forward(live, helper)  # back with its forward: the helper has read the newest
    newest = helper.token()
    for spent in (held, read):
        with pytest.raises(CodeRejected):
            await harness.broker.manager.resume(spent, "127.0.0.1", new_id())
    refused = await harness.wait_audit(live.ticket_key, "session.resume_refused")
    assert refused["reason"] == "wrong_token"
    await live.step(HelperLost(helper.conn))
    assert (await resume(harness, newest))[0] is live
    assert live.end_reason is None


async def test_a_drop_right_after_a_return_gets_its_own_grace_period(
    running: tuple[BrokerHarness, LiveSession, Helper],
) -> None:
    """The helper is back and gone again in the same moment: the second drop is recorded and
    still ends the session once its own grace is over (the runner's timer sees to it)."""
    harness, live, helper = running
    await live.step(HelperLost(helper.conn))
    await harness.wait_audit(live.ticket_key, "session.disconnected")
    again, back = await resume(harness, helper.token())
    assert again is live
    await forward(live, back)
    await live.step(HelperLost(back.conn))
    await asyncio.wait_for(live.ended.wait(), GRACE + 5)
    assert live.end_reason == "network"
    assert back.goodbyes == []  # nobody was there to tell
    actions = [name for name, _ in await harness.audit(live.ticket_key)]
    assert actions.count("session.disconnected") == 2
    assert actions.index("session.resumed") < actions.index("session.ended")
