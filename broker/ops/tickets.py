"""Tickets: open one, restrict it to engineers, change its status, and what an actor may see."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.errors import Denied, Invalid
from broker.ops import shapes
from broker.ops.base import ADMIN, ENGINEER, EVERYONE, Actor, operation
from broker.store import listing
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import ConsentCode, Ticket, utcnow

STATUSES = ("open", "pending", "resolved", "closed")


async def visible(store: Store, actor: Actor, key: str) -> Ticket:
    """The ticket, if ``actor`` may see it (NotFound if none, Denied if not theirs)."""
    async with store.read() as db:
        ticket = await q.get_ticket(db, key)
        if not await listing.may_see_ticket(db, actor.viewer, ticket.id):
            raise Denied(f"{ticket.key} is assigned to other engineers.")
    return ticket


@operation(ENGINEER, ADMIN)
async def create(
    store: Store,
    actor: Actor,
    *,
    title: str,
    severity: int,
    customer_email: str | None = None,
    customer_name: str | None = None,
    key: str | None = None,
) -> Ticket:
    """Open a ticket (audited ``ticket.created``, the start of its evidence)."""
    async with store.begin() as db:
        return await q.create_ticket(
            db,
            title=title,
            severity=severity,
            customer_email=customer_email,
            customer_name=customer_name,
            key=key,
            actor=actor.name,
        )


@operation(ADMIN)
async def assign(store: Store, actor: Actor, key: str, engineers: list[str]) -> dict[str, Any]:
    """Restrict a ticket to these engineers (none: open to every engineer)."""
    async with store.begin() as db:
        ticket = await q.get_ticket(db, key)
        names = await q.set_assignees(db, ticket, engineers)
        await q.append_audit(
            db,
            action="ticket.assigned",
            actor=actor.name,
            ticket_id=ticket.id,
            details={"assignees": names},
        )
    return {"ticket": ticket.key, "assignees": names}


@operation(ENGINEER, ADMIN)
async def set_status(store: Store, actor: Actor, key: str, status: str) -> Ticket:
    if status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    seen = await visible(store, actor, key)
    async with store.begin() as db:
        ticket = await db.get_one(Ticket, seen.id)
        before, ticket.status = ticket.status, status
        ticket.updated_at = utcnow()
        await q.append_audit(
            db,
            action="ticket.updated",
            actor=actor.name,
            ticket_id=ticket.id,
            details={"status": {"from": before, "to": status}},
        )
        if status == "closed":  # the codes still out can open nothing more
            await _withdraw_codes(db, actor, ticket)
    return ticket


async def _withdraw_codes(db: AsyncSession, actor: Actor, ticket: Ticket) -> None:
    unused = await db.execute(
        select(ConsentCode).where(ConsentCode.ticket_id == ticket.id, ConsentCode.state == "issued")
    )
    for code in unused.scalars():
        code.state = "revoked"
        await q.append_audit(
            db,
            action="consent.revoked",
            actor=actor.name,
            ticket_id=ticket.id,
            details={"consent_id": code.id},
        )


@operation(*EVERYONE)
async def show(store: Store, actor: Actor, key: str) -> dict[str, Any]:
    """A ticket with its assignees and sessions."""
    seen = await visible(store, actor, key)
    async with store.read() as db:
        ticket = await db.get_one(Ticket, seen.id)
        names = await q.names_by_id(db)
        sessions = [
            shapes.session(s, ticket.key, names.get(s.engineer_id))
            for s in await q.list_sessions(db, ticket)
        ]
        assigned = await q.assignees(db, ticket)
    return {**shapes.ticket(ticket), "assignees": assigned, "sessions": sessions}
