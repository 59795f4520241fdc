"""kill -9 of the broker during a session: the next start marks the session interrupted, the
recording is readable up to the crash, and the evidence verifies."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import asyncssh

from broker.evidence.signing import Signer
from broker.evidence.verify import verify_store
from broker.keys import fingerprint_of, load_code_key
from broker.session.consent import CodeHasher, ConsentCodes
from broker.store import queries as q
from broker.store.db import Store
from tests.harness import SSH, BrokerHarness, HelperProc, helper_env, start_helper


async def test_kill_9_mid_session_then_restart(tmp_path: Path) -> None:
    data = tmp_path / "var"
    store = Store(f"sqlite+aiosqlite:///{data / 'broker.db'}")
    data.mkdir(mode=0o700)
    await store.upgrade()
    key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "alice").write_bytes(key.export_private_key())
    (tmp_path / "alice").chmod(0o600)
    async with store.begin() as db:
        ticket = (await q.create_ticket(db, title="Crash", severity=1)).key
        await q.add_account(
            db,
            name="alice",
            role="engineer",
            display_name="Alice",
            keys=[fingerprint_of(key.export_public_key().decode())],
        )
    code, _ = await ConsentCodes(store, CodeHasher(load_code_key(data))).issue(
        ticket, "alice", "shell,exec", 600
    )
    await store.close()

    serve = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        "serve",
        "--data-dir",
        str(data),
        "--ssh-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=helper_env(),
    )
    engineer: asyncio.subprocess.Process | None = None
    helper: HelperProc | None = None
    try:
        assert serve.stdout is not None
        banner = ""
        while "Press Ctrl-C" not in banner:
            banner += (await asyncio.wait_for(serve.stdout.readline(), 30)).decode()
        port = int(re.search(r"SSH on 127\.0\.0\.1:(\d+)", banner).group(1))
        fingerprint = re.search(r"fingerprint: (SHA256:\S+)", banner).group(1)
        helper = await start_helper(code, port, fingerprint)
        await helper.wait_for("Connected.")
        engineer = await asyncio.create_subprocess_exec(
            SSH,
            "-F",
            "/dev/null",
            "-p",
            str(port),
            "-i",
            str(tmp_path / "alice"),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{ticket}@127.0.0.1",
            "echo crash-marker-$((40+2)); sleep 60",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert engineer.stdout is not None
        assert await asyncio.wait_for(engineer.stdout.readline(), 15) == b"crash-marker-42\n"

        async def flushed() -> Path:
            while True:  # the recorder writes at least once a second
                for path in (data / "recordings").rglob("*.cast"):
                    if b"crash-marker-42" in path.read_bytes():
                        return path
                await asyncio.sleep(0.1)

        recording = await asyncio.wait_for(flushed(), 10)
        os.kill(serve.pid, signal.SIGKILL)
        await serve.wait()
    finally:
        for process in (serve, engineer):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        if helper is not None:
            await helper.stop()

    harness = await BrokerHarness(tmp_path).start()  # the next start, same data dir
    try:
        async with harness.store.read() as db:
            (session,) = await q.list_sessions(db)
            (channel,) = await q.list_channels(db, session.id)
        assert (session.state, session.end_reason) == ("interrupted", "interrupted")
        assert channel.close_reason == "interrupted"
        assert channel.recording_size == recording.stat().st_size
        interrupted = await harness.wait_audit(ticket, "session.interrupted")
        assert "crash or kill" in str(interrupted["reason"])
        lines = recording.read_text().splitlines()
        assert lines[0].startswith('{"version": 2')
        report = await verify_store(harness.store, Signer.load(data).public, data)
        assert report.ok, report.problems
        assert report.recordings == 1
    finally:
        await harness.stop()
