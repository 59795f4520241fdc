"""The one-file helper served at ``/helper``: a zipapp of the helper's code and the protocol it
shares with the broker (``assist_protocol``, standard library only), with this broker's address
and host key fingerprint built in, so the customer types only the code:

    curl -fsSO http://BROKER:8080/helper && python3 -m pip install --user asyncssh && \\
        python3 helper          # it asks for the code

Its only dependency is asyncssh (which brings cryptography).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import agent_client
import assist_protocol

#: the packages the helper is made of: itself and the protocol it shares with the broker
#: (a test checks that agent_client imports nothing else of this project)
PACKAGES = (agent_client, assist_protocol)

MAIN = '''"""assist-helper with this broker built in: python3 helper (it asks for the code)"""
import sys

from agent_client.cli import main

sys.exit(main(["connect", *sys.argv[1:]] if sys.argv[1:2] != ["connect"] else sys.argv[1:]))
'''


def build_helper(address: str, fingerprint: str) -> bytes:
    """The zipapp's bytes. ``address`` is HOST:PORT as customers reach the broker."""
    out = io.BytesIO()
    out.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as app:
        for package in PACKAGES:
            folder = Path(str(package.__file__)).parent
            for path in sorted(folder.glob("*.py")):
                app.write(path, f"{folder.name}/{path.name}")
        app.writestr("__main__.py", MAIN)
        app.writestr(
            "agent_client/defaults.json",
            json.dumps({"broker": address, "fingerprint": fingerprint}),
        )
    return out.getvalue()
