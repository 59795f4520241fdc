"""``ssh -W`` must always end, whichever side closes first and however.

The bug: when the destination answered and closed before the engineer's EOF arrived (always,
with ``ssh -W``, whose stdin stays open: it sends its EOF once it saw the server's), the
helper's forwarder passed both EOFs on and closed nothing, nor did the broker, so ``ssh`` never
exited. Each case runs the real ``ssh -W`` many times, in parallel batches, and checks that
ssh exits with the right status and bytes, that the broker audits a close for every forward,
and that no socket to the destination stays open on the customer's side.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.forward_close import CASES, Case, open_sockets_to, run_many, target
from tests.harness import BrokerHarness

BATCH = 6


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_ssh_w_ends_on_every_close_path(harness: BrokerHarness, case: Case) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    async with target(case) as port:
        await harness.connected_helper(ticket, scope=f"port:127.0.0.1:{port}")
        problems = await run_many(harness, key, ticket, port, case, range(case.runs), BATCH)
        assert not problems, f"{case.name}: " + "; ".join(problems[:5])

        async def all_forwards_closed() -> list[dict[str, object]]:
            while True:
                audit = await harness.audit(ticket)
                closed = [d for a, d in audit if a == "channel.closed" and d["kind"] == "forward"]
                if len(closed) >= case.runs:
                    return closed
                await asyncio.sleep(0.05)

        closed = await asyncio.wait_for(all_forwards_closed(), 10)
        assert len(closed) == case.runs
        reasons = {d["reason"] for d in closed}
        assert reasons <= ({"connect_failed"} if case.handler is None else {"closed", "engineer"})

        async def no_socket_left() -> None:
            while open_sockets_to(port):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(no_socket_left(), 10)
