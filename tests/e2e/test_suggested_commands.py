"""Every command the product suggests runs as printed: the texts an engineer's ssh receives
when something is missing, and the ssh_config block of ``assist-broker ssh-config``. Each is
taken from what the real broker printed, run (against the same data dir, the same broker),
and must succeed or lead to the documented next step."""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
from pathlib import Path

import asyncssh

from tests.harness import SSH, BrokerHarness


async def cli(harness: BrokerHarness, words: list[str]) -> tuple[int, str, str]:
    assert words[0] == "assist-broker", words
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker",
        *words[1:],
        "--data-dir",
        str(harness.settings.data_dir),
        cwd=harness.tmp,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def suggested(text: str, program: str) -> list[str]:
    """The one ``program ...`` command in ``text`` (up to the end of its line), split."""
    (found,) = re.findall(rf"(?:^|[ :]){re.escape(program)} [^\n]+", text)
    return shlex.split(found.lstrip(" :"))


def new_key(harness: BrokerHarness, name: str) -> Path:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = harness.tmp / name
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    (harness.tmp / f"{name}.pub").write_bytes(key.export_public_key())
    return path


async def test_the_hints_an_engineer_gets_run_as_printed(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    alice = await harness.engineer()

    # a user name that is no ticket: the example names the port and host really listened on
    told = (await harness.ssh(alice, "T-999", "true")).stderr.decode()
    words = suggested(told, "ssh")
    assert words[:3] == ["ssh", "-p", str(harness.port)] and words[3].endswith("@127.0.0.1")
    opts = harness.ssh_args(alice, "x")[1:-1]  # the key and the pinned host key; not -p
    opts = [o for i, o in enumerate(opts) if o != "-p" and (i == 0 or opts[i - 1] != "-p")]
    proc = await asyncio.create_subprocess_exec(
        SSH, *opts, *words[1:], "true", stderr=asyncio.subprocess.PIPE
    )
    _, reached = await asyncio.wait_for(proc.communicate(), 30)
    assert f"No customer is connected for {words[3].split('@')[0]}" in reached.decode()

    # no customer yet: the code command works as printed (an admin runs it)
    told = (await harness.ssh(alice, ticket, "true")).stderr.decode()
    status, out, err = await cli(harness, suggested(told, "assist-broker"))
    assert status == 0, err
    code = re.search(r"Consent code for \S+: (\d{3}-\d{3}-\d{3})", out)
    assert code is not None, out

    # an unknown key: the account command works once its placeholders are filled in
    carol = new_key(harness, "carol")
    banner = ("-o", "LogLevel=INFO")  # the banner naming the key is shown from INFO up
    told = (await harness.ssh(carol, ticket, "true", options=banner)).stderr.decode()
    words = suggested(told, "assist-broker")
    filled = {"NAME": "carol", "KEY.pub": str(harness.tmp / "carol.pub")}
    status, _, err = await cli(harness, [filled.get(w, w) for w in words])
    assert status == 0, err
    told = (await harness.ssh(carol, ticket, "true")).stderr.decode()
    assert "No customer is connected" in told, told

    # assigned to others: the command adds this engineer and keeps the others
    status, _, err = await cli(harness, ["assist-broker", "ticket", "assign", ticket, "alice"])
    assert status == 0, err
    told = (await harness.ssh(carol, ticket, "true")).stderr.decode()
    words = suggested(told, "assist-broker")
    status, out, err = await cli(harness, words)
    assert (status, out) == (0, f"{ticket} is open to alice, carol.\n"), err
    told = (await harness.ssh(carol, ticket, "true")).stderr.decode()
    assert "No customer is connected" in told, told


async def test_ssh_config_reaches_the_running_broker_and_pins_its_host_key(
    harness: BrokerHarness,
) -> None:
    ticket = await harness.ticket()
    alice = await harness.engineer()
    await harness.connected_helper(ticket)
    known = harness.tmp / "pinned"
    # the engineer's own known-hosts file, say: what it holds is kept, the pin added once
    theirs = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    known.write_text(f"example.org {theirs}")
    asked = ["assist-broker", "ssh-config", ticket, "--identity", str(alice)]
    for _ in range(2):
        status, block, err = await cli(harness, [*asked, "--known-hosts", str(known)])
        assert status == 0, err
    held = known.read_text().splitlines()
    assert held[0] == f"example.org {theirs}" and len(held) == 2, held
    assert f"    Port {harness.port}\n" in block  # what serve bound (port 0), not 2222
    config = harness.tmp / "ssh_config"
    config.write_text(block)
    run = [SSH, "-F", str(config), "-o", "BatchMode=yes", ticket, "echo pinned"]
    proc = await asyncio.create_subprocess_exec(
        *run, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, errs = await asyncio.wait_for(proc.communicate(), 30)
    assert (proc.returncode, out) == (0, b"pinned\n"), errs

    # another key under the pinned name: ssh refuses to connect (strict checking)
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known.write_text(f"assist-broker {other}")
    proc = await asyncio.create_subprocess_exec(
        *run, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, errs = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 255 and out == b""
    assert b"HOST IDENTIFICATION HAS CHANGED" in errs or b"verification failed" in errs, errs
