"""The README's path, command by command: `assist-broker serve` in its own process, the admin
commands, the helper, the engineer's ssh, then `session list` / `audit show` and a clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import asyncssh

from tests.harness import SSH, start_helper


async def run(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_readme_flow_with_serve_in_its_own_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ASSIST_DATA_DIR", None)
    serve = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        "serve",
        "--ssh-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert serve.stdout is not None
    try:
        await _readme_flow(serve, tmp_path, env)
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()


async def _readme_flow(
    serve: asyncio.subprocess.Process, tmp_path: Path, env: dict[str, str]
) -> None:
    assert serve.stdout is not None
    banner = ""
    while "Press Ctrl-C to stop." not in banner:
        line = await asyncio.wait_for(serve.stdout.readline(), 30)
        if not line:
            assert serve.stderr is not None
            raise AssertionError(f"serve ended early: {banner}{await serve.stderr.read()!r}")
        banner += line.decode()
    port = int(re.search(r"listening for SSH on 127\.0\.0\.1:(\d+)", banner).group(1))
    fingerprint = re.search(r"host key fingerprint: (SHA256:\S+)", banner).group(1)
    assert f"assist-helper connect --broker 127.0.0.1:{port} --fingerprint {fingerprint}" in banner
    web = re.search(r"Web UI and API for auditors: (http://127\.0\.0\.1:\d+)/", banner).group(1)
    assert f"curl -fsSLo assist-helper.pyz {web}/helper && python3 assist-helper.pyz" in banner
    data = tmp_path / "var"
    names = {p.name for p in data.iterdir() if not p.name.startswith("broker.db")}
    keys = {
        "audit_ed25519_key",
        "audit_seal.key",
        "broker.lock",
        "code_hmac.key",
        "relay_ed25519_key",
        "ssh_host_ed25519_key",
    }
    assert keys | {"listening.json"} <= names <= keys | {"audit_checkpoints.log", "listening.json"}
    listening = json.loads((data / "listening.json").read_text())
    assert (listening["host"], listening["port"]) == ("127.0.0.1", port), listening
    for name in (*keys, "broker.db"):
        assert (data / name).stat().st_mode & 0o077 == 0, name

    try:
        status, out, _ = await run(
            "ticket",
            "create",
            "--title",
            "Mail queue stuck",
            "--severity",
            "2",
            "--customer-email",
            "ops@example.com",
            cwd=tmp_path,
        )
        assert (status, out) == (0, "T-1\n")
        key = asyncssh.generate_private_key("ssh-ed25519")
        (tmp_path / "alice").write_bytes(key.export_private_key())
        (tmp_path / "alice").chmod(0o600)
        (tmp_path / "alice.pub").write_bytes(key.export_public_key())
        status, out, err = await run(
            "account",
            "add",
            "alice",
            "--role",
            "engineer",
            "--name",
            "Alice Smith",
            "--ssh-key",
            "alice.pub",
            cwd=tmp_path,
        )
        assert status == 0, err
        status, out, err = await run(
            "code",
            "issue",
            "T-1",
            "--engineer",
            "alice",
            "--ttl",
            "5m",
            "--scope",
            "shell",
            cwd=tmp_path,
        )
        assert status == 0, err
        code = re.search(r"Consent code for T-1: (\d{3}-\d{3}-\d{3})\n", out).group(1)

        helper = await start_helper(code, port, fingerprint)
        line = await helper.wait_for("Allow? [y/N]")
        assert line.startswith(
            "Alice Smith from support asks to open a shell on this computer for ticket T-1 "
            "(Severity 2: Mail queue stuck). Allow? [y/N]"
        )
        await helper.wait_for("Connected.")
        await helper.wait_for("Press Ctrl-C at any time to end the session.")

        ssh = await asyncio.create_subprocess_exec(
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
            "T-1@127.0.0.1",
            "uname -a; exit 3",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out_b, err_b = await asyncio.wait_for(ssh.communicate(), 20)
        # The scope is `shell` only, so a command is refused and says why.
        assert ssh.returncode == 255
        assert b"running commands is not in the consent (granted: shell)" in err_b

        helper.interrupt()
        assert await helper.finish() == 0

        status, out, _ = await run("session", "list", "--ticket", "T-1", "--json", cwd=tmp_path)
        (session,) = json.loads(out)
        assert session["state"] == "ended" and session["end_reason"] == "customer"
        assert session["granted_scope"] == "shell" and session["engineer"] == "alice"
        status, out, _ = await run("session", "list", "--ticket", "T-1", cwd=tmp_path)
        assert session["id"] in out and "customer" in out

        status, out, _ = await run("audit", "show", "T-1", "--json", cwd=tmp_path)
        actions = [e["action"] for e in json.loads(out)]
        assert actions == [
            "ticket.created",
            "consent.issued",
            "consent.redeemed",
            "session.consented",
            "session.started",
            "channel.refused",
            "session.ended",
        ]
        status, out, _ = await run("audit", "show", "T-1", cwd=tmp_path)
        assert "session.ended" in out and "reason=customer" in out
        assert code not in out and code.replace("-", "") not in out
        status, out, err = await run("audit", "verify", cwd=tmp_path)
        assert status == 0, err
        assert out.startswith("OK: 8 events chained") and "match the checkpoint log" in out
        status, out, _ = await run("audit", "pubkey", cwd=tmp_path)
        assert out.startswith("-----BEGIN PUBLIC KEY-----") and "# key id SHA256:" in out
    finally:
        serve.send_signal(signal.SIGTERM)
        rest, errors = await asyncio.wait_for(serve.communicate(), 20)
    assert serve.returncode == 0
    assert b"assist-broker stopped." in rest
    assert not (data / "listening.json").exists()  # a stopped broker listens nowhere
    assert b"Traceback" not in errors
    assert code not in errors.decode() and code.replace("-", "") not in errors.decode()


async def test_ticket_assign_from_the_command_line(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "k.pub").write_bytes(key.export_public_key())
    assert (await run("ticket", "create", "--title", "x", "--severity", "3", cwd=tmp_path))[0] == 0
    for name in ("alice", "bob"):
        other = asyncssh.generate_private_key("ssh-ed25519")
        (tmp_path / f"{name}.pub").write_bytes(other.export_public_key())
        status, _, err = await run(
            "account", "add", name, "--role", "engineer", "--ssh-key", f"{name}.pub", cwd=tmp_path
        )
        assert status == 0, err
    status, out, _ = await run("ticket", "assign", "T-1", "alice", "bob", cwd=tmp_path)
    assert (status, out) == (0, "T-1 is open to alice, bob.\n")
    status, out, _ = await run("ticket", "show", "T-1", "--json", cwd=tmp_path)
    assert json.loads(out)["assignees"] == ["alice", "bob"]
    status, _, err = await run("ticket", "assign", "T-1", "nobody", cwd=tmp_path)
    assert status == 1 and err == "assist-broker: There is no account nobody.\n"
    status, out, _ = await run("ticket", "assign", "T-1", cwd=tmp_path)
    assert out == "T-1 is open to every engineer.\n"
