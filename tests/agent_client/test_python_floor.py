"""The helper and its protocol keep to the oldest Python the helper's setup accepts (macOS's own
python3 is 3.9): vermin reads agent_client/ and assist_protocol/ and fails on any construct a
newer Python needs, so a 3.10+ spelling fails here before a customer's Mac finds it. (Unions
written ``X | Y`` are checked by running: ``tests/agent_client/test_old_pythons.py``; vermin's
union check cannot tell a postponed annotation from a value.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent_client.bootstrap import MINIMUM

ROOT = Path(__file__).resolve().parents[2]


def test_the_helper_needs_no_newer_python_than_its_setup_accepts() -> None:
    assert MINIMUM == (3, 9)  # macOS's own python3 (Apple's command line tools ship 3.9.6)
    vermin = Path(sys.executable).with_name("vermin")  # a test dependency (pyproject.toml)
    target = f"-t={MINIMUM[0]}.{MINIMUM[1]}-"
    done = subprocess.run(
        [str(vermin), target, "--violations", "--no-tips", "agent_client", "assist_protocol"],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    said = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, said
    assert "Minimum required versions: 3." in said  # it did read the files
    assert "Target versions not met" not in said
