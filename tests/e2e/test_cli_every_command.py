"""One rule for output, on every command: text for people by default, JSON with ``--json``.
Each command of the grammar (but ``serve``) runs twice against a real broker's data dir, with a
live session and a recorded channel: once as text (which must not be JSON) and once with
``--json`` (which must be). A command added to the grammar without a run here fails the test."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import asyncssh
import pytest

from broker import cli
from tests.broker.test_cli_grammar import commands
from tests.harness import BrokerHarness

pytestmark = pytest.mark.timeout(300)


async def run(harness: BrokerHarness, *args: str, stdin: str = "") -> str:
    """The command line in a thread of this process (its own event loop), against the
    harness broker's data dir; its standard output."""

    def call() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            _stdin(stdin),
        ):
            status = cli.main([*args, "--data-dir", str(harness.settings.data_dir)])
        return status, out.getvalue(), err.getvalue()

    status, out, err = await asyncio.to_thread(call)
    assert status == 0, (args, err)
    return out


@contextlib.contextmanager
def _stdin(text: str):  # type: ignore[no-untyped-def]
    import sys

    saved, sys.stdin = sys.stdin, io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


async def test_every_command_prints_text_by_default_and_json_when_asked(
    harness: BrokerHarness, tmp_path: Path
) -> None:
    alice = await harness.engineer()
    for name in ("bob", "carol"):
        key = asyncssh.generate_private_key("ssh-ed25519")
        (tmp_path / f"{name}.pub").write_bytes(key.export_public_key())
    first = await harness.ticket()
    second = await harness.ticket(title="Disk full")
    await harness.connected_helper(first)
    assert (await harness.ssh(alice, first, "echo walked")).stdout == b"walked\n"
    (live,) = json.loads(await run(harness, "session", "list", "--ticket", first, "--json"))
    events = json.loads(await run(harness, "audit", "show", first, "--json"))
    channel = str(
        next(e["details"]["channel_id"] for e in events if e["action"] == "channel.closed")
    )
    signers = str(tmp_path / "allowed_signers")

    # (command, action) -> the arguments of its text run and of its --json run
    plans: dict[tuple[str, str | None], tuple[list[str], list[str]]] = {}

    def plan(args: list[str], json_args: list[str] | None = None) -> None:
        command = (args[0], args[1] if args[0] not in ("certs", "ssh-config") else None)
        plans[command] = (args, json_args or args)

    plan(["db", "upgrade"])
    plan(["ticket", "create", "--title", "x", "--severity", "3"])
    plan(["ticket", "list"])
    plan(["ticket", "show", first])
    plan(["ticket", "assign", second, "alice"])
    plan(
        ["account", "add", "bob", "--role", "engineer", "--ssh-key", str(tmp_path / "bob.pub")],
        ["account", "add", "carol", "--role", "engineer", "--ssh-key", str(tmp_path / "carol.pub")],
    )
    plan(["account", "list"])
    plan(["account", "password", "carol", "--password-stdin"])
    plan(["account", "disable", "carol"])
    plan(["account", "enable", "carol"])
    plan(["code", "issue", second, "--engineer", "alice"])
    plan(["code", "list"])
    plan(["code", "revoke", "CODE"])
    plan(["session", "list"])
    plan(["session", "show", live["id"]])
    plan(
        ["session", "handoff", live["id"], "--to", "bob"],
        ["session", "handoff", live["id"], "--to", "alice"],
    )
    plan(["session", "end", live["id"]], ["session", "end", "SECOND"])
    plan(["audit", "show", first])
    plan(["audit", "pubkey", "--allowed-signers", signers])
    plan(["audit", "verify"])
    plan(
        ["audit", "export", "--ticket", first, "--out", str(tmp_path / "a.tar")],
        ["audit", "export", "--ticket", first, "--out", str(tmp_path / "b.tar")],
    )
    plan(["audit", "prune", "--dry-run"])
    plan(["recording", "play", channel, "--speed", "100"])
    plan(["recording", "export", channel, "--out", str(tmp_path / "rec")])
    plan(["token", "create", "carol"])
    plan(["token", "list", "carol"])
    plan(["token", "revoke", "1"])
    plan(["certs", "--host", "localhost"])
    plan(["ssh-config", first])
    plan(["ticket", "status", second, "pending"])  # last: a closed ticket takes no codes
    plan(["ticket", "close", second])
    assert set(plans) == commands() - {("serve", None)}, "a command without a run here"

    order = list(plans)  # the bundle is checked after it was written
    for command in order:
        text_args, json_args = plans[command]
        if command == ("code", "revoke"):
            issued = [
                c["id"]
                for c in json.loads(await run(harness, "code", "list", "--json"))
                if c["state"] == "issued"
            ]
            text_args, json_args = (
                ["code", "revoke", str(issued[0])],
                ["code", "revoke", str(issued[1])],
            )
        if command == ("session", "end"):
            await harness.connected_helper(second)
            (other,) = [
                s
                for s in json.loads(await run(harness, "session", "list", "--json"))
                if s["ticket"] == second and s["state"] != "ended"
            ]
            json_args = ["session", "end", other["id"]]
        stdin = "a long enough password\n"
        text = await run(harness, *text_args, stdin=stdin)
        assert text.strip() and not is_json(text), (command, text)
        shown = await run(harness, *json_args, "--json", stdin=stdin)
        assert is_json(shown), (command, shown)
    verify = ("audit", "verify", "--bundle", str(tmp_path / "a.tar"), "--allowed-signers", signers)
    bundle = await run(harness, *verify)
    assert not is_json(bundle) and bundle.startswith("OK"), bundle
    assert is_json(await run(harness, *verify, "--json"))
