"""The store's writer turns: one writer at a time, a customer's step before queued audits."""

from __future__ import annotations

import asyncio

import pytest

from broker.store.db import WriteTurns


async def test_urgent_takers_go_before_queued_ones() -> None:
    turns = WriteTurns()
    order: list[str] = []
    await turns.acquire(urgent=False)  # someone writes now

    async def take(name: str, urgent: bool) -> None:
        await turns.acquire(urgent)
        order.append(name)
        turns.release()

    waiting = [asyncio.create_task(take(n, n.startswith("u"))) for n in ("n1", "n2", "u1", "u2")]
    await asyncio.sleep(0)  # all four queue up behind the writer
    turns.release()
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert order == ["u1", "u2", "n1", "n2"]


async def test_a_cancelled_taker_neither_keeps_nor_blocks_the_writer() -> None:
    turns = WriteTurns()
    await turns.acquire(urgent=False)
    cancelled = asyncio.create_task(turns.acquire(urgent=True))
    later = asyncio.create_task(turns.acquire(urgent=False))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    turns.release()
    await asyncio.wait_for(later, 5)  # the next one got it
    turns.release()
    await asyncio.wait_for(turns.acquire(urgent=False), 5)  # and it is free again after


async def test_handed_over_while_cancelled_passes_it_on() -> None:
    """Released to a taker in the same moment it is cancelled: the writer goes on, not lost."""
    turns = WriteTurns()
    await turns.acquire(urgent=False)
    first = asyncio.create_task(turns.acquire(urgent=False))
    second = asyncio.create_task(turns.acquire(urgent=False))
    await asyncio.sleep(0)
    turns.release()  # hands the writer to `first` ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)
