"""The session runner: commands carried out in order, and what happens when one fails (an
audit row the store does not take). With stand-ins for the store and the edges, then with the
real manager and store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from assist_protocol import messages as msg
from assist_protocol.constants import FORWARD_HOST, FORWARD_PORT
from broker.errors import CodeRejected
from broker.session.core import commands as c
from broker.session.core.events import (
    Consented,
    ControlOpened,
    Declined,
    ForwardRequested,
    JoinAnswered,
)
from broker.session.core.facts import State
from broker.session.live import LiveSession, new_id
from tests.broker.test_resume_flapping import Helper
from tests.broker.test_session_core import BOB, HELPER, KEY, new_core, shell
from tests.harness import BrokerHarness

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


class Keeper:
    """The manager's part: records audit rows, fails the ones named in ``failing``."""

    def __init__(self, *failing: str) -> None:
        self.failing = set(failing)
        self.written: list[str] = []
        self.finished: list[str] = []

    async def write(self, live: LiveSession, record: c.Record) -> None:
        if record.action in self.failing:
            raise OSError("database is locked")
        self.written.append(record.action)

    async def finish(self, live: LiveSession, reason: str) -> None:
        self.finished.append(reason)


class Login:
    def __init__(self) -> None:
        self.ended: list[tuple[str, str | None]] = []

    def session_ended(self, reason: str, message: str | None = None) -> None:
        self.ended.append((reason, message))


async def asked(helper: Helper) -> None:
    """Until the helper was asked about a join."""
    while not any(isinstance(m, msg.Join) for m in helper.sent):
        await asyncio.sleep(0.01)


async def started(keeper: Keeper) -> tuple[LiveSession, Helper]:
    live = LiveSession(new_core(), keeper)
    helper = Helper()
    live.attach_helper(HELPER, helper)
    await live.step(ControlOpened(HELPER, "relay-key"))
    await live.step(Consented(HELPER, None, KEY, {}, "reverse"))
    assert await live.ask(ForwardRequested(HELPER, 1, FORWARD_HOST, FORWARD_PORT)) == c.Accept(1)
    return live, helper


async def test_a_record_the_store_refuses_ends_the_session_and_lets_everyone_go() -> None:
    """The customer declines while the store fails: the session still ends, the helper is
    told, the end goes to the manager (which frees the ticket), and the caller sees why."""
    keeper = Keeper("session.declined")
    live = LiveSession(new_core(), keeper)
    helper = Helper()
    live.attach_helper(HELPER, helper)
    await live.step(ControlOpened(HELPER, "relay-key"))
    with pytest.raises(OSError):
        await live.step(Declined(HELPER))
    assert live.state is State.ENDED and live.ended.is_set()
    assert keeper.finished == ["declined"]
    assert helper.goodbyes == ["declined"]


async def test_a_join_the_store_does_not_record_lets_nobody_in() -> None:
    """The customer's yes cannot be recorded: the engineer is not let in, now or later, and
    the session ends (fail closed: it must not go on unaudited)."""
    keeper = Keeper("session.join_allowed")
    live, helper = await started(keeper)
    bob = Login()
    live.attach_login(11, bob)
    asking = asyncio.ensure_future(live.ask(shell(2, 11, BOB)))
    await asyncio.wait_for(asked(helper), 5)
    question = next(m for m in helper.sent if isinstance(m, msg.Join)).id
    with pytest.raises(OSError):
        await live.step(JoinAnswered(HELPER, question, True, False))
    with pytest.raises(OSError):
        await asking
    assert live.state is State.ENDED and live.end_reason == "store_unavailable"
    assert keeper.finished == ["store_unavailable"] and helper.goodbyes == ["store_unavailable"]
    assert bob.ended == [("store_unavailable", None)]
    verdict = await live.ask(shell(3, 11, BOB))
    assert isinstance(verdict, c.Refuse)


async def test_a_step_goes_to_its_end_when_its_caller_is_cancelled() -> None:
    """A helper's login cut off while the broker takes its resume: the step still finishes
    (the core has moved on; half its commands would leave it ahead of what was done)."""

    class Slow(Keeper):
        def __init__(self) -> None:
            super().__init__()
            self.go_on = asyncio.Event()

        async def write(self, live: LiveSession, record: c.Record) -> None:
            if record.action == "session.declined":
                await self.go_on.wait()
            await super().write(live, record)

    keeper = Slow()
    live = LiveSession(new_core(), keeper)
    live.attach_helper(HELPER, Helper())
    caller = asyncio.ensure_future(live.step(Declined(HELPER)))
    while live.state is not State.ENDED:
        await asyncio.sleep(0)
    caller.cancel()
    keeper.go_on.set()
    await asyncio.wait_for(live.ended.wait(), 5)
    assert keeper.written == ["session.declined"] and keeper.finished == ["declined"]


async def test_a_failed_end_is_recorded_once_the_store_is_back(tmp_path: Path) -> None:
    """Real manager and store: one write fails, the session ends, its ticket is free for a new
    code at once, and the watchdog records the end when it next finds the store writable."""
    harness = await BrokerHarness(tmp_path).start()
    try:
        manager = harness.broker.manager
        ticket = await harness.ticket()
        await harness.engineer()
        conn, helper = new_id(), Helper()
        live = await manager.redeem(await harness.code(ticket), "127.0.0.1", conn, helper)
        await live.step(ControlOpened(conn, "relay-key"))
        write, finish = manager.write, manager._record_end

        async def fails_once(live_: LiveSession, record: c.Record) -> None:
            raise OSError("database is locked")

        async def end_fails(live_: LiveSession, reason: str) -> None:
            raise OSError("database is locked")

        manager.write, manager._record_end = fails_once, end_fails  # type: ignore[method-assign]
        with pytest.raises(OSError):
            await live.step(Declined(conn))
        manager.write, manager._record_end = write, finish  # type: ignore[method-assign]
        assert live.ended.is_set() and manager.find(ticket) is None
        assert [s.id for s, _ in manager.unrecorded] == [live.id]
        again = await manager.redeem(await harness.code(ticket), "127.0.0.1", new_id(), Helper())
        assert again is not live
        ended = await harness.wait_audit(ticket, "session.ended")
        assert ended["reason"] == "declined" and manager.unrecorded == []
    except CodeRejected as exc:  # pragma: no cover - the ticket stayed busy
        raise AssertionError(exc.message) from exc
    finally:
        await harness.stop()


async def test_a_helper_whose_control_channel_is_cut_is_hung_up(tmp_path: Path) -> None:
    """The broker cuts a flooding helper's control channel: its SSH connection goes too."""
    from broker.transport.agent_ssh import AgentEdge

    class Conn:
        closed = 0

        def close(self) -> None:
            self.closed += 1

    harness = await BrokerHarness(tmp_path, session_grace=0.5).start()
    try:
        ticket = await harness.ticket()
        await harness.engineer()
        conn = Conn()
        edge = AgentEdge(conn, harness.broker.ctx, "127.0.0.1")  # type: ignore[arg-type]
        manager = harness.broker.manager
        edge.live = await manager.redeem(
            await harness.code(ticket), "127.0.0.1", edge.conn_id, edge
        )
        await edge.live.step(Consented(edge.conn_id, None, HOST_KEY, {}, "nested"))
        await edge.live.ask(ForwardRequested(edge.conn_id, new_id(), FORWARD_HOST, FORWARD_PORT))
        edge._lost()  # what the control channel's close calls
        assert conn.closed >= 1
        await asyncio.wait_for(edge.live.ended.wait(), 5)
        assert edge.live.end_reason == "network"
    finally:
        await harness.stop()


async def test_a_channel_closed_while_the_customer_decides_never_opens(tmp_path: Path) -> None:
    """Bob's shell waits for the customer's yes; he closes it first. The yes comes: nothing
    opens, and the session does not keep a shell for a watcher to find."""
    from assist_protocol.scope import ChannelRequest
    from broker.errors import Denied
    from broker.transport.engineer_ssh import EngineerEdge

    class Conn:
        def close(self) -> None: ...

    class Relay:
        channel: int | None = None

    harness = await BrokerHarness(tmp_path).start()
    try:
        ticket = await harness.ticket()
        await harness.engineer()
        await harness.engineer("bob", "Bob Jones")
        manager, helper = harness.broker.manager, Helper()
        conn = new_id()
        live = await manager.redeem(await harness.code(ticket), "127.0.0.1", conn, helper)
        await live.step(Consented(conn, None, HOST_KEY, {}, "nested"))
        await live.ask(ForwardRequested(conn, new_id(), FORWARD_HOST, FORWARD_PORT))
        edge = EngineerEdge(Conn(), harness.broker.ctx, "127.0.0.1", ticket, lambda _: None)  # type: ignore[arg-type]
        edge.account_id, edge.account_name, edge.account_display = 2, "bob", "Bob Jones"
        relay = Relay()
        request = ChannelRequest("shell", pty=True)
        opening = asyncio.ensure_future(edge.admit("shell", request, "shell", {}, relay))
        await asyncio.wait_for(asked(helper), 5)
        edge.relay_closed(relay)  # type: ignore[arg-type]
        question = next(m for m in helper.sent if isinstance(m, msg.Join)).id
        await live.step(JoinAnswered(conn, question, True, False))
        with pytest.raises(Denied):
            await opening

        async def forgotten() -> None:
            while live.core.door.channels:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(forgotten(), 5)  # the close reached the session
    finally:
        await harness.stop()
