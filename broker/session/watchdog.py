"""Fail closed when the store goes away: the audit is a required sink, so if the database
cannot be written for about a second, every live session ends (engineers are told why) rather
than going on unaudited. The outage and the sessions it ended are recorded as soon as the
database is back."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from sqlalchemy import text

from broker.session.manager import SessionManager
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import utcnow

log = structlog.get_logger(__name__)

REASON = "store_unavailable"


class StoreWatchdog:
    def __init__(
        self, store: Store, manager: SessionManager, interval: float = 0.5, strikes: int = 2
    ) -> None:
        self.store = store
        self.manager = manager
        self.interval = interval
        self.strikes = strikes
        self._failures = 0
        self._outage: dict[str, Any] | None = None

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval)

    async def check(self) -> None:
        try:
            await self.store.finish(self._probe())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failures += 1
            if self._failures >= self.strikes and self._outage is None:
                await self._fail_closed(repr(exc))
            return
        self._failures = 0
        if self._outage is not None:
            await self._recovered()
        if self.manager.unrecorded:
            try:
                await self.manager.record_unrecorded()
            except Exception as exc:  # not yet: the next look tries again
                log.warning("session_end_not_recorded_yet", error=repr(exc))

    async def _probe(self) -> None:
        async with self.store.begin() as db:  # a write transaction: writable, not just up
            await db.execute(text("SELECT 1"))

    async def _fail_closed(self, error: str) -> None:
        ended = [live for live in self.manager.live()]
        self._outage = {"since": utcnow().isoformat(), "error": error[:300], "ended": ended}
        log.error("store_unavailable_sessions_stopped", sessions=len(ended), error=error)
        for live in ended:
            try:
                await self.manager.end(live, REASON)
            except Exception:  # the end is recorded once the store is back
                log.warning("session_end_not_recorded_yet", session=live.id)

    async def _recovered(self) -> None:
        outage, self._outage = self._outage, None
        assert outage is not None
        ended = outage.pop("ended")
        for live in ended:
            await self.manager.record_end(live, REASON)
        async with self.store.begin() as db:
            await q.append_audit(
                db,
                action="broker.store_unavailable",
                actor="broker",
                details={
                    **outage,
                    "until": utcnow().isoformat(),
                    "sessions_ended": [live.id for live in ended],
                },
            )
        log.warning("store_available_again", sessions_ended=len(ended))
