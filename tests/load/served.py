"""`assist-broker serve` in a process of its own, for load tests: the load generators in the
test process then do not share the broker's event loop (or its core)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from bench.tunnels import issue_codes
from broker.keys import fingerprint_of
from broker.store import queries as q
from broker.store.db import Store


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    data_dir: Path
    port: int
    http_port: int
    fingerprint: str
    store: Store

    @classmethod
    async def start(cls, folder: Path, *flags: str) -> Served:
        data_dir = folder / "var"
        # the broker's log, kept beside the test's files for the failure report
        log = (folder / "broker.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "broker",
            "serve",
            "--data-dir",
            str(data_dir),
            "--ssh-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            *flags,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            # hundreds of customers and engineers, all from 127.0.0.1 and all at once
            env={**os.environ, "ASSIST_SSH_UNAUTH_PER_ADDRESS": "1000"},
        )
        log.close()  # the child holds its own copy
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readuntil(b"Press Ctrl-C"), 60)).decode()
        port = int(banner.split("listening for SSH on 127.0.0.1:")[1].split()[0])
        http_port = int(banner.split("http://127.0.0.1:")[1].split("/")[0])
        fingerprint = banner.split("host key fingerprint: ")[1].split()[0]
        store = Store(f"sqlite+aiosqlite:///{data_dir / 'broker.db'}")
        return cls(proc, data_dir, port, http_port, fingerprint, store)

    async def engineer(self, name: str = "alice") -> asyncssh.SSHKey:
        key = asyncssh.generate_private_key("ssh-ed25519")
        line = key.export_public_key().decode()
        async with self.store.begin() as db:
            await q.add_account(
                db, name=name, role="engineer", display_name=name, keys=[fingerprint_of(line)]
            )
        return key

    async def codes(self, count: int, engineer: str = "alice") -> list[tuple[str, str]]:
        """(ticket, code) pairs, one ticket each."""
        return await issue_codes(self.store, self.data_dir, count, engineer, "shell,exec")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()  # reaped, not left to the garbage collector
        await self.store.close()
