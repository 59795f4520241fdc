"""One audit event per limited prefix and window, instead of one row per refused try.

A flood of wrong codes (or tokens, or passwords) from a prefix that is already held back would
otherwise write one chained event per try: 150 rows in under two seconds, each a write turn
taken from real sessions. The limiters count those refusals (broker.session.ratelimit); this
reporter writes what they counted as ``access.rate_limited`` when each window closes, and what
is left when the broker stops.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from broker.background import every
from broker.session.ratelimit import RateLimiter
from broker.store import queries as q
from broker.store.db import Store

log = structlog.get_logger(__name__)


class RefusalReporter:
    def __init__(self, store: Store, limiters: Mapping[str, RateLimiter]) -> None:
        self.store = store
        self.limiters = limiters

    async def report(self, *, flush: bool = False) -> int:
        """Write the closed windows' summaries (all with ``flush``); return how many."""
        written = 0
        for limiter in self.limiters.values():
            for summary in limiter.summaries(flush=flush):
                async with self.store.begin() as db:
                    await q.append_audit(
                        db,
                        action="access.rate_limited",
                        actor=f"unknown@{summary.prefix}",
                        details={
                            "where": summary.where,
                            "prefix": summary.prefix,
                            "refused": summary.refused,
                            "over_seconds": round(summary.last - summary.first, 1),
                            "window_seconds": limiter.window,
                        },
                    )
                log.warning(
                    "rate_limited",
                    where=summary.where,
                    prefix=summary.prefix,
                    refused=summary.refused,
                )
                written += 1
        return written

    async def run(self, interval: float = 5.0) -> None:
        await every(interval, self.report, store=self.store, failure="rate_limit_report_failed")
