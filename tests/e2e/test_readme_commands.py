"""The README's command examples, run in order as a reader would: every ``assist-broker`` and
``ssh-keygen`` line of its ``sh`` blocks, in a fresh directory, against ``assist-broker serve``
in its own process, with a real helper and a real ssh where a line needs a live session.

The only fill-ins: ``serve`` listens on port 0; ``[...]`` (optional) is taken as written inside;
SESSION and CHANNEL are the ids the commands before printed; a password is typed on stdin."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import pytest

from tests.harness import SSH, start_helper

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.timeout(300)


def example_lines() -> list[list[str]]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    lines = []
    for block in blocks:
        for line in block.splitlines():
            if line.startswith(("assist-broker ", "ssh-keygen -t ")):  # key pairs made
                lines.append(shlex.split(re.sub(r"\[([^\]]*)\]", r"\1", line), comments=True))
    return lines


async def run(words: list[str], cwd: Path, env: dict[str, str], stdin: str = "") -> str:
    program = [sys.executable, "-m", "broker"] if words[0] == "assist-broker" else [words[0]]
    proc = await asyncio.create_subprocess_exec(
        *program,
        *words[1:],
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # no terminal: a password prompt reads standard input
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode == 0, (words, err.decode())
    assert b"Traceback" not in err
    return out.decode()


async def test_the_readme_examples_run_in_order(tmp_path: Path) -> None:
    lines = example_lines()
    assert ["assist-broker", "serve"] in lines and len(lines) > 25, lines
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSIST_")}
    env["PYTHONUNBUFFERED"] = "1"
    serve = None
    port, fingerprint, helper = 0, "", None
    ids: dict[str, str] = {}
    try:
        for words in lines:
            if words == ["assist-broker", "serve"]:
                serve = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "broker", "serve",
                    "--ssh-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    cwd=tmp_path, env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                assert serve.stdout is not None
                banner = ""
                while "Press Ctrl-C to stop." not in banner:
                    line = await asyncio.wait_for(serve.stdout.readline(), 60)
                    assert line, banner
                    banner += line.decode()
                port = int(re.search(r"for SSH on 127\.0\.0\.1:(\d+)", banner).group(1))  # type: ignore[union-attr]
                fingerprint = re.search(r"fingerprint: (SHA256:\S+)", banner).group(1)  # type: ignore[union-attr]
                continue
            words = [ids.get(w, w) for w in words]
            out = await run(words, tmp_path, env, stdin="a long enough password\n" * 2)
            if words[1:3] == ["code", "issue"]:
                # the customer runs the helper with the code, the engineer works (README order)
                code = re.search(r"Consent code for T-1: (\S+)", out).group(1)  # type: ignore[union-attr]
                helper = await start_helper(code, port, fingerprint)
                await helper.wait_for("Connected.")
                ssh = await asyncio.create_subprocess_exec(
                    SSH, "-F", "/dev/null", "-p", str(port), "-i", str(tmp_path / "alice"),
                    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                    "T-1@127.0.0.1", "uname -a; exit 3",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                await asyncio.wait_for(ssh.communicate(), 30)
                assert ssh.returncode == 3
                shown = await run(["assist-broker", "session", "list", "--json"], tmp_path, env)
                ids["SESSION"] = json.loads(shown)[0]["id"]
                shown = await run(
                    ["assist-broker", "session", "show", ids["SESSION"], "--json"], tmp_path, env
                )
                ids["CHANNEL"] = str(json.loads(shown)["channels"][0]["id"])
            if words[1:3] == ["session", "end"]:
                assert helper is not None
                assert await helper.finish() != 0  # the helper heard the session ended
    finally:
        if helper is not None:
            await helper.stop()
        if serve is not None:
            serve.send_signal(signal.SIGTERM)
            await asyncio.wait_for(serve.communicate(), 30)
