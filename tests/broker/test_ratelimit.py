"""The limiter decides before anything is awaited: concurrent wrong tries cannot slip under
the limit, concurrent right ones are not refused, and prefixes count together."""

from __future__ import annotations

import asyncio

import pytest

from broker.session.ratelimit import Limited, RateLimiter


async def _try(limiter: RateLimiter, source: str, right: bool) -> str:
    try:
        attempt = await limiter.reserve(source, "test")
    except Limited:
        return "limited"
    try:
        await asyncio.sleep(0.01)  # the check itself (a database read, a hash) takes a while
        if right:
            attempt.succeeded()
        return "evaluated"
    finally:
        attempt.settle()


async def test_forty_concurrent_wrong_tries_are_five_evaluations() -> None:
    limiter = RateLimiter(per_source=5, overall=1000, window=60)
    outcomes = await asyncio.gather(*(_try(limiter, "192.0.2.7", False) for _ in range(40)))
    assert outcomes.count("evaluated") == 5 and outcomes.count("limited") == 35
    (summary,) = limiter.summaries(flush=True)
    assert (summary.prefix, summary.refused, summary.where) == ("192.0.2.7/32", 35, "test")


async def test_twenty_concurrent_right_tries_all_get_through() -> None:
    """Customers behind one address, each with a right code, at the same moment."""
    limiter = RateLimiter(per_source=5, overall=1000, window=60)
    outcomes = await asyncio.gather(*(_try(limiter, "192.0.2.7", True) for _ in range(20)))
    assert outcomes == ["evaluated"] * 20
    assert limiter.check("192.0.2.7") == 0


def test_prefixes_count_together() -> None:
    now = [0.0]
    limiter = RateLimiter(per_source=5, per_prefix=8, overall=1000, window=60, clock=lambda: now[0])
    for host in range(1, 9):  # one failure each from eight addresses of one /24
        limiter.failed(f"203.0.113.{host}")
    assert limiter.check("203.0.113.200") == pytest.approx(60)  # a fresh address of it waits
    assert limiter.check("203.0.114.1") == 0  # the next /24 does not
    v6 = RateLimiter(per_source=2, overall=1000, window=60, clock=lambda: now[0])
    v6.failed("2001:db8:1:2::1")
    v6.failed("2001:db8:1:2:ffff::9")
    assert v6.check("2001:db8:1:2::abcd") > 0  # the same /64
    assert v6.check("2001:db8:1:3::1") == 0
    assert v6.check("::ffff:203.0.113.5") == 0  # IPv4-mapped: counted as IPv4
    now[0] = 61
    assert limiter.check("203.0.113.200") == 0  # the window has passed


def test_one_summary_per_prefix_and_window() -> None:
    now = [0.0]
    limiter = RateLimiter(per_source=1, overall=1000, window=10, clock=lambda: now[0])
    limiter.failed("198.51.100.1")
    for _ in range(150):
        assert isinstance(limiter.try_reserve("198.51.100.1", "consent_code"), float)
    assert limiter.summaries() == []  # the window is still open
    now[0] = 10.5
    (summary,) = limiter.summaries()
    assert summary.refused == 150 and summary.prefix == "198.51.100.1/32"
    assert limiter.summaries(flush=True) == []


def test_ipv6_sites_count_together_and_neighbours_do_not_trip_the_overall_limit() -> None:
    now = [0.0]
    limiter = RateLimiter(per_source=2, per_prefix=6, overall=10, window=60, clock=lambda: now[0])
    for n in range(6):  # one failure from each of six /64s of one /48
        limiter.failed(f"2001:db8:7:{n}::1")
    assert limiter.check("2001:db8:7:ff::1") > 0  # a fresh /64 of the same site waits
    assert limiter.check("2001:db8:8::1") == 0
    for n in range(10):  # the overall limit is reached elsewhere
        limiter.failed(f"198.51.{n}.1")
    limiter.failed("203.0.113.9")  # a neighbour of the customer failed once
    assert limiter.check("203.0.113.50") == 0  # the customer has not failed: never held back
    assert limiter.check("203.0.113.9") > 0  # the neighbour has
