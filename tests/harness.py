"""Real parts for tests: an in-process broker on 127.0.0.1 port 0, the real helper as a child
process, and the real OpenSSH client. Every wait has a timeout; nothing sleeps and hopes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from broker.app import Broker
from broker.config import Settings
from broker.keys import fingerprint_of
from broker.store import queries as q

SSH = "/usr/bin/ssh"
TIMEOUT = 20.0


@dataclass
class Result:
    status: int
    stdout: bytes
    stderr: bytes


@dataclass
class HelperProc:
    """A running ``assist-helper connect`` child process and what it printed (also questions
    that wait on the same line for an answer)."""

    proc: asyncio.subprocess.Process
    output: str = ""
    ended: bool = False
    _reader: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(4096):
            async with self._changed:
                self.output += chunk.decode(errors="replace")
                self._changed.notify_all()
        async with self._changed:
            self.ended = True
            self._changed.notify_all()

    @property
    def lines(self) -> list[str]:
        return self.output.rstrip("\n").split("\n") if self.output else []

    @property
    def text(self) -> str:
        return self.output

    def count(self, needle: str) -> int:
        return self.output.count(needle)

    async def wait_for(self, needle: str, timeout: float = TIMEOUT, count: int = 1) -> str:
        """Wait until ``needle`` was printed ``count`` times; return the line of the last one."""

        def found() -> str | None:
            if self.output.count(needle) < count:
                return None
            at = -1
            for _ in range(count):
                at = self.output.index(needle, at + 1)
            start = self.output.rfind("\n", 0, at) + 1
            end = self.output.find("\n", at)
            return self.output[start : end if end >= 0 else None]

        async def waiter() -> str:
            async with self._changed:
                await self._changed.wait_for(lambda: found() is not None or self.ended)
            line = found()
            if line is None:
                raise AssertionError(f"helper ended without printing {needle!r}:\n{self.text}")
            return line

        try:
            return await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            raise AssertionError(f"helper did not print {needle!r}:\n{self.text}") from None

    async def type(self, line: str) -> None:
        """The customer types a line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = TIMEOUT) -> int:
        status = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        return status

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


#: the Python the helper runs on: this one, or ``TEST_HELPER_PYTHON`` (e.g. a Python 3.9
#: venv with asyncssh, to run the end-to-end tests with the customer's oldest python3)
HELPER_PYTHON = os.environ.get("TEST_HELPER_PYTHON") or sys.executable


def helper_env() -> dict[str, str]:
    """The customer's environment: ours, without an agent or a display of our own."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "DISPLAY")}
    if HELPER_PYTHON != sys.executable:  # this project's helper, not an installed one
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return {**env, "PYTHONUNBUFFERED": "1"}


async def start_helper(
    code: str, port: int, fingerprint: str, *extra: str, yes: bool = True
) -> HelperProc:
    """The real helper as a child process (an empty ``fingerprint`` leaves the pin out)."""
    args = ["connect", code, "--broker", f"127.0.0.1:{port}"]
    if fingerprint:
        args += ["--fingerprint", fingerprint]
    if yes:
        args.append("--yes")
    if os.geteuid() == 0:
        args.append("--allow-root")  # the test machine runs as root
    proc = await asyncio.create_subprocess_exec(
        HELPER_PYTHON,
        "-m",
        "agent_client",
        *args,
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=helper_env(),
    )
    helper = HelperProc(proc)
    helper.start_reading()
    return helper


def helper_argv(harness: BrokerHarness, code: str, *extra: str) -> list[str]:
    root = ["--allow-root"] if os.geteuid() == 0 else []
    return [
        HELPER_PYTHON,
        "-m",
        "agent_client",
        "connect",
        code,
        "--broker",
        f"127.0.0.1:{harness.port}",
        "--fingerprint",
        harness.fingerprint,
        *root,
        *extra,
    ]


class BrokerHarness:
    """A real broker plus the admin steps a test needs (tickets, engineers, codes)."""

    def __init__(self, tmp: Path, *, database_url: str | None = None, **overrides: object) -> None:
        self.tmp = tmp
        values: dict[str, object] = {
            "data_dir": tmp / "var",
            "ssh_host": "127.0.0.1",
            "ssh_port": 0,
            "http_port": 0,
            "database_url": database_url,
            "keepalive_interval": 30.0,
            # the machine's free disk is not what a test is about (16 MiB still protects it)
            "recordings_min_free": 16 * 1024 * 1024,
            **overrides,
        }
        self.settings = Settings(**values)  # type: ignore[arg-type]
        self.broker = Broker(self.settings)
        self.port = 0
        self.fingerprint = ""
        self.helpers: list[HelperProc] = []
        self.known_hosts = tmp / "known_hosts"

    async def start(self) -> BrokerHarness:
        listening = await self.broker.start()
        self.port, self.fingerprint = listening.ssh_port, listening.fingerprint
        self.http_port = listening.http_port
        assert self.broker.keys is not None
        host_key = self.broker.keys.host_key.export_public_key().decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_key}\n")
        return self

    async def stop(self) -> None:
        for helper in self.helpers:
            await helper.stop()
        await self.broker.stop()

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.broker.store

    # --- admin steps ---------------------------------------------------------------------

    async def ticket(self, title: str = "Mail queue stuck", severity: int = 2) -> str:
        async with self.store.begin() as db:
            ticket = await q.create_ticket(
                db, title=title, severity=severity, customer_email="ops@example.com"
            )
            return ticket.key

    async def engineer(self, name: str = "alice", display: str = "Alice Smith") -> Path:
        """Create an engineer account with a fresh key; return the private key's path."""
        key = asyncssh.generate_private_key("ssh-ed25519")
        path = self.tmp / name
        path.write_bytes(key.export_private_key())
        path.chmod(0o600)
        line = key.export_public_key().decode()
        async with self.store.begin() as db:
            await q.add_account(
                db, name=name, role="engineer", display_name=display, keys=[fingerprint_of(line)]
            )
        return path

    async def token(
        self, name: str, role: str, *, password: str | None = None, display: str | None = None
    ) -> str:
        """An API token for ``name`` (the account is created with ``role`` if new)."""
        from broker import credentials as access

        async with self.store.begin() as db:
            account = await q.find_account(db, name)
            if account is None:
                account = await q.add_account(
                    db, name=name, role=role, display_name=display or name.title()
                )
            if password is not None:
                account.password_hash = access.hash_password(password)
            secret, _ = await access.create_token(db, account, "test", None)
        return secret

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def code(
        self, ticket: str, engineer: str = "alice", ttl: float = 600, scope: str = "shell,exec"
    ) -> str:
        code, _ = await self.broker.manager.codes.issue(ticket, engineer, scope, ttl)
        return code

    # --- the customer's helper -----------------------------------------------------------

    async def helper(
        self, code: str, *extra: str, fingerprint: str | None = None, yes: bool = True
    ) -> HelperProc:
        pin = self.fingerprint if fingerprint is None else fingerprint
        helper = await start_helper(code, self.port, pin, *extra, yes=yes)
        self.helpers.append(helper)
        return helper

    async def connected_helper(
        self, ticket: str, engineer: str = "alice", scope: str = "shell,exec"
    ) -> HelperProc:
        helper = await self.helper(await self.code(ticket, engineer, scope=scope))
        await helper.wait_for("Connected.")
        return helper

    # --- the engineer's stock OpenSSH client ---------------------------------------------

    def ssh_args(self, key: Path, user: str, *extra: str) -> list[str]:
        # ssh takes the first value of an option: the test's own options come first
        return [
            SSH,
            *extra,
            "-F",
            "/dev/null",
            "-p",
            str(self.port),
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{user}@127.0.0.1",
        ]

    async def ssh(
        self,
        key: Path,
        user: str,
        *command: str,
        stdin: bytes | None = None,
        options: tuple[str, ...] = (),
        timeout: float = TIMEOUT,
    ) -> Result:
        proc = await asyncio.create_subprocess_exec(
            *self.ssh_args(key, user, *options),
            *command,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return Result(proc.returncode, out, err)

    async def audit(self, ticket: str | None = None) -> list[tuple[str, dict[str, object]]]:
        async with self.store.read() as db:
            t = await q.get_ticket(db, ticket) if ticket else None
            return [(e.action, e.details) for e in await q.list_audit(db, t)]

    async def wait_audit(
        self, ticket: str | None, action: str, timeout: float = 5.0, **match: object
    ) -> dict[str, object]:
        """Wait until the audit (of ``ticket``, or all of it) holds ``action`` whose details
        include ``match``."""

        async def poll() -> dict[str, object]:
            while True:
                for name, details in await self.audit(ticket):
                    if name == action and all(details.get(k) == v for k, v in match.items()):
                        return details
                await asyncio.sleep(0.02)

        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {action} {match} in {await self.audit(ticket)}") from None
