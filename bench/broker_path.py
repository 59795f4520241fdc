"""The broker path: ``assist-broker serve`` in its own process (so that its memory and CPU can be
read from /proc), an engineer account, and the real helper connected with a code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.openssh import keygen, ssh_options


def broker_cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "broker", *args, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and CPU seconds x 100 (utime + stime, in clock ticks) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"rss_kib": rss, "cpu_ticks": int(fields[11]) + int(fields[12])}


@dataclass
class BrokerPath:
    folder: Path
    record_input: bool = True
    #: settings.helper_link: "reverse" (the default) or "nested"
    helper_link: str = "reverse"
    #: picked by the broker (port 0) and read from its banner: no race for a free port
    ssh_port: int = 0
    http_port: int = 0
    proc: subprocess.Popen[str] | None = None
    helpers: list[subprocess.Popen[str]] = field(default_factory=list)
    fingerprint: str = ""
    key: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.folder / "var"

    def start(self) -> BrokerPath:
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "ASSIST_LOG_LEVEL": "warning",
            "ASSIST_RECORD_INPUT": "true" if self.record_input else "false",
            "ASSIST_HELPER_LINK": self.helper_link,
            # the bench is hundreds of customers and engineers on one address, all at once
            "ASSIST_CODE_FAIL_PER_SOURCE": "100000",
            "ASSIST_CODE_FAIL_PER_PREFIX": "100000",
            "ASSIST_SSH_UNAUTH_PER_ADDRESS": "2000",
            "ASSIST_SSH_UNAUTH_TOTAL": "4000",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--ssh-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("assist-broker is listening for SSH on "):
                self.ssh_port = int(line.rsplit(":", 1)[1])
            elif "/api/v1/openapi.json" in line:
                self.http_port = int(line.split("://127.0.0.1:")[1].split("/")[0])
            elif line.startswith("host key fingerprint:"):
                self.fingerprint = line.split(":", 1)[1].strip()
                break
            if not line and self.proc.poll() is not None:
                raise RuntimeError("the broker did not start")
        self.key = self.folder / "engineer_ed25519"
        keygen(self.key)
        broker_cli(
            self.data_dir,
            "account",
            "add",
            "bench",
            "--role",
            "engineer",
            "--ssh-key",
            f"{self.key}.pub",
        )
        return self

    def ticket(self, title: str = "bench") -> str:
        out = broker_cli(
            self.data_dir, "ticket", "create", "--title", title, "--severity", "3", "--json"
        )
        return str(json.loads(out)["key"])

    def code(self, ticket: str, scope: str = "shell,exec,sftp") -> str:
        out = broker_cli(
            self.data_dir,
            "code",
            "issue",
            ticket,
            "--engineer",
            "bench",
            "--scope",
            scope,
            "--json",
        )
        return str(json.loads(out)["code"])

    def connect_helper(self, ticket: str) -> None:
        """The real helper, as the customer runs it, until it says it is connected."""
        args = [
            sys.executable,
            "-m",
            "agent_client",
            "connect",
            self.code(ticket),
            "--broker",
            f"127.0.0.1:{self.ssh_port}",
            "--fingerprint",
            self.fingerprint,
            "--yes",
        ]
        if os.geteuid() == 0:
            args.append("--allow-root")
        helper = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert helper.stdout is not None
        for line in helper.stdout:
            if line.startswith("Connected."):
                self.helpers.append(helper)
                return
        raise RuntimeError("the helper did not connect")

    def ssh_args(self, ticket: str, *extra: str) -> list[str]:
        assert self.key is not None
        return [
            "ssh",
            *extra,
            *ssh_options(self.key),
            "-p",
            str(self.ssh_port),
            f"{ticket}@127.0.0.1",
        ]

    def sftp_args(self, ticket: str) -> list[str]:
        assert self.key is not None
        return ["sftp", *ssh_options(self.key), "-P", str(self.ssh_port), f"{ticket}@127.0.0.1"]

    def status(self) -> dict[str, int]:
        assert self.proc is not None
        return proc_status(self.proc.pid)

    def stop(self) -> None:
        for helper in self.helpers:
            helper.terminate()
        for helper in self.helpers:
            try:
                helper.wait(5)
            except subprocess.TimeoutExpired:
                helper.kill()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
