"""Session lifetimes: a time limit with a warning first, and an idle timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent_client import consent_ui as ui
from broker.session.core.facts import END_MESSAGES
from tests.harness import BrokerHarness


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
