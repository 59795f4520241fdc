"""Signed checkpoints of the audit chain head: at the end of every session and at least every
``EVERY`` events (a background loop in the broker)."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import select

from broker.evidence.signing import Signer
from broker.store.db import Store
from broker.store.models import AuditCheckpoint, AuditEvent

log = structlog.get_logger(__name__)

EVERY = 1000


class Checkpointer:
    def __init__(self, store: Store, signer: Signer, every: int = EVERY) -> None:
        self.store = store
        self.signer = signer
        self.every = every

    async def checkpoint(self, *, only_if_behind_by: int = 1) -> AuditCheckpoint | None:
        """Sign the chain head, unless the last checkpoint is less than ``only_if_behind_by``
        events behind it."""
        async with self.store.begin() as db:
            head = (
                await db.execute(
                    select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
                )
            ).first()
            last = (
                await db.execute(
                    select(AuditCheckpoint.seq).order_by(AuditCheckpoint.seq.desc()).limit(1)
                )
            ).scalar()
            if head is None or head[0] - (last or 0) < only_if_behind_by:
                return None
            point = AuditCheckpoint(
                seq=head[0],
                hash=head[1],
                signature=self.signer.sign(head[0], head[1]),
                key_id=self.signer.key_id,
            )
            db.add(point)
        log.info("audit_checkpoint", seq=point.seq)
        return point

    async def run(self, interval: float = 5.0) -> None:
        """Keep checkpoints at most ``every`` events apart."""
        while True:
            try:
                await self.store.finish(self.checkpoint(only_if_behind_by=self.every))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit_checkpoint_failed")
            await asyncio.sleep(interval)
