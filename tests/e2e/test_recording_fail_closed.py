"""Fail closed while a session is live: when its recording cannot be written (a full disk) or
free space runs low, the whole session ends at once with the README's message and reason
``sink_failed``, audited, and the evidence still verifies. The disk is a real tmpfs that really
fills up (tests/smalldisk.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.evidence.signing import Signer
from broker.evidence.verify import verify_store
from tests.harness import BrokerHarness
from tests.ptydriver import PtyDriver
from tests.smalldisk import fill, small_disk

MESSAGE = "Recording is unavailable; the session was stopped to protect the customer."
MiB = 1024 * 1024
PROMPT = rb"[$#] "


@pytest.fixture
async def terminal() -> AsyncIterator[PtyDriver]:
    driver = PtyDriver()
    yield driver
    driver.close()


async def _recorded(disk: Path, needle: bytes, timeout: float = 10.0) -> Path:
    """The recording once ``needle`` was written to it (the recorder writes once a second)."""

    async def poll() -> Path:
        while True:
            for path in disk.rglob("*.cast"):
                if needle in path.read_bytes():
                    return path
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


async def _ended_for_sink_failure(harness: BrokerHarness, ticket: str) -> None:
    """What every fail-closed end looks like from the broker's side."""
    await harness.wait_audit(ticket, "session.ended", reason="sink_failed")
    assert harness.broker.manager.live() == []
    report = await verify_store(
        harness.store,
        Signer.load(harness.settings.data_dir).public,
        harness.settings.data_dir,
        recordings=harness.settings.recordings,
    )
    assert report.ok, report.problems


async def test_full_disk_mid_session_ends_the_session_without_waiting_for_more_data(
    tmp_path: Path, terminal: PtyDriver
) -> None:
    """The shell prints a burst the full disk cannot take, then goes quiet and the engineer
    types nothing: the failed write alone ends the session, promptly."""
    with small_disk(tmp_path / "recordings", 2 * MiB) as disk:
        harness = await BrokerHarness(tmp_path, recordings_dir=disk, recordings_min_free=0).start()
        try:
            ticket = await harness.ticket()
            key = await harness.engineer()
            helper = await harness.connected_helper(ticket)
            await terminal.start(harness.ssh_args(key, ticket, "-tt"))
            await terminal.expect(PROMPT)  # ssh has made the local terminal raw: no local echo
            terminal.type(b"echo ready-$((6*7))\n")
            await terminal.expect(rb"ready-42\r\n")
            await _recorded(disk, b"ready-42")
            fill(disk)

            typed = b"head -c 200000 /dev/zero | tr '\\0' x; echo; echo burst-$((2+3)); sleep 60\n"
            terminal.type(typed)
            await terminal.expect(rb"burst-5\r\n")
            shown = time.monotonic()
            ending = f"\r\n{MESSAGE}\r\n".encode()
            await terminal.expect(re.escape(ending), timeout=10)
            assert await terminal.wait() == 255
            assert time.monotonic() - shown < 10  # not when `sleep 60` ends
            assert await helper.finish() == 1
            assert MESSAGE in helper.text

            await _ended_for_sink_failure(harness, ticket)
            assert (await harness.wait_audit(ticket, "channel.closed"))["reason"] == "sink_failed"
            closed = await harness.wait_audit(ticket, "recording.closed")
            assert "No space left on device" in str(closed["write_failed"])
            # What reached the engineer but not the file is counted, and hashed with the rest.
            relayed = bytes(terminal.output).removesuffix(ending)
            assert closed["output_bytes"] == len(relayed) > 200_000
            assert closed["output_sha256"] == hashlib.sha256(relayed).hexdigest()
            (path,) = disk.rglob("*.cast")
            events = [json.loads(line) for line in path.read_text().splitlines()[1:]]
            in_file = len("".join(e[2] for e in events if e[1] == "o").encode())
            lost = int(str(closed["unwritten_bytes"]))
            assert 0 <= lost - (len(relayed) - in_file) <= len(typed)  # the typed line, maybe
        finally:
            await harness.stop()


async def test_low_free_space_stops_a_live_session_with_everything_recorded(
    tmp_path: Path, terminal: PtyDriver
) -> None:
    """Free space under ``recordings_min_free`` while a shell prints: the session stops before
    any write fails, and every byte the engineer saw is in the recording."""
    with small_disk(tmp_path / "recordings", 8 * MiB) as disk:
        harness = await BrokerHarness(
            tmp_path, recordings_dir=disk, recordings_min_free=4 * MiB
        ).start()
        try:
            ticket = await harness.ticket()
            key = await harness.engineer()
            helper = await harness.connected_helper(ticket)
            await terminal.start(harness.ssh_args(key, ticket, "-tt"))
            await terminal.expect(PROMPT)  # ssh has made the local terminal raw: no local echo
            terminal.type(b"for i in $(seq 100000); do echo tick-$i; sleep 0.01; done\n")
            await terminal.expect(rb"tick-5\r\n")
            fill(disk, leave=2 * MiB)

            ending = f"\r\n{MESSAGE}\r\n".encode()
            await terminal.expect(re.escape(ending), timeout=10)
            assert await terminal.wait() == 255
            assert await helper.finish() == 1
            assert MESSAGE in helper.text
            await _ended_for_sink_failure(harness, ticket)

            closed = await harness.wait_audit(ticket, "recording.closed")
            assert "write_failed" not in closed
            (path,) = disk.rglob("*.cast")
            events = [json.loads(line) for line in path.read_text().splitlines()[1:]]
            shown = "".join(e[2] for e in events if e[1] == "o")
            # Nothing reached the engineer that is not in the recording.
            assert bytes(terminal.output) == shown.encode() + ending
            (marker,) = [e[2] for e in events if e[1] == "m"]
            assert "recordings_min_free" in marker
        finally:
            await harness.stop()


async def test_too_little_free_space_refuses_recorded_channels(tmp_path: Path) -> None:
    needed = shutil.disk_usage(tmp_path).free + 2**40
    harness = await BrokerHarness(tmp_path, recordings_min_free=needed).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        helper = await harness.connected_helper(ticket)
        result = await harness.ssh(key, ticket, "echo should-not-run")
        assert (result.status, result.stdout) == (255, b"")
        assert result.stderr.decode() == f"{MESSAGE}\n"
        assert "opened a command" not in helper.text
        refused = await harness.wait_audit(ticket, "channel.refused")
        assert refused["reason"] == MESSAGE
        assert "recordings_min_free" in str(refused["why"])
        assert await helper.finish() == 1
        assert MESSAGE in helper.text
        await _ended_for_sink_failure(harness, ticket)
    finally:
        await harness.stop()
