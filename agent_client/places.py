"""Where the helper keeps its files, all in the customer's home: its log (the state dir) and the
private Python environment the one-file download sets up for itself (the data dir).

Standard library only, and plain enough for any Python 3 to read: the one-file helper uses it
before it knows whether this Python is new enough (:mod:`agent_client.bootstrap`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

NAME = "assist-helper"


def data_dir() -> Path:
    """``~/.local/share/assist-helper`` (``$XDG_DATA_HOME``), on macOS
    ``~/Library/Application Support/assist-helper``."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / NAME
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / NAME


def log_path() -> Path:
    """``~/.local/state/assist-helper/helper.log`` (``$XDG_STATE_HOME``), its folder made."""
    folder = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / NAME
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / "helper.log"
    # only the customer reads it (pip's output, the helper's errors)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    return path
