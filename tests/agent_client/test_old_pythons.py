"""The helper runs on the customer's own python3, down to macOS's 3.9: the protocol package
(standard library only) decodes every message there as it does here, and the helper's asyncio
timeouts behave alike. Each check runs in a real interpreter of that version, in a subprocess.
The whole helper on 3.9 is ``tests/e2e/test_helper_install.py``; the constructs a newer Python
needs are caught before running by ``tests/agent_client/test_python_floor.py``."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from assist_protocol import messages as msg
from tests.agent_client.test_protocol import EXAMPLES
from tests.pythons import HELPER_PYTHONS, find_python

ROOT = Path(__file__).resolve().parents[2]
WRONG = [
    b'{"type": "join_answer", "id": 1, "allow": "yes"}',
    b'{"type": "limits", "seconds": true, "seconds_left": 1, "idle_seconds": 1}',
    b'{"type": "consented", "scope": "shell", "scope_text": "s", "resume": "r",'
    b' "grace_seconds": "1"}',
    b'{"type": "engineers", "engineers": [{"name": "a"}]}',
    b'{"type": "ended", "reason": "r", "message": "m", "values": {}, "receipt_text": 7}',
]

DECODE = """
import json, sys
from assist_protocol import messages as msg
out = []
for line in json.load(sys.stdin):
    try:
        out.append(msg.encode(msg.decode(line.encode())).decode())
    except msg.ProtocolError as exc:
        out.append("refused: %s" % exc)
print(json.dumps(out))
"""

TIMEOUT = """
import asyncio
from agent_client.compat import TIMEOUTS, timeout

async def main():
    async with timeout(5):
        await asyncio.sleep(0)
    try:
        async with timeout(0.01):
            await asyncio.Event().wait()
    except TimeoutError:
        print("block ran out: TimeoutError")
    try:
        await asyncio.wait_for(asyncio.Event().wait(), 0.01)
    except TIMEOUTS:
        print("wait_for ran out: caught")
    inner = asyncio.ensure_future(enter())
    await asyncio.sleep(0.01)
    inner.cancel()
    try:
        await inner
    except asyncio.CancelledError:
        print("cancelled from outside: CancelledError")

async def enter():
    async with timeout(60):
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _run(version: str, code: str, given: str = "") -> str:
    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine (looked in pyenv and on PATH)")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8"}
    done = subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        input=given.encode(),
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


@pytest.mark.parametrize("version", HELPER_PYTHONS)
def test_every_message_decodes_alike_on_every_helper_python(version: str) -> None:
    lines = [msg.encode(example).decode() for example in EXAMPLES]
    wrong = [line.decode() for line in WRONG]
    here = []
    for line in wrong:
        with pytest.raises(msg.ProtocolError) as refused:
            msg.decode(line)
        here.append(f"refused: {refused.value}")
    there = json.loads(_run(version, DECODE, json.dumps(lines + wrong)))
    assert there == lines + here


@pytest.mark.parametrize("version", HELPER_PYTHONS)
def test_a_deadline_runs_out_alike_on_every_helper_python(version: str) -> None:
    said = _run(version, TIMEOUT)
    assert said.splitlines() == [
        "block ran out: TimeoutError",
        "wait_for ran out: caught",
        "cancelled from outside: CancelledError",
    ]
