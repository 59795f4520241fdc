"""`python -m bench` still runs end to end (tiny sizes) and writes every figure; its numbers
are printed for people, never asserted on here."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bench.openssh import SSHD


@pytest.mark.skipif(not Path(SSHD).exists(), reason="sshd missing: apt-get install openssh-server")
@pytest.mark.timeout(300)
async def test_bench_runs_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench",
        "--mib",
        "4",
        "--rounds",
        "1",
        "--setup-runs",
        "2",
        "--echoes",
        "20",
        "--tunnels",
        "5",
        "--sessions",
        "2",
        "--codes",
        "10",
        "--cli-runs",
        "2",
        "--json",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    text, _ = await asyncio.wait_for(proc.communicate(), 280)
    assert proc.returncode == 0, text.decode()[-3000:]
    figures = json.loads(out.read_text())
    for key in ("bulk_mb_s", "sftp_mb_s", "setup_ms"):
        assert set(figures[key]) == {"broker", "nested", "ssh -J"} and all(
            v > 0 for v in figures[key].values()
        )
    assert figures["echo_us"]["broker"]["p50"] > 0
    assert figures["echo_us"]["nested"]["p99"] > 0
    assert figures["tunnels"]["tunnels_5"]["rss_mib"] > 0
    assert figures["redemptions_per_s"]["sqlite"] > 0
    assert figures["active"]["sessions_2"]["echoed_mb"] > 0
    assert figures["active"]["sessions_2"]["newcomer_s"] > 0
    assert b"PTY echo p50" in text
    cli = figures["cli"]
    assert cli["help_ms"] > 0 and cli["ticket_list_ms"] > 0 and cli["python_ms"] > 0
    assert cli["help_ratio"] > 0 and cli["ticket_list_ratio"] > 0
    assert b"assist-broker --help" in text
