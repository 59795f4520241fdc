"""The customer's receipt: who did what during a session, built from its audit events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from assist_protocol.receipt import receipt_text
from broker.store.db import Store
from broker.store.models import AuditEvent, Session, Ticket, utcnow

__all__ = ["build_receipt", "receipt_text"]


async def build_receipt(store: Store, session_id: str) -> dict[str, Any]:
    async with store.read() as db:
        session = await db.get(Session, session_id)
        events = (
            (
                await db.execute(
                    select(AuditEvent)
                    .where(AuditEvent.session_id == session_id)
                    .order_by(AuditEvent.seq)
                )
            )
            .scalars()
            .all()
        )
        ticket = await db.get(Ticket, session.ticket_id) if session else None
    channels: dict[int, dict[str, Any]] = {}
    files: list[dict[str, Any]] = []
    engineers: set[str] = set()
    for event in events:
        details = event.details
        if event.action == "channel.opened":
            engineers.add(event.actor)
            entry = {
                "engineer": event.actor,
                "kind": details.get("kind"),
                "opened": event.time.isoformat(timespec="seconds"),
            }
            for key in ("command", "host", "port"):
                if key in details:
                    entry[key] = details[key]
            channels[int(details["channel_id"])] = entry
        elif event.action == "channel.closed" and details.get("channel_id") in channels:
            channels[int(details["channel_id"])].update(
                bytes_in=details.get("bytes_in"),
                bytes_out=details.get("bytes_out"),
                exit_status=details.get("exit_status"),
                closed=event.time.isoformat(timespec="seconds"),
            )
        elif event.action == "sftp.close" and (
            details.get("bytes_written") or details.get("bytes_read")
        ):
            files.append(
                {
                    "engineer": event.actor,
                    "path": details.get("path"),
                    "direction": "to this computer"
                    if details.get("bytes_written")
                    else "from this computer",
                    "bytes": details.get("bytes_written") or details.get("bytes_read"),
                    "sha256": details.get("sha256"),
                }
            )
    started = session.started_at if session else None
    ended = (session.ended_at if session else None) or utcnow()
    return {
        "session": session_id,
        "ticket": ticket.key if ticket else None,
        "title": ticket.title if ticket else None,
        "engineers": sorted(engineers),
        "started": started.isoformat(timespec="seconds") if started else None,
        "ended": ended.isoformat(timespec="seconds"),
        "duration_seconds": round((ended - started).total_seconds()) if started else 0,
        "end_reason": session.end_reason if session else None,
        "channels": list(channels.values()),
        "files": files,
    }
