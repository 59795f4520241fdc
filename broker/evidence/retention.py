"""Retention: recordings older than their ticket's severity allows are deleted, but their
hashes stay in the channel row and a ``recording.pruned`` event goes into the chain, so that
``audit verify`` still passes. The severity and the session's end are the chain's
(broker.evidence.facts), not the tables': a changed row cannot make evidence go early.
Policy (settings file)::

    [retention]          # days to keep recordings, per severity; a missing severity keeps all
    "3" = 180
    "4" = 90
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select

from broker.errors import ConfigError, NotFound
from broker.evidence.facts import chained_ticket
from broker.evidence.recordings import recording_of, resolve
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import Channel, Session, Ticket, utcnow


def policy(extra: Mapping[str, Any]) -> dict[int, int]:
    """``{severity: days}`` from the ``[retention]`` settings table."""
    table = extra.get("retention", {})
    days: dict[int, int] = {}
    for key, value in table.items():
        try:
            severity, keep = int(key), int(value)
        except (TypeError, ValueError):
            raise ConfigError(f'[retention] {key} = {value!r}: use "1" = 365 and so on') from None
        if severity not in (1, 2, 3, 4) or keep < 0:
            raise ConfigError(f"[retention] {key} = {value!r}: severity 1-4, days 0 or more")
        days[severity] = keep
    return days


async def prune(
    store: Store,
    data_dir: Path,
    days: Mapping[int, int],
    *,
    dry_run: bool = False,
    recordings: Path | None = None,
) -> list[dict[str, Any]]:
    """Delete the recordings past retention; return what was (or would be) pruned. The file
    deleted is the one the chain names, and only inside the recordings folder."""
    root = recordings or data_dir / "recordings"
    now = utcnow()
    pruned: list[dict[str, Any]] = []
    async with store.begin() as db:
        rows = (
            await db.execute(
                select(Channel, Session, Ticket)
                .join(Session, Session.id == Channel.session_id)
                .join(Ticket, Ticket.id == Session.ticket_id)
                .where(Channel.recording_path.is_not(None))
            )
        ).all()
        chained: dict[int, dict[str, Any]] = {}
        for channel, session, ticket in rows:
            if ticket.id not in chained:
                chained[ticket.id] = await chained_ticket(db, ticket.id)
            facts = chained[ticket.id]
            ended = next((s["ended_at"] for s in facts["sessions"] if s["id"] == session.id), None)
            keep = days.get(facts["severity"]) if isinstance(facts["severity"], int) else None
            if keep is None or ended is None:
                continue  # no chained severity or end: kept
            if now - dt.datetime.fromisoformat(ended) < dt.timedelta(days=keep):
                continue
            try:
                ref = await recording_of(db, channel.id)
            except NotFound:
                continue  # the chain names no recording (left for audit verify to report)
            file = resolve(data_dir, root, ref.path)
            entry = {
                "channel_id": channel.id,
                "ticket": ticket.key,
                "path": ref.path,
                "sha256": ref.sha256,
                "size": ref.size,
                "retention_days": keep,
            }
            if file is None:
                continue  # outside the recordings folder: never deleted from here
            pruned.append(entry)
            if dry_run:
                continue
            file.unlink(missing_ok=True)
            channel.recording_path = None  # the hash and size stay
            await q.append_audit(
                db,
                action="recording.pruned",
                actor="retention",
                ticket_id=ticket.id,
                session_id=session.id,
                details=entry,
            )
    return pruned
