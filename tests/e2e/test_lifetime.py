"""Session lifetimes: a time limit with a warning first, and an idle timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent_client import consent_ui as ui
from broker.session.lifetime import Lifetime, Limits
from broker.session.model import END_MESSAGES
from tests.harness import BrokerHarness


def test_lifetime_decides_what_is_due_without_io() -> None:
    now = [100.0]
    life = Lifetime(Limits(max_duration=60, idle=20, warn_before=10), clock=lambda: now[0])
    assert life.due() == (None, 20.0)  # idle comes first
    now[0] = 115.0
    life.touch()
    assert life.due()[0] is None
    now[0] = 151.0
    life.touch()
    assert life.due()[0] == "warn" and life.due()[0] is None  # warned once
    now[0] = 160.0
    life.touch()
    assert life.due()[0] == "timeout"
    now[0], life.last_activity = 150.0, 100.0
    assert life.due()[0] == "idle"
    severe = Limits.for_severity(1, normal=10, severe=99, idle=1, warn_before=1)
    assert severe.max_duration == 99
    assert Limits.for_severity(3, normal=10, severe=99, idle=1, warn_before=1).max_duration == 10


async def test_time_limit_warns_then_ends_the_session(tmp_path: Path) -> None:
    harness = await BrokerHarness(
        tmp_path, session_max=3.0, session_max_severe=3.0, session_warn_before=2.0
    ).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        helper = await harness.connected_helper(ticket)
        await helper.wait_for("The session can last up to 3 seconds")
        engineer = await asyncio.create_subprocess_exec(
            *harness.ssh_args(key, ticket),
            "echo started; sleep 60",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert engineer.stdout is not None and engineer.stderr is not None
        assert await asyncio.wait_for(engineer.stdout.readline(), 10) == b"started\n"
        await helper.wait_for("The session will end in 1 minute (its time limit).")
        assert await asyncio.wait_for(engineer.wait(), 10) == 255
        assert b"The session reached its time limit and has ended." in await engineer.stderr.read()
        assert await helper.finish() == 1
        assert ui.SESSION_OVER.format(message=END_MESSAGES["timeout"]) in helper.lines
        await harness.wait_audit(ticket, "session.ended", reason="timeout")
    finally:
        await harness.stop()


async def test_idle_session_ends(tmp_path: Path) -> None:
    harness = await BrokerHarness(tmp_path, session_idle=1.0).start()
    try:
        ticket = await harness.ticket()
        await harness.engineer()
        helper = await harness.connected_helper(ticket)
        assert await helper.finish() == 1
        assert ui.SESSION_OVER.format(message=END_MESSAGES["idle"]) in helper.lines
        await harness.wait_audit(ticket, "session.ended", reason="idle")
    finally:
        await harness.stop()
