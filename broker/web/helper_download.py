"""The one-file helper served at ``/helper``: a zipapp of the helper's code (plus the two small
standard-library modules it shares with the broker) with this broker's address and host key
fingerprint built in, so the customer types only the code:

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
import broker

#: what the zipapp holds besides agent_client/: modules the helper imports from the broker
SHARED = (
    "__init__.py",
    "safetext.py",
    "session/receipt_text.py",
    "session/__init__.py",
    "session/policy.py",
    "relay/__init__.py",
    "relay/flow.py",
)

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
        client = Path(agent_client.__file__).parent
        for path in sorted(client.glob("*.py")):
            app.write(path, f"agent_client/{path.name}")
        root = Path(broker.__file__).parent
        for name in SHARED:
            app.write(root / name, f"broker/{name}")
        app.writestr("__main__.py", MAIN)
        app.writestr(
            "agent_client/defaults.json",
            json.dumps({"broker": address, "fingerprint": fingerprint}),
        )
    return out.getvalue()
