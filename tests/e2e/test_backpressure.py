"""Backpressure: a fast customer and a slow engineer must not fill the broker's memory."""

from __future__ import annotations

import asyncio
import gc

from tests.harness import BrokerHarness

TOTAL = 200_000_000


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_200_mb_to_a_slow_reader_keeps_broker_memory_flat(harness: BrokerHarness) -> None:
    """The broker runs in this process: its resident memory may not grow with the stream."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    gc.collect()
    baseline = rss_bytes()
    peak = baseline
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            try:
                await asyncio.wait_for(done.wait(), 0.05)
            except TimeoutError:
                pass

    sampler = asyncio.create_task(sample())
    engineer = await asyncio.create_subprocess_exec(
        *harness.ssh_args(key, ticket),
        f"head -c {TOTAL} /dev/zero",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert engineer.stdout is not None
    received = 0
    async with asyncio.timeout(120):
        while chunk := await engineer.stdout.read(64 * 1024):
            received += len(chunk)
            await asyncio.sleep(0.001)  # a slow reader: about 50 MB/s at most
        assert await engineer.wait() == 0
    done.set()
    await sampler

    assert received == TOTAL
    growth = peak - baseline
    assert growth < 48 * 1024 * 1024, f"broker memory grew by {growth / 2**20:.1f} MiB"


async def test_200_mb_from_a_fast_engineer_to_a_slow_customer_keeps_memory_flat(
    harness: BrokerHarness,
) -> None:
    """The reverse direction: the customer's command reads slowly, the engineer sends fast."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    gc.collect()
    baseline = rss_bytes()
    peak = baseline
    slow_reader = (
        "python3 -c 'import sys,time\n"
        "n=0\n"
        "while (b:=sys.stdin.buffer.read1(65536)):\n"
        "    n+=len(b); time.sleep(0.001)\n"
        "print(n)'"
    )
    engineer = await asyncio.create_subprocess_exec(
        *harness.ssh_args(key, ticket),
        slow_reader,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert engineer.stdin is not None and engineer.stdout is not None
    block = b"\0" * (1024 * 1024)
    async with asyncio.timeout(120):
        for _ in range(TOTAL // len(block)):
            engineer.stdin.write(block)
            await engineer.stdin.drain()
            peak = max(peak, rss_bytes())
        engineer.stdin.write(block[: TOTAL % len(block)])
        engineer.stdin.close()
        output = await engineer.stdout.read()
        assert await engineer.wait() == 0

    assert int(output) == TOTAL
    growth = peak - baseline
    assert growth < 48 * 1024 * 1024, f"broker memory grew by {growth / 2**20:.1f} MiB"
