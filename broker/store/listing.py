"""Reads for the HTTP API and the web UI: filtered, paged lists, limited to what an account may
see (engineers: the tickets they may work on; auditors and admins: everything)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from broker.store.models import (
    Account,
    AuditEvent,
    Channel,
    Session,
    SessionReview,
    Ticket,
    TicketAssignee,
)

REVIEW_STATES = ("reviewed", "flagged")


@dataclass(frozen=True)
class Viewer:
    account_id: int
    role: str

    @property
    def sees_all(self) -> bool:
        return self.role in ("auditor", "admin")


def ticket_visible(viewer: Viewer) -> ColumnElement[bool]:
    """Engineers see tickets open to everyone (no assignees) and the ones assigned to them."""
    if viewer.sees_all:
        return true()
    assigned = exists().where(TicketAssignee.ticket_id == Ticket.id)
    mine = exists().where(
        TicketAssignee.ticket_id == Ticket.id, TicketAssignee.account_id == viewer.account_id
    )
    return or_(~assigned, mine)


async def may_see_ticket(db: AsyncSession, viewer: Viewer, ticket_id: int) -> bool:
    found = await db.execute(
        select(Ticket.id).where(Ticket.id == ticket_id, ticket_visible(viewer))
    )
    return found.first() is not None


async def tickets(
    db: AsyncSession,
    viewer: Viewer,
    *,
    severity: int | None,
    status: str | None,
    limit: int,
    after: int | None,
) -> tuple[Sequence[Ticket], int | None]:
    query = select(Ticket).where(ticket_visible(viewer)).order_by(Ticket.id.desc())
    if severity is not None:
        query = query.where(Ticket.severity == severity)
    if status is not None:
        query = query.where(Ticket.status == status)
    if after is not None:
        query = query.where(Ticket.id < after)
    rows = (await db.execute(query.limit(limit + 1))).scalars().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


async def sessions(
    db: AsyncSession,
    viewer: Viewer,
    *,
    ticket_id: int | None,
    state: str | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[tuple[Session, Ticket]], int | None]:
    query = (
        select(Session, Ticket)
        .join(Ticket, Ticket.id == Session.ticket_id)
        .where(ticket_visible(viewer))
        .order_by(Session.created_at.desc(), Session.id)
    )
    if ticket_id is not None:
        query = query.where(Session.ticket_id == ticket_id)
    if state is not None:
        query = query.where(Session.state == state)
    rows = [(s, t) for s, t in (await db.execute(query.offset(offset).limit(limit + 1))).all()]
    more = len(rows) > limit
    return rows[:limit], (offset + limit if more else None)


async def audit(
    db: AsyncSession,
    viewer: Viewer,
    *,
    ticket_id: int | None = None,
    session_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    after: int | None = None,
) -> tuple[Sequence[AuditEvent], int | None]:
    """Events in chain order. Engineers see only events of tickets they may see."""
    query = select(AuditEvent).order_by(AuditEvent.seq)
    if not viewer.sees_all:
        query = query.join(Ticket, Ticket.id == AuditEvent.ticket_id).where(ticket_visible(viewer))
    filters: list[Any] = []
    if ticket_id is not None:
        filters.append(AuditEvent.ticket_id == ticket_id)
    if session_id is not None:
        filters.append(AuditEvent.session_id == session_id)
    if actor is not None:
        filters.append(AuditEvent.actor == actor)
    if action is not None:
        pattern = action[:-1] + "%" if action.endswith("*") else None
        filters.append(AuditEvent.action.like(pattern) if pattern else AuditEvent.action == action)
    if since is not None:
        filters.append(AuditEvent.time >= since)
    if until is not None:
        filters.append(AuditEvent.time < until)
    if after is not None:
        filters.append(AuditEvent.seq > after)
    rows = (await db.execute(query.where(*filters).limit(limit + 1))).scalars().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if more and rows else None)


async def channels(db: AsyncSession, session_id: str) -> Sequence[Channel]:
    query = select(Channel).where(Channel.session_id == session_id).order_by(Channel.id)
    return (await db.execute(query)).scalars().all()


async def reviews(db: AsyncSession, session_id: str) -> list[dict[str, Any]]:
    rows = await db.execute(
        select(SessionReview, Account.name)
        .join(Account, Account.id == SessionReview.account_id)
        .where(SessionReview.session_id == session_id)
        .order_by(SessionReview.id)
    )
    return [
        {
            "status": review.status,
            "note": review.note,
            "by": name,
            "at": review.created_at.isoformat(),
        }
        for review, name in rows.all()
    ]


async def latest_reviews(db: AsyncSession, session_ids: Sequence[str]) -> dict[str, str]:
    """Session id -> the status of its latest review, for many sessions in one query."""
    rows = await db.execute(
        select(SessionReview.session_id, SessionReview.status)
        .where(SessionReview.session_id.in_(list(session_ids)))
        .order_by(SessionReview.id)
    )
    return {session_id: status for session_id, status in rows.all()}  # the last one wins


async def add_review(
    db: AsyncSession, session_id: str, account_id: int, status: str, note: str
) -> SessionReview:
    review = SessionReview(session_id=session_id, account_id=account_id, status=status, note=note)
    db.add(review)
    await db.flush()
    return review
