"""Recordings: asciicast v2 of every shell and exec channel, playable by asciinema, hashed into
the channel row and the audit chain, checked by `audit verify`; and fail-closed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.evidence.signing import Signer
from broker.evidence.verify import verify_store
from broker.store import queries as q
from tests.e2e.test_handoff import cli
from tests.harness import BrokerHarness
from tests.ptydriver import PtyDriver


@pytest.fixture
async def terminal() -> AsyncIterator[PtyDriver]:
    driver = PtyDriver()
    yield driver
    driver.close()


async def _recording(harness: BrokerHarness, ticket: str, kind: str) -> tuple[Path, dict]:
    closed = await harness.wait_audit(ticket, "recording.closed")
    async with harness.store.read() as db:
        (session,) = await q.list_sessions(db)
        channels = [c for c in await q.list_channels(db, session.id) if c.kind == kind]
    channel = channels[-1]
    assert channel.recording_path == closed["path"]
    assert channel.recording_sha256 == closed["sha256"]
    return harness.settings.data_dir / str(channel.recording_path), closed


async def test_pty_recording_plays_in_asciinema_and_verifies(
    harness: BrokerHarness, terminal: PtyDriver
) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    await terminal.start(harness.ssh_args(key, ticket, "-tt"), cols=90, rows=25)
    terminal.type(b"echo recorded-$((6*7))\n")
    await terminal.expect(rb"recorded-42")
    terminal.resize(120, 40)
    terminal.type(b"stty size\n")
    await terminal.expect(rb"\d+ \d+\r\n")
    terminal.type(b"exit\n")
    assert await terminal.wait() == 0

    path, closed = await _recording(harness, ticket, "shell")
    raw = path.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == closed["sha256"] and len(raw) == closed["size"]
    lines = raw.decode().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and (header["width"], header["height"]) == (90, 25)
    assert header["title"].startswith(f"{ticket}: alice on ")
    events = [json.loads(line) for line in lines[1:]]
    codes = {e[1] for e in events}
    assert {"o", "i", "r"} <= codes
    assert ["120x40"] == [e[2] for e in events if e[1] == "r"][:1]
    typed = "".join(e[2] for e in events if e[1] == "i")
    assert "echo recorded-$((6*7))" in typed

    asciinema = shutil.which("asciinema") or str(Path(sys.executable).parent / "asciinema")
    proc = await asyncio.create_subprocess_exec(
        asciinema,
        "cat",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert b"recorded-42" in out and b"echo recorded-$((6*7))" in out

    channel_id = str(closed["channel_id"])
    played = await cli(harness, "recording", "play", channel_id, "--speed", "100", "--idle", "0.1")
    assert played.status == 0, played.stderr
    assert b"recorded-42" in played.stdout
    await harness.wait_audit(ticket, "recording.viewed", how="play")

    signer = Signer.load(harness.settings.data_dir)
    report = await verify_store(harness.store, signer.public, harness.settings.data_dir)
    assert report.ok and report.recordings == 1, report.problems
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(flipped))
    report = await verify_store(harness.store, signer.public, harness.settings.data_dir)
    assert report.summary().startswith("BROKEN: recording of channel ")
    assert "its SHA-256 does not match the record" in report.summary()
    # The channel table is not evidence: hiding the recording there changes nothing.
    from sqlalchemy import update

    from broker.store.models import Channel

    async with harness.store.begin() as db:
        await db.execute(update(Channel).values(recording_path=None, recording_sha256=None))
    report = await verify_store(harness.store, signer.public, harness.settings.data_dir)
    assert "its SHA-256 does not match the record" in report.summary()


async def test_bulk_exec_is_capped_but_counted_and_hashed(tmp_path: Path) -> None:
    harness = await BrokerHarness(tmp_path, recording_cap=10_000).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        await harness.connected_helper(ticket)
        result = await harness.ssh(key, ticket, "head -c 300000 /dev/urandom | od -An -tx1")
        assert result.status == 0
        path, closed = await _recording(harness, ticket, "exec")
        assert closed["truncated"] is True
        assert closed["output_bytes"] == len(result.stdout)
        assert closed["output_sha256"] == hashlib.sha256(result.stdout).hexdigest()
        events = [json.loads(line) for line in path.read_text().splitlines()[1:]]
        kept = sum(len(e[2]) for e in events if e[1] == "o")
        assert 9_000 <= kept <= 10_000
        assert ["recording_cap"] == closed["truncated_by"]
    finally:
        await harness.stop()


async def test_bulk_input_keeps_less_but_all_of_it_is_hashed(tmp_path: Path) -> None:
    """An upload piped through a command: the first recording_input_cap bytes are readable in
    the recording, the whole stream is counted and hashed in the audit."""
    harness = await BrokerHarness(tmp_path, recording_input_cap=5_000).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        await harness.connected_helper(ticket)
        upload = b"line of an uploaded log file\n" * 10_000  # 290,000 bytes
        result = await harness.ssh(key, ticket, "wc -c", stdin=upload)
        assert result.stdout.strip() == str(len(upload)).encode()
        path, closed = await _recording(harness, ticket, "exec")
        assert closed["input_bytes"] == len(upload)
        assert closed["input_sha256"] == hashlib.sha256(upload).hexdigest()
        assert closed["truncated"] is True
        events = [json.loads(line) for line in path.read_text().splitlines()[1:]]
        kept = "".join(e[2] for e in events if e[1] == "i")
        assert len(kept) == 5_000 and upload.decode().startswith(kept)
        assert any(e[1] == "o" and str(len(upload)) in e[2] for e in events)
    finally:
        await harness.stop()


async def test_input_is_not_kept_when_policy_says_so(tmp_path: Path) -> None:
    harness = await BrokerHarness(tmp_path, record_input=False).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        await harness.connected_helper(ticket)
        result = await harness.ssh(key, ticket, "cat", stdin=b"typed secret\n")
        assert result.stdout == b"typed secret\n"
        path, closed = await _recording(harness, ticket, "exec")
        assert closed["record_input"] is False
        assert "input_sha256" not in closed  # not even a hash of what was typed
        events = [json.loads(line) for line in path.read_text().splitlines()[1:]]
        assert [e[1] for e in events] == ["o"]
        assert json.loads(path.read_text().splitlines()[0])["assist"]["record_input"] is False
    finally:
        await harness.stop()


async def test_no_recording_no_access(tmp_path: Path) -> None:
    """Fail closed: when recordings cannot be written, the channel does not open and the
    session ends (the customer is told why)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the recordings directory should be")
    harness = await BrokerHarness(tmp_path, recordings_dir=blocker).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        helper = await harness.connected_helper(ticket)
        result = await harness.ssh(key, ticket, "echo should-not-run")
        assert result.status == 255 and result.stdout == b""
        assert result.stderr.decode() == (
            "Recording is unavailable; the session was stopped to protect the customer.\n"
        )
        assert "opened a command" not in helper.text
        refused = await harness.wait_audit(ticket, "channel.refused")
        assert refused["reason"].startswith("Recording is unavailable")
        assert await helper.finish() == 1
        assert "Recording is unavailable" in helper.text
        await harness.wait_audit(ticket, "session.ended", reason="sink_failed")
    finally:
        await harness.stop()


async def test_prune_deletes_recordings_past_retention_and_the_chain_verifies(
    harness: BrokerHarness,
) -> None:
    ticket = await harness.ticket(severity=4)
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket)
    await harness.ssh(key, ticket, "echo short-lived")
    helper.interrupt()
    await helper.finish()
    path, closed = await _recording(harness, ticket, "exec")
    (harness.settings.data_dir / "broker.toml").write_text('[retention]\n"4" = 0\n"1" = 365\n')

    dry = await cli(harness, "audit", "prune", "--dry-run")
    assert dry.stdout == b"Would delete 1 recordings past retention; their hashes stay.\n"
    assert path.exists()
    done = await cli(harness, "audit", "prune")
    assert done.status == 0 and b"Deleted 1 recordings" in done.stdout
    assert not path.exists()
    pruned = await harness.wait_audit(ticket, "recording.pruned")
    assert pruned["sha256"] == closed["sha256"]
    verified = await cli(harness, "audit", "verify")
    assert verified.status == 0 and verified.stdout.startswith(b"OK: "), verified.stderr


async def test_database_gone_ends_open_sessions_and_refuses_new_channels(
    harness: BrokerHarness,
) -> None:
    """Fail closed: with the database unwritable, open channels end with the message and
    nothing new opens; the outage is recorded once the database is back."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket)
    engineer = await asyncio.create_subprocess_exec(
        *harness.ssh_args(key, ticket),
        "echo started; sleep 60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert engineer.stdout is not None and engineer.stderr is not None
    assert await asyncio.wait_for(engineer.stdout.readline(), 10) == b"started\n"

    store = harness.store  # a failing storage fixture: every write now fails
    saved = store._sessions
    broken = create_async_engine(f"sqlite+aiosqlite:///{harness.tmp}/missing/dir/broker.db")
    store._sessions = async_sessionmaker(broken)
    try:
        assert await asyncio.wait_for(engineer.wait(), 10) == 255
        assert (
            (await engineer.stderr.read())
            .decode()
            .endswith(
                "Recording is unavailable; the session was stopped to protect the customer.\n"
            )
        )
        assert await helper.finish() == 1
        assert "Recording is unavailable" in helper.text
    finally:
        store._sessions = saved
        await broken.dispose()

    async def recorded() -> dict[str, object]:
        while True:
            for action, details in await harness.audit():
                if action == "broker.store_unavailable":
                    return details
            await asyncio.sleep(0.05)

    outage = await asyncio.wait_for(recorded(), 10)
    assert harness.broker.manager.live() == []
    assert len(outage["sessions_ended"]) == 1  # type: ignore[arg-type]
    await harness.wait_audit(ticket, "session.ended", reason="store_unavailable")
