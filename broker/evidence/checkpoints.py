"""Signed checkpoints of the audit chain head: within ``interval`` seconds of any new event, at
the end of every session, after every command-line change, and before an export.

Before it signs, the broker checks the history it is about to vouch for: from the last
checkpoint in its checkpoint log (outside the database) to the head, every event must chain,
and every checkpoint in the database since must be signed, name the chain's hash and name the
checkpoint before it. If not, that is an alarm (an error in the log, a metric, and an
``audit.alarm`` event) and no signature is made: a forged history never gets signed.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.background import every
from broker.errors import BrokerError
from broker.evidence import sshsig
from broker.evidence.ckptlog import CheckpointLog, Signed
from broker.evidence.signing import Signer
from broker.evidence.verify import Checkpoint, as_chain_event, check_checkpoints, walk
from broker.store import chain
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import AuditCheckpoint, AuditEvent, utcnow

log = structlog.get_logger(__name__)

#: seconds between looks at the chain head (a new head is signed at the next look)
INTERVAL = 5.0


class ChainBroken(BrokerError):
    """The history since the last checkpoint does not verify; nothing was signed."""

    code = "chain_broken"


class Checkpointer:
    def __init__(
        self,
        store: Store,
        signer: Signer,
        checkpoint_log: CheckpointLog | None = None,
        *,
        on_alarm: Callable[[str], None] | None = None,
        on_signed: Callable[[Signed], None] | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.log = checkpoint_log or CheckpointLog.of(signer.data_dir)
        #: told each alarm's text (the broker's metrics)
        self.on_alarm = on_alarm
        #: told each new checkpoint (the optional copy to an operator's place)
        self.on_signed = on_signed
        self._alarmed: set[str] = set()

    async def checkpoint(self, *, only_if_behind_by: int = 1) -> AuditCheckpoint | None:
        """Sign the chain head, unless the last checkpoint is less than ``only_if_behind_by``
        events behind it. Raises :class:`ChainBroken` (after the alarm) when the history
        since the last checkpoint does not verify."""
        problem: str | None = None
        point: AuditCheckpoint | None = None
        async with self.store.begin() as db:
            if db.get_bind().dialect.name == "postgresql":
                await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": q.AUDIT_LOCK})
            head = (
                await db.execute(
                    select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
                )
            ).first()
            last = (
                await db.execute(
                    select(AuditCheckpoint)
                    .order_by(AuditCheckpoint.seq.desc(), AuditCheckpoint.id.desc())
                    .limit(1)
                )
            ).scalar()
            problem = await self._lost_problem(db)
            behind = head is not None and head[0] - (last.seq if last else 0) >= only_if_behind_by
            if problem is None and not behind:
                return None
            if problem is None and head is not None:
                try:
                    problem = await self._history_problem(db, head[0])
                except (StatementError, ValueError, TypeError) as exc:  # a row written by hand
                    problem = f"the audit history cannot be read ({exc})"[:500]
            if problem is None and head is not None:
                point = self._sign(head[0], head[1], Checkpoint.of(last).digest if last else None)
                db.add(point)
        if problem is not None:
            await self._alarm(problem)
            raise ChainBroken(f"The audit history does not verify, so it was not signed: {problem}")
        assert point is not None
        for seq in [s for s in self.store.appended if s <= point.seq]:
            del self.store.appended[seq]  # signed now: the signature keeps them
        signed = Signed(
            seq=point.seq,
            hash=point.hash,
            prev=point.prev or chain.GENESIS,
            digest=point.digest or "",
            message=point.message or "",
            sshsig=point.sshsig or "",
            key_id=point.key_id,
        )
        self.log.append(signed)
        log.info("audit_checkpoint", seq=point.seq)
        if self.on_signed is not None:
            self.on_signed(signed)
        return point

    def _sign(self, seq: int, head: str, prev: str | None) -> AuditCheckpoint:
        message = chain.checkpoint_message_v2(seq, head, prev or chain.GENESIS, utcnow())
        return AuditCheckpoint(
            seq=seq,
            hash=head,
            signature="",
            key_id=self.signer.key_id,
            message=message,
            sshsig=self.signer.sshsig(message.encode(), sshsig.CHECKPOINT_NAMESPACE),
            prev=prev or chain.GENESIS,
            digest=chain.checkpoint_digest(message.encode()),
        )

    async def _lost_problem(self, db: AsyncSession) -> str | None:
        """Every event this process wrote since the last signature is still there, unchanged:
        a consistent chain could otherwise hide an event deleted (or never stored) before
        anyone signed it."""
        mine = dict(self.store.appended)
        if not mine:
            return None
        rows = await db.execute(
            select(AuditEvent.seq, AuditEvent.hash).where(AuditEvent.seq.in_(list(mine)))
        )
        found = {int(seq): str(h) for seq, h in rows.all()}
        for seq in sorted(mine):
            if found.get(seq) != mine[seq]:
                what = "is gone" if seq not in found else "was changed"
                return (
                    f"event {seq}, written by this broker and not yet signed, {what}: events "
                    "were deleted or rewritten before their checkpoint"
                )
        return None

    async def _history_problem(self, db: AsyncSession, head_seq: int) -> str | None:
        """What is wrong with the history between the last logged checkpoint and the head."""
        anchor = self.log.last()
        start = anchor.seq if anchor is not None else 1
        rows = (
            (
                await db.execute(
                    select(AuditEvent)
                    .where(AuditEvent.seq >= start, AuditEvent.seq <= head_seq)
                    .order_by(AuditEvent.seq)
                )
            )
            .scalars()
            .all()
        )
        events = [as_chain_event(r) for r in rows]
        stored = (
            await db.execute(
                select(AuditCheckpoint)
                .where(AuditCheckpoint.seq >= start)
                .order_by(AuditCheckpoint.seq, AuditCheckpoint.id)
            )
        ).scalars()
        points = [Checkpoint.of(p) for p in stored]
        if anchor is not None:
            first = events[0] if events else None
            if first is None or first.seq != anchor.seq or first.hash != anchor.hash:
                return (
                    f"the event {anchor.seq} signed by the last logged checkpoint is gone or "
                    "changed"
                )
            if not any(p.digest == anchor.digest for p in points):
                return (
                    f"the checkpoint at event {anchor.seq} in the checkpoint log is missing from "
                    "the database"
                )
            problems, _, hashes = walk(
                events[1:],
                first_seq=anchor.seq + 1,
                first_prev=anchor.hash,
                seal_key=self.store.seal_key,
                sealed_from=anchor.seq + 1,  # written since this broker logged its checkpoint
            )
            hashes[anchor.seq] = anchor.hash
            after = [p for p in points if p.seq > anchor.seq or p.digest == anchor.digest]
            first_prev: str | None = None
        else:
            # No checkpoint logged yet: events after the last stored checkpoint (an older
            # version's, at its stop) were written by a broker that seals.
            last = max((p.seq for p in points), default=0)
            problems, _, hashes = walk(events, seal_key=self.store.seal_key, sealed_from=last + 1)
            after, first_prev = points, chain.GENESIS
        if problems:
            return problems[0]
        if events and events[-1].seq != head_seq:
            return f"the events after {events[-1].seq} are missing"
        problems, _ = check_checkpoints(
            after, hashes, head_seq, self.signer.public, first_prev=first_prev
        )
        return problems[0] if problems else None

    async def _alarm(self, problem: str) -> None:
        if self.on_alarm is not None:
            self.on_alarm(problem)
        if problem in self._alarmed:
            return  # one log line and one audit event per distinct break, not one per look
        self._alarmed.add(problem)
        log.error("audit_chain_alarm", problem=problem)
        try:
            async with self.store.begin() as db:
                await q.append_audit(
                    db,
                    action="audit.alarm",
                    actor="broker",
                    details={
                        "problem": problem,
                        "signing": "stopped until the history is restored",
                    },
                )
        except Exception:
            log.exception("audit_alarm_not_recorded")

    async def sign_quietly(self) -> None:
        """Sign the head if it moved; a broken chain has raised its alarm already."""
        try:
            await self.store.finish(self.checkpoint())
        except ChainBroken:
            pass

    async def run(self, interval: float = INTERVAL) -> None:
        """Keep the head signed: within ``interval`` seconds of any new event."""
        await every(
            interval, self.sign_quietly, store=self.store, failure="audit_checkpoint_failed"
        )
