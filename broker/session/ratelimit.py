"""Limits on failed tries (consent codes, resume tokens, web passwords), per network prefix and in
total. No I/O; the clock is injected.

Two rules keep a flood from getting through or from stalling everyone:

- **Decided before anything is awaited.** A try takes a place the moment it starts (see
  :meth:`RateLimiter.reserve`), before any database read or password hash. A prefix whose
  failures reached its limit is refused at once. One whose failures *and* tries still under
  way would reach it waits until one of those settles, then is decided again: forty concurrent
  wrong passwords from one address are five checks and thirty-five refusals, while twenty
  customers behind one address with twenty right codes all get in, five at a time.
- **Prefixes, not just addresses.** An IPv4 address counts against itself (/32) and its /24; an
  IPv6 address against its /64 (one host often holds a whole /64) and its /48 (one site). A
  neighbourhood of addresses cannot multiply the limit; a right code from an address whose
  network failed too often waits like a wrong one.

The overall limit only holds back sources that have failed themselves (their own /32 or /64)
within the window: a flood from elsewhere must not lock out a customer typing their own code.

Refusals of a prefix that is held back are counted, not written one by one: :meth:`summaries`
hands out one summary per prefix and window, for one audit event each.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: the longest a try waits for the tries under way before it (they take milliseconds)
PATIENCE = 30.0


class Limited(Exception):
    """Refused: too many failures from this prefix; ``wait`` seconds until it may try again."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"wait {wait:.0f} s")
        self.wait = wait


@dataclass
class Summary:
    """Refusals of one prefix in one window, while it was limited."""

    where: str
    prefix: str
    refused: int
    first: float
    last: float


class Attempt:
    """A try under way. It ends as :meth:`succeeded` or, by default, failed (:meth:`settle`)."""

    def __init__(self, limiter: RateLimiter, keys: list[str]) -> None:
        self._limiter = limiter
        self._keys = keys
        self._settled = False

    def succeeded(self) -> None:
        self._end(failed=False)

    def settle(self) -> None:
        """Count the try as failed unless it succeeded (call it in ``finally``)."""
        self._end(failed=True)

    def _end(self, failed: bool) -> None:
        if not self._settled:
            self._settled = True
            self._limiter._ended(self._keys, failed)


@dataclass
class RateLimiter:
    per_source: int
    overall: int
    window: float
    #: failures allowed from one IPv4 /24 (the /32 and an IPv6 /64 get ``per_source``)
    per_prefix: int | None = None
    clock: Callable[[], float] = time.monotonic
    _fails: dict[str, deque[float]] = field(default_factory=dict)
    _busy: Counter[str] = field(default_factory=Counter)
    _all: deque[float] = field(default_factory=deque)
    _refused: dict[tuple[str, str], Summary] = field(default_factory=dict)
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def prefixes(self, source: str) -> list[tuple[str, int]]:
        """The keys a source counts against, each with its limit."""
        wide = self.per_prefix if self.per_prefix is not None else 4 * self.per_source
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return [(source[:100], self.per_source)]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if isinstance(address, ipaddress.IPv4Address):
            block = ipaddress.ip_network(f"{address}/24", strict=False)
            return [(f"{address}/32", self.per_source), (str(block), wide)]
        host = ipaddress.ip_network(f"{address}/64", strict=False)
        site = ipaddress.ip_network(f"{address}/48", strict=False)
        return [(str(host), self.per_source), (str(site), wide)]

    def _trim(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def _failures(self, key: str, now: float) -> int:
        times = self._fails.get(key)
        if times is None:
            return 0
        self._trim(times, now)
        if not times:
            del self._fails[key]
            return 0
        return len(times)

    def _decide(self, source: str, now: float) -> tuple[float, str, bool]:
        """(seconds to wait, the prefix that holds the source back, whether it must wait for
        tries under way)."""
        wait, holder, busy, own = 0.0, "", False, False
        for number, (key, limit) in enumerate(self.prefixes(source)):
            failures = self._failures(key, now)
            own = own or (number == 0 and failures > 0)  # its own address, not its network
            if failures >= limit:
                until = self._fails[key][-limit] + self.window - now
                if until > wait:
                    wait, holder = until, key
            elif failures + self._busy[key] >= limit:
                busy = True
        self._trim(self._all, now)
        if own and len(self._all) >= self.overall:
            overall = self._all[0] + self.window - now
            if overall > wait:
                wait, holder = overall, self.prefixes(source)[0][0]
        return wait, holder, busy

    def check(self, source: str) -> float:
        """Seconds ``source`` must wait before it may try (0 when it may)."""
        return self._decide(source, self.clock())[0]

    def try_reserve(self, source: str, where: str = "") -> Attempt | float | None:
        """Without waiting: an :class:`Attempt`; seconds to wait when limited (counted towards
        this window's summary for ``where``); or ``None`` when tries under way must settle
        first."""
        now = self.clock()
        wait, holder, busy = self._decide(source, now)
        if wait > 0:
            summary = self._refused.get((where, holder))
            if summary is None:
                self._refused[(where, holder)] = Summary(where, holder, 1, now, now)
            else:
                summary.refused += 1
                summary.last = now
            return wait
        if busy:
            return None
        keys = [key for key, _ in self.prefixes(source)]
        self._busy.update(keys)
        return Attempt(self, keys)

    async def reserve(self, source: str, where: str = "", patience: float = PATIENCE) -> Attempt:
        """Start a try (decided before anything else is awaited), waiting for the tries under
        way of the same prefix when they could reach its limit; :class:`Limited` if it may
        not try."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            decided = self.try_reserve(source, where)
            if isinstance(decided, Attempt):
                return decided
            if decided is not None:
                raise Limited(decided)
            settled: asyncio.Future[None] = loop.create_future()
            self._waiters.append(settled)
            try:
                await asyncio.wait_for(settled, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise Limited(self.window) from None
            finally:
                if settled in self._waiters:
                    self._waiters.remove(settled)

    def _ended(self, keys: list[str], failed: bool) -> None:
        now = self.clock()
        self._busy.subtract(keys)
        for key in keys:
            if self._busy[key] <= 0:
                del self._busy[key]
            if failed:
                self._fails.setdefault(key, deque()).append(now)
        if failed:
            self._all.append(now)
            if len(self._all) > self.overall * 2:  # bounded: the window caps what counts
                self._all.popleft()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:  # each decides again, in turn
            if not waiter.done():
                waiter.set_result(None)

    def failed(self, source: str) -> None:
        """Count one failure of ``source`` at once (tests, and callers without a try)."""
        now = self.clock()
        for key, _ in self.prefixes(source):
            self._fails.setdefault(key, deque()).append(now)
        self._all.append(now)

    def summaries(self, *, flush: bool = False) -> list[Summary]:
        """The refusal counts of windows that have closed (all of them with ``flush``)."""
        now = self.clock()
        done = [
            key
            for key, summary in self._refused.items()
            if flush or summary.first + self.window <= now
        ]
        return [self._refused.pop(key) for key in done]
