"""The other Pythons on this machine that the customer's helper must run on (3.9 .. 3.13): the
helper and its protocol run on the customer's own ``python3`` (macOS ships 3.9), the broker and
the tests on 3.11+. Found in pyenv's folder or on PATH; a test skips saying which is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

#: every minor version the helper supports (the bootstrap's MINIMUM up to the newest tested)
HELPER_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


@cache
def find_python(version: str) -> Path | None:
    """An interpreter of exactly this minor version, or None."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = sorted(pyenv.glob(f"{version}.*/bin/python{version}"), reverse=True)
    on_path = shutil.which(f"python{version}")
    for path in [*candidates, *([Path(on_path)] if on_path else [])]:
        said = subprocess.run(
            [str(path), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            check=False,
        )
        if said.returncode == 0 and said.stdout.decode().strip() == version:
            return path
    return None
