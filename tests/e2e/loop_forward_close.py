"""Run the forward close paths of ``forward_close`` many times by hand, for a race that shows
once in many runs (the test runs each case a dozen times or so):

    python -m tests.e2e.loop_forward_close --runs 300 [--batch 10] [--link nested] [CASE ...]

CASE is a case's name or a part of it; without one, the runs go round all cases. Prints each
problem and a count per case; the exit status is 1 if any run went wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from broker.logsetup import configure_logging
from tests.e2e.forward_close import CASES, Case, open_sockets_to, run_many, target
from tests.harness import BrokerHarness


async def forwards_closed(harness: BrokerHarness, ticket: str, runs: int) -> int:
    """How many forwards the audit says closed, once all ``runs`` are there or after 10 s."""
    closed = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while closed < runs:
                audit = await harness.audit(ticket)
                closed = sum(
                    1 for a, d in audit if a == "channel.closed" and d["kind"] == "forward"
                )
                await asyncio.sleep(0.05)
    return closed


async def loop_case(case: Case, runs: int, batch: int, link: str) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="forward-close-") as tmp:
        harness = await BrokerHarness(Path(tmp), helper_link=link).start()
        try:
            ticket = await harness.ticket()
            key = await harness.engineer()
            async with target(case) as port:
                await harness.connected_helper(ticket, scope=f"port:127.0.0.1:{port}")
                problems: list[str] = []
                for first in range(0, runs, batch):
                    # run_many stops at a batch with a problem: go on, to count them all
                    chunk = range(first, min(first + batch, runs))
                    problems += await run_many(harness, key, ticket, port, case, chunk, batch)
                closed = await forwards_closed(harness, ticket, runs)
                if closed != runs:
                    problems.append(f"{closed} forwards audited as closed, of {runs}")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        while open_sockets_to(port):
                            await asyncio.sleep(0.05)
                if left := open_sockets_to(port):
                    problems.append(f"{left} sockets to the destination left open")
                return problems
        finally:
            await harness.stop()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300, help="runs in all")
    parser.add_argument("--batch", type=int, default=10, help="ssh processes at once")
    parser.add_argument("--link", default="reverse", choices=["reverse", "nested"])
    parser.add_argument("cases", nargs="*")
    args = parser.parse_args()
    configure_logging("error", "console")
    cases = [c for c in CASES if not args.cases or any(n in c.name for n in args.cases)]
    failed = 0
    for index, case in enumerate(cases):
        runs = args.runs // len(cases) + (index < args.runs % len(cases))
        began = time.monotonic()
        problems = await loop_case(case, runs, args.batch, args.link)
        for problem in problems:
            print(f"  {case.name}: {problem}")
        print(
            f"{case.name}: {runs} runs, {len(problems)} problems, {time.monotonic() - began:.1f} s"
        )
        failed += len(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
