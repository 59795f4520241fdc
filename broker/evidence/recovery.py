"""After a crash (``kill -9``, power loss): sessions this node left live are marked
``interrupted`` with an audit event, and their unfinished recordings are hashed as they are on
disk (readable up to the crash) so that the evidence still verifies."""

from __future__ import annotations

import hashlib
from pathlib import Path

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import Channel, Session, utcnow

log = structlog.get_logger(__name__)

REASON = "the broker stopped without ending the session (crash or kill)"


async def recover(store: Store, node: str, recordings: Path, data_dir: Path) -> int:
    """Mark this node's leftover live sessions interrupted; return how many."""
    async with store.begin() as db:
        leftovers = (
            (
                await db.execute(
                    select(Session).where(Session.node == node, Session.state.in_(q.LIVE_STATES))
                )
            )
            .scalars()
            .all()
        )
        for session in leftovers:
            await _close_channels(db, session, recordings, data_dir)
            await db.execute(
                update(Session)
                .where(Session.id == session.id)
                .values(state="interrupted", ended_at=utcnow(), end_reason="interrupted")
            )
            await q.append_audit(
                db,
                action="session.interrupted",
                actor="broker",
                ticket_id=session.ticket_id,
                session_id=session.id,
                details={"reason": REASON},
            )
    for session in leftovers:
        log.warning("session_interrupted", session=session.id)
    return len(leftovers)


async def _close_channels(
    db: AsyncSession, session: Session, recordings: Path, data_dir: Path
) -> None:
    channels = (
        (
            await db.execute(
                select(Channel).where(Channel.session_id == session.id, Channel.closed_at.is_(None))
            )
        )
        .scalars()
        .all()
    )
    for channel in channels:
        channel.closed_at = utcnow()
        channel.close_reason = "interrupted"
        path = recordings / session.id / f"{channel.ref}.cast"
        if channel.ref is None or not path.exists():
            continue
        data = path.read_bytes()
        try:
            relative = str(path.relative_to(data_dir))
        except ValueError:
            relative = str(path)
        channel.recording_path = relative
        channel.recording_sha256 = hashlib.sha256(data).hexdigest()
        channel.recording_size = len(data)
        await q.append_audit(
            db,
            action="recording.closed",
            actor="broker",
            ticket_id=session.ticket_id,
            session_id=session.id,
            details={
                "channel_id": channel.id,
                "path": relative,
                "sha256": channel.recording_sha256,
                "size": len(data),
                "interrupted": True,
            },
        )
