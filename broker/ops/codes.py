"""Consent codes: issued by an engineer for themselves (an admin, for a named engineer), and
withdrawn while unused. The codes themselves only ever pass through broker.session.consent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from assist_protocol.scope import Scope, ScopeError
from broker.errors import Invalid
from broker.ops import shapes
from broker.ops.base import ADMIN, ENGINEER, Actor, operation
from broker.ops.tickets import visible
from broker.session.consent import ConsentCodes
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import ConsentCode, Ticket, utcnow


@operation(ENGINEER, ADMIN)
async def issue(
    store: Store,
    actor: Actor,
    codes: ConsentCodes,
    ticket: str,
    *,
    engineer: str | None,
    scope: str,
    ttl: float,
) -> tuple[str, ConsentCode, Scope]:
    """A code on ``ticket`` for ``engineer`` (an engineer issues for themselves); shown once.
    Audited ``consent.issued`` with the engineer as actor."""
    if actor.role == ENGINEER:
        if engineer not in (None, actor.name):
            raise Invalid("an engineer issues codes for themselves only")
        engineer = actor.name
    if not engineer:
        raise Invalid("name the engineer who will connect (--engineer NAME)")
    try:
        parsed = Scope.parse(scope)
    except ScopeError as exc:
        raise Invalid(f"scope: {exc}") from None
    seen = await visible(store, actor, ticket)
    code, row = await codes.issue(seen.key, engineer, str(parsed), ttl)
    return code, row, parsed


@operation(ENGINEER, ADMIN)
async def revoke(store: Store, actor: Actor, codes: ConsentCodes, code_id: int) -> ConsentCode:
    """Withdraw an unused code (an engineer, only one they issued)."""
    only_by = actor.account_id if actor.role != ADMIN else None
    return await codes.revoke(code_id, actor.name, only_by=only_by)


@operation(ENGINEER, ADMIN)
async def listed(store: Store, actor: Actor, ticket: str | None = None) -> list[dict[str, Any]]:
    """The consent codes, newest first, with their state (never the codes: only their keyed
    hashes are kept); an engineer sees the ones issued for them."""
    query = (
        select(ConsentCode, Ticket.key)
        .join(Ticket, Ticket.id == ConsentCode.ticket_id)
        .order_by(ConsentCode.id.desc())
    )
    if ticket:
        query = query.where(ConsentCode.ticket_id == (await visible(store, actor, ticket)).id)
    if actor.role != ADMIN:
        query = query.where(ConsentCode.issued_by == actor.account_id)
    async with store.read() as db:
        rows = (await db.execute(query)).all()
        names = await q.names_by_id(db)
    now = utcnow()
    return [shapes.code(code, key, names.get(code.issued_by), now) for code, key in rows]
