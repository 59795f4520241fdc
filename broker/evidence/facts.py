"""What the audit chain itself says of a ticket and its sessions.

The ticket, session and account tables are not chained: whoever can write the database can
change a title, a granted scope or an engineer's name there. Everything the broker signs for
an auditor (a bundle's ``ticket.json``) and everything retention decides on is therefore
derived from chained events only, by :func:`ticket_facts`, which an auditor can run on a
bundle's ``events.jsonl`` to get exactly the same ``ticket.json``. A fact the chain does not
hold (a ticket created before titles were chained) is ``None``, not taken from a table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.store.models import AuditEvent

Event = Mapping[str, Any]


def _when(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return str(value)


def event_dict(row: AuditEvent) -> dict[str, Any]:
    """A stored event in the shape of a bundle's full ``events.jsonl`` line."""
    return {
        "seq": row.seq,
        "time": _when(row.time),
        "ticket_id": row.ticket_id,
        "session_id": row.session_id,
        "actor": row.actor,
        "action": row.action,
        "details": row.details,
    }


def _details(event: Event) -> Mapping[str, Any]:
    details = event.get("details")
    return details if isinstance(details, Mapping) else {}


def ticket_facts(ticket_id: int, events: Iterable[Event]) -> dict[str, Any]:
    """The ticket and its sessions as the chain tells them, from the ticket's events in
    chain order (events of other tickets are ignored)."""
    ticket: dict[str, Any] = {
        "id": ticket_id,
        "key": None,
        "title": None,
        "severity": None,
        "status": "open",
        "customer_name": None,
        "customer_email": None,
        "created_at": None,
        "assignees": [],
    }
    sessions: dict[str, dict[str, Any]] = {}
    issuers: dict[Any, str] = {}  # consent id -> the engineer who issued it
    for event in events:
        if event.get("ticket_id") != ticket_id or "action" not in event:
            continue
        action, details, when = event["action"], _details(event), _when(event.get("time"))
        if action == "ticket.created":
            ticket["created_at"] = when
            for name in ("key", "title", "severity", "customer_name", "customer_email"):
                ticket[name] = details.get(name, ticket[name])
        elif action == "ticket.updated" and isinstance(details.get("status"), Mapping):
            ticket["status"] = details["status"].get("to", ticket["status"])
        elif action == "ticket.assigned":
            ticket["assignees"] = list(details.get("assignees") or [])
        elif action == "consent.issued":
            issuers[details.get("consent_id")] = str(event.get("actor"))
        session_id = event.get("session_id")
        if session_id is None:
            continue
        session = sessions.setdefault(
            str(session_id),
            {
                "id": session_id,
                "state": "pending",
                "engineer": None,
                "requested_scope": None,
                "granted_scope": None,
                "customer_addr": None,
                "customer_host": None,
                "created_at": None,
                "started_at": None,
                "ended_at": None,
                "end_reason": None,
            },
        )
        if action == "consent.redeemed":
            session.update(
                created_at=when,
                customer_addr=details.get("source"),
                requested_scope=details.get("scope"),
                engineer=issuers.get(details.get("consent_id")),
            )
        elif action == "session.consented":
            session.update(
                state="active",
                granted_scope=details.get("granted_scope"),
                customer_host=details.get("customer_host"),
            )
        elif action == "session.started":
            session["started_at"] = when
        elif action == "session.ended":
            session.update(state="ended", ended_at=when, end_reason=details.get("reason"))
        elif action == "session.interrupted":
            session.update(state="interrupted", ended_at=when, end_reason="interrupted")
    return {**ticket, "sessions": list(sessions.values())}


async def chained_ticket(db: AsyncSession, ticket_id: int) -> dict[str, Any]:
    """:func:`ticket_facts` of a ticket in the store."""
    rows = await db.execute(
        select(AuditEvent).where(AuditEvent.ticket_id == ticket_id).order_by(AuditEvent.seq)
    )
    return ticket_facts(ticket_id, (event_dict(r) for r in rows.scalars()))
