"""The helper from /helper: one file, the broker's address and pin built in, runs in a fresh
virtualenv that has only asyncssh, and connects with nothing but the code."""

from __future__ import annotations

import asyncio
import os
import sys
import zipfile
from importlib.metadata import version

import aiohttp

from tests.harness import BrokerHarness, HelperProc, helper_env


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, out.decode()[-2000:]


async def test_downloaded_helper_connects_with_only_the_code(harness: BrokerHarness) -> None:
    url = f"http://127.0.0.1:{harness.http_port}/helper"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        body = await response.read()
    helper_file = harness.tmp / "helper"
    helper_file.write_bytes(body)
    assert body.startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(helper_file) as app:
        names = set(app.namelist())
        assert {"__main__.py", "agent_client/cli.py", "assist_protocol/scope.py"} <= names
        assert not [n for n in names if n.startswith("broker/")]  # the helper needs none of it
        assert not any(n.startswith(("broker/store", "broker/transport")) for n in names)
        defaults = app.read("agent_client/defaults.json").decode()
        assert "_pip/pip/__init__.py" in names  # the pip it sets itself up with, if need be
    assert f"127.0.0.1:{harness.port}" in defaults and harness.fingerprint in defaults
    assert f'"requires": ["asyncssh=={version("asyncssh")}"]' in defaults

    venv = harness.tmp / "customer-venv"
    await _run(sys.executable, "-m", "venv", str(venv))
    await _run(str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "asyncssh")

    ticket = await harness.ticket()
    key = await harness.engineer()
    code = await harness.code(ticket)
    extra = ["--allow-root"] if os.geteuid() == 0 else []
    proc = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "python"),
        str(helper_file),
        code,
        "--yes",
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=helper_env(),
        cwd=harness.tmp,
    )
    helper = HelperProc(proc)
    helper.start_reading()
    harness.helpers.append(helper)
    await helper.wait_for("Connected.")
    assert (await harness.ssh(key, ticket, "echo from-download")).stdout == b"from-download\n"
    helper.interrupt()
    assert await helper.finish() == 0
