"""listening.json: where the running broker of a data dir listens, and only while it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from broker import listening


def test_the_file_of_a_broker_that_was_killed_is_not_believed(tmp_path: Path) -> None:
    listening.write(tmp_path, "127.0.0.1", 4022)
    assert listening.read(tmp_path) == listening.Address("127.0.0.1", 4022, os.getpid())
    gone = (
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True
        )
        .stdout.decode()
        .strip()
    )
    (tmp_path / listening.FILE).write_text(
        f'{{"host": "127.0.0.1", "port": 4022, "pid": {int(gone)}}}\n'
    )
    assert listening.read(tmp_path) is None  # that process ended (kill -9 left the file)
