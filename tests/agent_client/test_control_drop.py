"""The helper's control loop on a connection that is already gone: a drop that shows itself
on a write (the customer's end, an answer) ends the loop as ``lost``, like one on a read."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator

import asyncssh
import pytest

from agent_client.console import Console
from agent_client.control import ControlLoop, read_message, send
from agent_client.dial import dial
from assist_protocol import messages as msg
from assist_protocol.constants import CONTROL_SUBSYSTEM
from tests.harness import BrokerHarness


@pytest.fixture
async def gone(
    harness: BrokerHarness,
) -> AsyncIterator[tuple[asyncssh.SSHWriter[str], asyncssh.SSHReader[str]]]:
    """A helper's control channel whose connection was cut after the hello."""
    ticket = await harness.ticket()
    await harness.engineer()
    conn = await dial("127.0.0.1", harness.port, harness.fingerprint, await harness.code(ticket))
    writer, reader, _ = await conn.open_session(subsystem=CONTROL_SUBSYSTEM, encoding="utf-8")
    assert isinstance(await read_message(reader), msg.Hello)
    conn.abort()
    await asyncio.wait_for(conn.wait_closed(), 5)
    yield writer, reader


async def test_a_write_on_a_dropped_connection_says_so(
    gone: tuple[asyncssh.SSHWriter[str], asyncssh.SSHReader[str]],
) -> None:
    writer, _ = gone
    assert send(writer, msg.Who()) is False


async def test_an_end_that_meets_a_drop_is_lost_not_a_crash(
    gone: tuple[asyncssh.SSHWriter[str], asyncssh.SSHReader[str]],
) -> None:
    """The customer pressed Ctrl-C as the connection went: the helper tells the broker after
    a redial (``lost``), instead of stopping on a BrokenPipeError."""
    writer, reader = gone
    with open(os.devnull, encoding="utf-8") as keyboard:
        console = Console(io.StringIO(), keyboard)
        end = asyncio.Event()
        end.set()
        loop = ControlLoop(writer, reader, console, yes=True, end_requested=end, names={})
        outcome = await asyncio.wait_for(loop.run(), 5)
        # the keyboard's reader thread is done with it before it is closed
        assert await asyncio.wait_for(console.next_line(), 5) is None
    assert outcome.how == "lost"
