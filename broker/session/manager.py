"""Creates, tracks and ends live sessions; writes their state and audit rows to the store.

The in-memory maps are a cache of live connections on this node; the store is the record.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

from broker.errors import CodeRejected
from broker.session.consent import MESSAGES, ConsentCodes, rate_limited_message
from broker.session.model import LiveSession, State
from broker.session.ratelimit import Attempt, Limited
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import utcnow

log = structlog.get_logger(__name__)


class SessionManager:
    def __init__(
        self,
        store: Store,
        codes: ConsentCodes,
        after_end: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        self.codes = codes
        #: runs after a session's end is recorded (the broker signs a checkpoint there)
        self.after_end = after_end
        #: called with a session's id as it ends (sinks forget what they kept for it)
        self.ended_hooks: list[Callable[[str], None]] = []
        self._by_ticket: dict[int, LiveSession] = {}
        self._by_key: dict[str, LiveSession] = {}

    # --- lookups ---------------------------------------------------------------------------

    def live(self) -> list[LiveSession]:
        return list(self._by_ticket.values())

    def find(self, ticket_key: str) -> LiveSession | None:
        return self._by_key.get(ticket_key.upper())

    def find_id(self, session_id: str) -> LiveSession | None:
        return next((live for live in self._by_ticket.values() if live.id == session_id), None)

    async def ticket_exists(self, ticket_key: str) -> bool:
        async with self.store.read() as db:
            return await q.find_ticket(db, ticket_key) is not None

    # --- the life of a session -------------------------------------------------------------

    async def redeem(self, code: str, source: str) -> LiveSession:
        """Redeem a customer's code and register the pending session for its ticket."""
        redemption = await self.codes.redeem(code, source, busy=self._busy)
        live = LiveSession(redemption)
        if self._busy(redemption.ticket_id):
            # Another code for the same ticket won between our check and now.
            await self._record_end(live, "busy")
            raise CodeRejected(MESSAGES["busy"], code="busy")
        self._by_ticket[redemption.ticket_id] = live
        self._by_key[redemption.ticket_key.upper()] = live
        log.info("session_created", session=live.id, ticket=live.ticket_key, source=source)
        return live

    def _busy(self, ticket_id: int) -> bool:
        return ticket_id in self._by_ticket

    async def consented(
        self, live: LiveSession, granted: str | None, host_key: str, host: dict[str, str]
    ) -> None:
        scope = live.consent(granted, host_key)
        live.customer_host = dict(host)
        async with self.store.begin(urgent=True) as db:
            await q.update_session(
                db, live.id, state=State.ACTIVE.value, granted_scope=str(scope), customer_host=host
            )
            await q.append_audit(
                db,
                action="session.consented",
                actor="customer",
                ticket_id=live.redemption.ticket_id,
                session_id=live.id,
                details={
                    "requested_scope": live.redemption.scope,
                    "granted_scope": str(scope),
                    "customer_host": host,
                    "helper_host_key": host_key,
                    "helper_link": live.helper_link,
                },
            )

    async def declined(self, live: LiveSession) -> None:
        async with self.store.begin() as db:
            await q.append_audit(
                db,
                action="session.declined",
                actor="customer",
                ticket_id=live.redemption.ticket_id,
                session_id=live.id,
                details={"requested_scope": live.redemption.scope},
            )
        await self.end(live, "declined")

    async def record(
        self, live: LiveSession, action: str, actor: str, details: dict[str, object]
    ) -> None:
        """An audit event about a live session (joins, removals, handoffs)."""
        async with self.store.begin() as db:
            await q.append_audit(
                db,
                action=action,
                actor=actor,
                ticket_id=live.redemption.ticket_id,
                session_id=live.id,
                details=details,
            )

    async def resume(self, token: str, source: str) -> LiveSession:
        """A helper back after a network drop, with the token it got at consent (never the
        code again). Wrong tokens count against ``source`` like wrong codes; every try is
        audited, with why a refused one was refused (never the token)."""
        limiter = self.codes.limiter
        session_id, _, secret = token.partition(".")
        live = self.find_id(session_id[:64])
        attempt = None
        if limiter is not None:
            try:
                attempt = await limiter.reserve(source, "resume_token")
            except Limited as exc:  # counted for one summary event per window
                raise CodeRejected(rate_limited_message(exc.wait), code="rate_limited") from None
        try:
            return await self._resume(live, secret, source, attempt)
        finally:
            if attempt is not None:
                attempt.settle()

    async def _resume(
        self, live: LiveSession | None, secret: str, source: str, attempt: Attempt | None
    ) -> LiveSession:
        reason = None
        if live is None:
            reason = "no_live_session"
        elif not live.resume_allowed(secret[:128]):
            reason = "wrong_token"
        if reason is None and live is not None:
            if attempt is not None:
                attempt.succeeded()
            live.resumed_with(secret[:128])
            live.drop()  # the old connection may not have been noticed dead yet
            return live
        async with self.store.begin() as db:
            await q.append_audit(
                db,
                action="session.resume_refused",
                actor="customer",
                ticket_id=live.redemption.ticket_id if live else None,
                session_id=live.id if live else None,
                details={"source": source, "reason": reason},
            )
        raise CodeRejected(MESSAGES["resume_refused"], code="resume_refused")

    async def dropped(self, live: LiveSession, grace: float) -> None:
        """The helper's connection dropped: record the gap, then wait ``grace`` seconds for
        it to come back before ending the session for ``network``. One wait runs at a time;
        it also sees a drop that comes right after the helper was back (a flapping network),
        which may happen before it has even woken up, so each drop gets its own grace."""
        live.drop()
        if live.in_grace:
            return  # the wait that runs sees this drop too
        live.in_grace = True
        recorded: float | None = None
        failed: Exception | None = None
        try:
            while live.state is not State.ENDED and (since := live.dropped_at) is not None:
                if since != recorded:
                    recorded = since
                    log.info("session_disconnected", session=live.id, grace=grace)
                    try:
                        await self.record(
                            live, "session.disconnected", "broker", {"grace_seconds": grace}
                        )
                    except Exception as exc:  # the store may be down: wait all the same,
                        failed = failed or exc  # and say so once the wait is over
                left = since + grace - time.monotonic()
                if left > 0:
                    await live.back_or_over(left)
                elif live.dropped_at == since:
                    await self.end(live, "network")
        finally:
            live.in_grace = False
        if failed is not None:
            raise failed

    async def started(self, live: LiveSession) -> None:
        """The helper's forward is up: engineers can now reach the customer."""
        live.forwarded = True
        if live.dropped_at is not None:  # back after a drop
            gap = live.gap()
            await self.record(live, "session.resumed", "customer", {"gap_seconds": round(gap, 3)})
            live.dropped_at = None
            live.confirm_token()
            live.connected.set()
            log.info("session_resumed", session=live.id, gap=round(gap, 3))
            return
        live.connected.set()
        async with self.store.begin(urgent=True) as db:
            await q.update_session(db, live.id, started_at=utcnow())
            await q.append_audit(
                db,
                action="session.started",
                actor="customer",
                ticket_id=live.redemption.ticket_id,
                session_id=live.id,
                details={"granted_scope": str(live.granted)},
            )

    async def end(self, live: LiveSession, reason: str) -> None:
        """End a session once, for ``reason``; engineers are told, the store records it."""
        if not live.end(reason):
            return
        for hook in self.ended_hooks:
            hook(live.id)
        if self._by_ticket.get(live.redemption.ticket_id) is live:
            del self._by_ticket[live.redemption.ticket_id]
            self._by_key.pop(live.ticket_key.upper(), None)
        await self._record_end(live, reason)
        log.info("session_ended", session=live.id, ticket=live.ticket_key, reason=reason)
        if self.after_end is not None:
            await self.after_end()

    async def record_end(self, live: LiveSession, reason: str) -> None:
        """Record an end that could not be written when it happened (the store was down)."""
        await self._record_end(live, reason)

    async def _record_end(self, live: LiveSession, reason: str) -> None:
        live.end(reason)
        try:
            async with self.store.begin() as db:
                if await q.end_session(db, live.id, reason):
                    await q.append_audit(
                        db,
                        action="session.ended",
                        actor="broker" if reason not in ("customer", "declined") else "customer",
                        ticket_id=live.redemption.ticket_id,
                        session_id=live.id,
                        details={"reason": reason},
                    )
        except Exception as exc:  # the store may be down: say so in the log, then re-raise
            log.error("session_end_not_recorded", session=live.id, error=repr(exc))
            raise

    async def shutdown(self) -> None:
        for live in self.live():
            await self.end(live, "shutdown")
