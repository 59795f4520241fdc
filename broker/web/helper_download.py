"""The one-file helper served at ``/helper``: a zipapp of the helper's code and the protocol it
shares with the broker (``assist_protocol``, standard library only), with this broker's address
and host key fingerprint built in, and this broker's own pip, so that one line takes a customer
from nothing to a running helper (it asks for the code):

    curl -fsSLo assist-helper.pyz http://BROKER:8080/helper && python3 assist-helper.pyz

Its only dependency is asyncssh (which brings cryptography, compiled). When the customer's
python3 lacks it, the helper installs the pinned version into a private virtual environment in
the customer's home, once, with the pip inside the download (:mod:`agent_client.bootstrap`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import re
import zipfile
from collections.abc import Iterator
from importlib.metadata import metadata, version
from pathlib import Path

import agent_client
import assist_protocol
from agent_client.bootstrap import PIP_FOLDER

#: the packages the helper is made of: itself and the protocol it shares with the broker
#: (a test checks that agent_client imports nothing else of this project)
PACKAGES = (agent_client, assist_protocol)
#: the file name the customer's line saves the download as
FILE_NAME = "assist-helper.pyz"
#: what a customer's python3 that this broker's asyncssh no longer supports installs instead:
#: asyncssh 2.22 needs Python 3.10, and macOS's own python3 is 3.9 (2.21.1 is its last release)
OLDER_PYTHONS = {"3.9": ["asyncssh==2.21.1"]}

MAIN = '''"""assist-helper with this broker built in (it asks for the code)"""
import sys

from agent_client.bootstrap import ensure_asyncssh

ensure_asyncssh(sys.argv[1:])  # returns once asyncssh loads (sets it up the first time)

from agent_client.cli import main

sys.exit(main(["connect", *sys.argv[1:]] if sys.argv[1:2] != ["connect"] else sys.argv[1:]))
'''


def customer_line(base_url: str) -> str:
    """The one line a customer pastes: download the helper from ``base_url`` and run it (a
    download, then a run: standard input stays the customer's terminal for the code)."""
    return f"curl -fsSLo {FILE_NAME} {base_url}/helper && python3 {FILE_NAME}"


def requirements() -> list[str]:
    """What the helper installs when the customer's Python lacks it: the asyncssh this broker
    runs (cryptography follows, the wheel for the customer's computer)."""
    return [f"asyncssh=={version('asyncssh')}"]


def pip_python() -> str:
    """The oldest Python the carried pip runs on (its ``Requires-Python: >=X.Y``); an older
    customer Python sets up with its own ensurepip instead."""
    wanted = " ".join(metadata("pip").get_all("Requires-Python") or [])
    found = re.search(r">=\s*(\d+\.\d+)", wanted)
    return found.group(1) if found else "3.9"


def _pip_files() -> Iterator[tuple[Path, str]]:
    """This broker's own pip, as it would sit in a zipapp (no bytecode, no Windows launchers)."""
    spec = importlib.util.find_spec("pip")
    if spec is None or spec.origin is None:
        raise RuntimeError("the broker's Python has no pip to put into the helper download")
    root = Path(spec.origin).parent
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".exe":
            yield path, f"{PIP_FOLDER}/pip/{path.relative_to(root).as_posix()}"


def build_helper(address: str, fingerprint: str) -> bytes:
    """The zipapp's bytes. ``address`` is HOST:PORT as customers reach the broker."""
    out = io.BytesIO()
    out.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as app:
        for package in PACKAGES:
            folder = Path(str(package.__file__)).parent
            for path in sorted(folder.glob("*.py")):
                app.write(path, f"{folder.name}/{path.name}")
        for path, name in _pip_files():
            app.write(path, name)
        app.writestr("__main__.py", MAIN)
        app.writestr(
            "agent_client/defaults.json",
            json.dumps(
                {
                    "broker": address,
                    "fingerprint": fingerprint,
                    "requires": requirements(),
                    "requires_by_python": OLDER_PYTHONS,
                    "pip_python": pip_python(),
                }
            ),
        )
    return out.getvalue()


class HelperDownload:
    """The zipapp, built on its first request (zipping pip takes a moment of CPU that a broker
    nobody downloads from should not pay) and kept."""

    def __init__(self, address: str, fingerprint: str) -> None:
        self.address, self.fingerprint = address, fingerprint
        self._body: bytes | None = None
        self._lock = asyncio.Lock()

    async def body(self) -> bytes:
        async with self._lock:
            if self._body is None:
                self._body = await asyncio.to_thread(build_helper, self.address, self.fingerprint)
            return self._body
