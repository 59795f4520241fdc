"""Sessions: ending one, handing one over, and the auditors' reviews."""

from __future__ import annotations

from typing import Any

from assist_protocol.safetext import visible as shown
from broker.errors import Denied, NotFound
from broker.ops import shapes
from broker.ops.base import ADMIN, AUDITOR, ENGINEER, EVERYONE, Actor, operation
from broker.ops.control import Control
from broker.store import listing
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import Account, Session, SessionReview, Ticket

REVIEW_STATES = listing.REVIEW_STATES


async def visible(store: Store, actor: Actor, session_id: str) -> tuple[Session, Ticket]:
    """The session (by its id) and its ticket, if ``actor`` may see them."""
    async with store.read() as db:
        session = await db.get(Session, session_id[:36])
        if session is None:
            raise NotFound(f"There is no session {shown(session_id[:36])}.")
        ticket = await db.get_one(Ticket, session.ticket_id)
        if not await listing.may_see_ticket(db, actor.viewer, ticket.id):
            raise Denied(f"{ticket.key} is assigned to other engineers.")
    return session, ticket


@operation(*EVERYONE)
async def show(store: Store, actor: Actor, session_id: str) -> dict[str, Any]:
    """A session with its reviews and channels (each with its bytes and recording)."""
    session, ticket = await visible(store, actor, session_id)
    async with store.read() as db:
        reviews = await listing.reviews(db, session.id)
        names = await q.names_by_id(db)
        channels = await listing.channels(db, session.id)
    return {
        **shapes.session(session, ticket.key, names.get(session.engineer_id)),
        "reviews": reviews,
        "channels": [shapes.channel(c, names.get(c.engineer_id, "?")) for c in channels],
    }


@operation(ENGINEER, ADMIN)
async def end(store: Store, actor: Actor, control: Control, session_id: str) -> dict[str, Any]:
    """End a live session now (audited ``session.end_requested``, then ``session.ended``
    with reason ``admin``). On the command line ``session_id`` may be a unique prefix."""
    if actor.via != "cli":  # over the API: the whole id of a session they may see
        session, ticket = await visible(store, actor, session_id)
        if session.state not in q.LIVE_STATES:
            raise NotFound(f"Session {session.id} is not live (it is {session.state}).")
        async with store.begin() as db:
            await q.append_audit(
                db,
                action="session.end_requested",
                actor=actor.name,
                ticket_id=ticket.id,
                session_id=session.id,
                details={"via": actor.via},
            )
    return await control.end(session_id, actor.name)


@operation(ADMIN)
async def handoff(
    store: Store, actor: Actor, control: Control, session_id: str, to: str
) -> dict[str, Any]:
    """Only ``to`` may continue, after the customer lets them in (audited
    ``session.handoff``)."""
    return await control.handoff(session_id, to, actor.name)


@operation(AUDITOR, ADMIN)
async def review(
    store: Store, actor: Actor, session_id: str, status: str, note: str
) -> tuple[SessionReview, Account]:
    """An auditor's verdict on a session (audited ``session.reviewed``)."""
    session, ticket = await visible(store, actor, session_id)
    async with store.begin() as db:
        account = await db.get_one(Account, actor.account_id)
        made = await listing.add_review(db, session.id, account.id, status, note)
        await q.append_audit(
            db,
            action="session.reviewed",
            actor=actor.name,
            ticket_id=ticket.id,
            session_id=session.id,
            details={"status": status, "note": note},
        )
    return made, account
