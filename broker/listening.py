"""Where the running broker can be reached, written into its data dir at start.

``serve`` binds what ``--ssh-listen`` says (port 0: any free port), so only the running broker
knows its port. It writes ``DATA_DIR/listening.json`` once it listens and removes it when it
stops; ``assist-broker ssh-config`` reads it, and falls back to the settings when no broker
runs. Standard library only: the command line reads it without loading the broker.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILE = "listening.json"


@dataclass(frozen=True)
class Address:
    #: the name people and helpers use (public_host, else the bound host)
    host: str
    port: int
    pid: int


def write(data_dir: Path, host: str, port: int) -> None:
    tmp = data_dir / (FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(Address(host, port, os.getpid()))) + "\n")
    os.replace(tmp, data_dir / FILE)


def remove(data_dir: Path) -> None:
    try:
        current = read(data_dir)
        if current is not None and current.pid == os.getpid():
            (data_dir / FILE).unlink()
    except OSError:
        pass


def read(data_dir: Path) -> Address | None:
    """What the broker of this data dir wrote, or ``None`` (none ran, or the file is bad)."""
    try:
        fields = json.loads((data_dir / FILE).read_text())
        address = Address(str(fields["host"]), int(fields["port"]), int(fields["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return address if _alive(address.pid) else None  # left by a broker that was killed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0  # someone else's process: it runs
    return pid > 0
