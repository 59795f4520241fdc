"""How long the command line takes to answer: the median wall time of N runs of
``assist-broker --help`` and of ``ticket list`` on a small data dir, against ``python -c pass``
(the interpreter's own start) measured in the same run. Figures for people, never asserted on.

    python -m bench.cli_latency [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BROKER = [sys.executable, "-m", "broker"]


def _median_ms(argv: list[str], runs: int, cwd: Path, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True, timeout=120)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1)


def figures(runs: int = 15) -> dict[str, Any]:
    """``{"python_ms", "help_ms", "ticket_list_ms", "help_ratio", "ticket_list_ratio"}``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSIST_")}
    with tempfile.TemporaryDirectory(prefix="assist-cli-bench-") as folder:
        root = Path(folder)
        for n in range(5):  # a small data dir: five tickets
            create = ["ticket", "create", "--title", f"ticket {n}", "--severity", "3"]
            subprocess.run([*BROKER, *create], cwd=root, env=env, check=True, capture_output=True)
        python = _median_ms([sys.executable, "-c", "pass"], runs, root, env)
        helps = _median_ms([*BROKER, "--help"], runs, root, env)
        listed = _median_ms([*BROKER, "ticket", "list"], runs, root, env)
    return {
        "runs": runs,
        "python_ms": python,
        "help_ms": helps,
        "ticket_list_ms": listed,
        "help_ratio": round(helps / python, 1) if python else None,
        "ticket_list_ratio": round(listed / python, 1) if python else None,
    }


def report(f: dict[str, Any]) -> str:
    return (
        f"command line, median of {f['runs']} runs: assist-broker --help {f['help_ms']} ms "
        f"(target < 150), ticket list {f['ticket_list_ms']} ms (target < 400); "
        f"python -c pass {f['python_ms']} ms (ratios {f['help_ratio']} / "
        f"{f['ticket_list_ratio']})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_latency", description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="runs of each command")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = figures(args.runs)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
