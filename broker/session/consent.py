"""Consent codes. The only module that ever sees a code in clear.

A code is 9 random digits from :mod:`secrets`, shown once as ``123-456-789``. The store keeps
only HMAC-SHA256(key, digits) where the key lives in the data dir (mode 0600). Wrong tries are
rate limited per network prefix and globally (broker.session.ratelimit).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import secrets
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession

from assist_protocol.codeformat import CODE_DIGITS, MALFORMED, code_digits
from assist_protocol.scope import Scope
from broker.errors import CodeRejected, Invalid, NotFound
from broker.session.core.facts import Redemption
from broker.session.ratelimit import Attempt, Limited, RateLimiter
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import Account, ConsentCode, Ticket, utcnow

# Every refusal has its own plain message; the helper shows it to the customer word for word.
MESSAGES = {
    "unknown": "This code is not valid. Check the digits, or ask the engineer for a new code.",
    "expired": "This code has expired. Ask the engineer for a new code.",
    "used": "This code has already been used. Ask the engineer for a new code.",
    "revoked": "This code was withdrawn by the support desk. Ask the engineer for a new code.",
    "busy": "A session for this ticket is already open. End it first, or ask the engineer.",
    "malformed": MALFORMED,
    "resume_refused": (
        "The session could not be resumed: it has ended (the connection was away too long). "
        "Ask the engineer for a new code if you still need help."
    ),
}

#: the refusals that count as wrong tries: only a code nobody issued can be a guess
GUESSES = frozenset({"unknown"})
#: refusals that are no guess, limited apart (``ConsentCodes.stale``)
STALE = frozenset({"used", "expired", "revoked"})


def rate_limited_message(wait_seconds: float) -> str:
    wait = max(1, math.ceil(wait_seconds))
    unit = "second" if wait == 1 else "seconds"
    return f"Too many wrong codes were tried. Wait {wait} {unit}, then try again."


def new_code() -> str:
    """A fresh code, formatted for people: ``123-456-789``."""
    digits = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    return f"{digits[0:3]}-{digits[3:6]}-{digits[6:9]}"


def normalize(text: str) -> str:
    """Digits only; spaces and dashes that people type are dropped. Raises on anything else."""
    digits = code_digits(text)
    if digits is None:
        raise CodeRejected(MESSAGES["malformed"], code="malformed")
    return digits


class CodeHasher:
    """Keyed hash of codes. Holds the HMAC key; compare hashes with :meth:`same`."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the code HMAC key must be at least 32 bytes")
        self._key = key

    def hash(self, code: str) -> bytes:
        return hmac.new(self._key, normalize(code).encode(), hashlib.sha256).digest()

    @staticmethod
    def same(a: bytes, b: bytes) -> bool:
        return hmac.compare_digest(a, b)


# --- issuing and redeeming against the store -----------------------------------------------


class ConsentCodes:
    """Issues and redeems codes. Every refusal is audited with its reason, never the code."""

    def __init__(
        self,
        store: Store,
        hasher: CodeHasher,
        limiter: RateLimiter | None = None,
        *,
        stale: RateLimiter | None = None,
        node: str = "local",
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.limiter = limiter
        #: codes that are no guess but do not work (malformed, used, expired, withdrawn): a
        #: customer retrying an old code is not locked out of a new one, but nobody may flood
        #: the audit chain with them either (a limit of their own, several times the guesses')
        self.stale = stale
        self.node = node
        #: told "issued", "redeemed" or "rejected" (the broker's metrics)
        self.counted: Callable[[str], None] = lambda _outcome: None

    async def issue(
        self, ticket_key: str, engineer_name: str, scope: str, ttl: float
    ) -> tuple[str, ConsentCode]:
        """A new code on a ticket. Returns the clear code (show it once, then forget it)."""
        canonical = str(Scope.parse(scope))
        async with self.store.begin() as db:
            ticket = await q.get_ticket(db, ticket_key)
            if ticket.status == "closed":
                raise Invalid(f"{ticket.key} is closed; reopen it before issuing a code")
            engineer = await q.get_account(db, engineer_name)
            if engineer.role != "engineer" or engineer.disabled:
                raise Invalid(f"{engineer.name} is not an active engineer account")
            if not await q.may_work_on(db, ticket, engineer.name):
                names = ", ".join(await q.assignees(db, ticket))
                raise Invalid(f"{ticket.key} is assigned to {names}, not to {engineer.name}")
            while True:
                code = new_code()
                digest = self.hasher.hash(code)
                if await q.find_code(db, digest) is None:
                    break
            now = utcnow()
            row = await q.insert_code(
                db,
                ticket=ticket,
                code_hash=digest,
                scope=canonical,
                issued_by=engineer,
                expires_at=now + dt.timedelta(seconds=ttl),
            )
            await q.append_audit(
                db,
                action="consent.issued",
                actor=engineer.name,
                ticket_id=ticket.id,
                details={
                    "consent_id": row.id,
                    "scope": canonical,
                    "expires_at": row.expires_at.isoformat(),
                },
            )
        self.counted("issued")
        return code, row

    async def revoke(self, code_id: int, actor: str, *, only_by: int | None = None) -> ConsentCode:
        """Withdraw an unused code (``only_by``: only if that account issued it)."""
        async with self.store.begin() as db:
            code = await db.get(ConsentCode, code_id)
            if code is None or (only_by is not None and code.issued_by != only_by):
                mine = "" if only_by is None else " of yours"
                raise NotFound(f"There is no consent code {code_id}{mine}.")
            if code.state != "issued":
                raise Invalid(
                    f"Consent code {code_id} is {code.state}; only unused codes can be revoked."
                )
            code.state = "revoked"
            await q.append_audit(
                db,
                action="consent.revoked",
                actor=actor,
                ticket_id=code.ticket_id,
                details={"consent_id": code.id},
            )
            return code

    async def redeem(
        self, text: str, source: str, *, busy: Callable[[int], bool] = lambda _id: False
    ) -> Redemption:
        """Redeem a code typed by a customer at ``source`` (an IP address).

        Exactly one of any number of concurrent callers with the same code succeeds. Raises
        :class:`CodeRejected` with the customer's message and a reason code otherwise.
        """
        attempt: Attempt | None = None
        stale: Attempt | None = None
        try:
            # Decided before the first await: concurrent tries cannot all slip under the limit.
            if self.limiter is not None:
                attempt = await self.limiter.reserve(source, "consent_code")
            if self.stale is not None:
                stale = await self.stale.reserve(source, "stale_code")
        except Limited as exc:  # counted for one summary event per window, not a row each
            if attempt is not None:
                attempt.succeeded()
                attempt.settle()
            self.counted("rejected")
            raise CodeRejected(rate_limited_message(exc.wait), code="rate_limited") from None
        try:
            return await self._redeem(text, source, busy, attempt, stale)
        finally:
            for reserved in (attempt, stale):
                if reserved is not None:
                    reserved.settle()  # a failure, unless it succeeded

    async def _redeem(
        self,
        text: str,
        source: str,
        busy: Callable[[int], bool],
        attempt: Attempt | None,
        stale: Attempt | None,
    ) -> Redemption:
        try:
            digest = self.hasher.hash(text)
        except CodeRejected:
            if attempt is not None:
                attempt.succeeded()  # no guess: it cannot be any code (audited below, and
            await self._reject("malformed", source, None, {})  # counted as stale)
            raise
        # The claim runs to its end even if the helper hangs up meanwhile (asyncssh then
        # cancels the login): a claimed code always has its session row and audit event.
        code, reason, redemption = await self.store.finish(self._claim(digest, source, busy))
        if reason not in GUESSES and attempt is not None:
            # a right code, a busy ticket, or a code found by its HMAC that was once valid
            # (expired, used, withdrawn): no guess, so no failed try (still audited)
            attempt.succeeded()
        if reason not in STALE and stale is not None:
            stale.succeeded()
        if redemption is not None:
            self.counted("redeemed")
            return redemption
        await self._reject(reason or "unknown", source, code, {})
        raise CodeRejected(MESSAGES[reason or "unknown"], code=reason or "unknown")

    async def _claim(
        self, digest: bytes, source: str, busy: Callable[[int], bool]
    ) -> tuple[ConsentCode | None, str | None, Redemption | None]:
        now = utcnow()
        async with self.store.begin(urgent=True) as db:
            code = await q.find_code(db, digest)
            reason = self._refusal(code, now)
            if code is not None and reason is None and busy(code.ticket_id):
                reason = "busy"
            if code is not None and reason is None and not await q.claim_code(db, code, now):
                reason = "used"  # another helper won the race
            if code is not None and reason is None:
                return code, None, await self._open_session(db, code, source)
        return code, reason, None

    @staticmethod
    def _refusal(code: ConsentCode | None, now: dt.datetime) -> str | None:
        if code is None:
            return "unknown"
        if code.state == "redeemed":
            return "used"
        if code.state == "revoked":
            return "revoked"
        if code.state == "expired" or code.expires_at <= now:
            return "expired"
        return None

    async def _open_session(self, db: AsyncSession, code: ConsentCode, source: str) -> Redemption:
        session = await q.create_session(db, code=code, customer_addr=source, node=self.node)
        ticket = await db.get_one(Ticket, code.ticket_id)
        engineer = await db.get_one(Account, code.issued_by)
        await q.append_audit(
            db,
            action="consent.redeemed",
            actor="customer",
            ticket_id=ticket.id,
            session_id=session.id,
            details={"consent_id": code.id, "source": source, "scope": code.scope},
        )
        return Redemption(
            session_id=session.id,
            code_id=code.id,
            ticket_id=ticket.id,
            ticket_key=ticket.key,
            ticket_title=ticket.title,
            severity=ticket.severity,
            engineer_id=engineer.id,
            engineer_name=engineer.name,
            engineer_display=engineer.display_name,
            scope=code.scope,
        )

    async def _reject(
        self, reason: str, source: str, code: ConsentCode | None, extra: dict[str, object]
    ) -> None:
        self.counted("rejected")
        details: dict[str, object] = {"reason": reason, "source": source, **extra}
        if code is not None:
            details["consent_id"] = code.id
        async with self.store.begin() as db:
            await q.append_audit(
                db,
                action="consent.rejected",
                actor="customer",
                ticket_id=code.ticket_id if code is not None else None,
                details=details,
            )
