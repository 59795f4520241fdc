"""Creates, tracks and ends live sessions; writes their state and audit rows to the store.

The in-memory maps are a cache of live connections on this node; the store is the record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from broker.config import Settings
from broker.errors import CodeRejected
from broker.session.consent import MESSAGES, ConsentCodes, rate_limited_message
from broker.session.core.commands import Accept, Record, Reject
from broker.session.core.events import EndRequested, ResumeTried
from broker.session.core.facts import Policy
from broker.session.core.lifetime import Limits
from broker.session.core.session import SessionCore
from broker.session.live import HelperPort, LiveSession, new_id
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
        settings: Settings | None = None,
    ) -> None:
        self.store = store
        self.codes = codes
        self.settings = settings or Settings()
        #: runs after a session's end is recorded (the broker signs a checkpoint there)
        self.after_end = after_end
        #: called with a session's id as it ends (sinks forget what they kept for it)
        self.ended_hooks: list[Callable[[str], None]] = []
        self._by_ticket: dict[int, LiveSession] = {}
        self._by_key: dict[str, LiveSession] = {}
        #: sessions whose end could not be recorded when they ended (the store failed)
        self.unrecorded: list[tuple[LiveSession, str]] = []

    def policy(self, severity: int) -> Policy:
        """What a session on a ticket of ``severity`` runs under."""
        settings = self.settings
        limits = Limits.for_severity(
            severity,
            normal=settings.session_max,
            severe=settings.session_max_severe,
            idle=settings.session_idle,
            warn_before=settings.session_warn_before,
        )
        return Policy(limits, grace=settings.session_grace, helper_link=settings.helper_link)

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

    async def redeem(
        self, code: str, source: str, conn: int | None = None, helper: HelperPort | None = None
    ) -> LiveSession:
        """Redeem a customer's code and register the pending session for its ticket, with
        helper connection ``conn`` (``helper``) as the one it listens to."""
        redemption = await self.codes.redeem(code, source, busy=self._busy)
        conn = new_id() if conn is None else conn
        live = LiveSession(SessionCore(redemption, self.policy(redemption.severity), conn), self)
        if helper is not None:
            live.attach_helper(conn, helper)
        if self._busy(redemption.ticket_id):
            # Another code for the same ticket won between our check and now.
            live.core.end("busy")  # no helper to tell: it reads the refusal
            await self._record_end(live, "busy")
            raise CodeRejected(MESSAGES["busy"], code="busy")
        self._by_ticket[redemption.ticket_id] = live
        self._by_key[redemption.ticket_key.upper()] = live
        log.info("session_created", session=live.id, ticket=live.ticket_key, source=source)
        return live

    def _busy(self, ticket_id: int) -> bool:
        return ticket_id in self._by_ticket

    async def resume(
        self, token: str, source: str, conn: int, helper: HelperPort | None = None
    ) -> LiveSession:
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
            return await self._resume(live, secret, source, conn, helper, attempt)
        finally:
            if attempt is not None:
                attempt.settle()

    async def _resume(
        self,
        live: LiveSession | None,
        secret: str,
        source: str,
        conn: int,
        helper: HelperPort | None,
        attempt: Attempt | None,
    ) -> LiveSession:
        reason = "no_live_session"
        if live is not None:
            if helper is not None:
                live.attach_helper(conn, helper)
            verdict = await live.ask(ResumeTried(conn, new_id(), secret, source))
            if isinstance(verdict, Accept):
                if attempt is not None:
                    attempt.succeeded()
                return live
            reason = verdict.reason if isinstance(verdict, Reject) else "refused"
            live.detach_helper(conn)
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

    # --- the runner's keeper: the session's record --------------------------------------------

    async def write(self, live: LiveSession, record: Record) -> None:
        """An audit event the session's core decided on, with its row's changes."""
        async with self.store.begin(urgent=record.urgent) as db:
            if record.session or record.started:
                changes = dict(record.session or {})
                if record.started:
                    changes["started_at"] = utcnow()
                await q.update_session(db, live.id, **changes)
            await q.append_audit(
                db,
                action=record.action,
                actor=record.actor,
                ticket_id=live.redemption.ticket_id,
                session_id=live.id,
                details=dict(record.details),
            )

    async def record(
        self, live: LiveSession, action: str, actor: str, details: dict[str, object]
    ) -> None:
        """An audit event about a live session, from outside its core."""
        await self.write(live, Record(action, actor, details))

    async def end(self, live: LiveSession, reason: str) -> None:
        """End a session once, for ``reason``: engineers are told, the store records it."""
        await live.step(EndRequested(reason))

    async def finish(self, live: LiveSession, reason: str) -> None:
        """The session ended: let go of it here, record the end, sign."""
        for hook in self.ended_hooks:
            hook(live.id)
        if self._by_ticket.get(live.redemption.ticket_id) is live:
            del self._by_ticket[live.redemption.ticket_id]
            self._by_key.pop(live.ticket_key.upper(), None)
        try:
            await self._record_end(live, reason)
        except Exception:
            self.unrecorded.append((live, reason))  # the watchdog writes it once it can
            raise
        log.info("session_ended", session=live.id, ticket=live.ticket_key, reason=reason)
        if self.after_end is not None:
            await self.after_end()

    async def record_end(self, live: LiveSession, reason: str) -> None:
        """Record an end that could not be written when it happened (the store was down)."""
        await self._record_end(live, reason)

    async def record_unrecorded(self) -> None:
        """Record the ends that failed to be written (the store is back)."""
        while self.unrecorded:
            live, reason = self.unrecorded[0]
            await self._record_end(live, reason)
            self.unrecorded.pop(0)

    async def _record_end(self, live: LiveSession, reason: str) -> None:
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
