"""Recordings cannot grow without bound: PTY channels are capped like non-PTY ones
(``recording_cap``), and a session's channels together by ``recording_session_cap``. Beyond a
cap the bytes still reach the engineer and are counted and hashed; an asciicast marker says
where and why recording stopped."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.evidence.signing import Signer
from broker.evidence.verify import verify_store
from tests.harness import BrokerHarness
from tests.ptydriver import PtyDriver

PROMPT = rb"[$#] "


@pytest.fixture
async def terminal() -> AsyncIterator[PtyDriver]:
    driver = PtyDriver()
    yield driver
    driver.close()


async def _closed(harness: BrokerHarness, ticket: str, count: int) -> list[dict[str, object]]:
    """The first ``count`` ``recording.closed`` events of ``ticket``, in order."""

    async def poll() -> list[dict[str, object]]:
        while True:
            found = [d for a, d in await harness.audit(ticket) if a == "recording.closed"]
            if len(found) >= count:
                return found[:count]
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), 10)


def _events(harness: BrokerHarness, closed: dict[str, object]) -> list[list[object]]:
    path = harness.settings.data_dir / str(closed["path"])
    assert path.stat().st_size == closed["size"]
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


async def _verifies(harness: BrokerHarness) -> None:
    signer = Signer.load(harness.settings.data_dir)
    report = await verify_store(harness.store, signer.public, harness.settings.data_dir)
    assert report.ok, report.problems


async def test_pty_output_beyond_the_cap_is_counted_and_hashed(
    tmp_path: Path, terminal: PtyDriver
) -> None:
    harness = await BrokerHarness(tmp_path, recording_cap=100_000).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        await harness.connected_helper(ticket)
        await terminal.start(harness.ssh_args(key, ticket, "-tt"))
        await terminal.expect(PROMPT)  # ssh has made the local terminal raw: no local echo
        terminal.type(b"head -c 450000 /dev/urandom | base64 -w 100; echo done-$((6*7))\n")
        await terminal.expect(rb"done-42\r\n", timeout=30)
        terminal.type(b"exit\n")
        assert await terminal.wait() == 0

        (closed,) = await _closed(harness, ticket, 1)
        seen = bytes(terminal.output)  # all of it reached the engineer ...
        assert len(seen) > 600_000 and b"done-42" in seen
        assert closed["truncated"] is True  # ... and all of it is counted and hashed
        assert closed["output_bytes"] == len(seen)
        assert closed["output_sha256"] == hashlib.sha256(seen).hexdigest()
        events = _events(harness, closed)
        kept = sum(len(str(e[2])) for e in events if e[1] == "o")
        assert 90_000 <= kept <= 100_000
        assert int(str(closed["size"])) < 150_000
        (marker,) = [str(e[2]) for e in events if e[1] == "m"]
        assert "recording_cap" in marker
        assert "exit" in "".join(str(e[2]) for e in events if e[1] == "i")  # input still kept
        await _verifies(harness)
    finally:
        await harness.stop()


async def test_session_cap_spans_the_channels_of_a_session(tmp_path: Path) -> None:
    harness = await BrokerHarness(
        tmp_path, recording_cap=200_000, recording_session_cap=250_000
    ).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        await harness.connected_helper(ticket)
        first = await harness.ssh(key, ticket, "head -c 150000 /dev/zero | tr '\\0' a")
        second = await harness.ssh(key, ticket, "head -c 150000 /dev/zero | tr '\\0' b")
        assert first.stdout == b"a" * 150_000 and second.stdout == b"b" * 150_000

        one, two = await _closed(harness, ticket, 2)
        assert one["truncated"] is False
        assert two["truncated"] is True
        assert two["output_bytes"] == 150_000
        assert two["output_sha256"] == hashlib.sha256(second.stdout).hexdigest()
        events = _events(harness, two)
        assert "".join(str(e[2]) for e in events if e[1] == "o") == "b" * 100_000
        (marker,) = [str(e[2]) for e in events if e[1] == "m"]
        assert "recording_session_cap" in marker
        await _verifies(harness)
    finally:
        await harness.stop()
