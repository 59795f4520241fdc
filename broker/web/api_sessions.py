"""API: sessions, their channels, ending one, and the auditors' reviews."""

from __future__ import annotations

from aiohttp import web

from broker import admin
from broker.errors import Denied, NotFound
from broker.store import listing
from broker.store import queries as q
from broker.store.models import Account, Session, Ticket
from broker.web.api import Api, Call, Param
from broker.web.api_tickets import CURSOR, LIMIT, cursor_int, viewer
from broker.web.schemas import (
    CHANNEL,
    ROLES_ALL,
    SESSION,
    SESSION_STATES,
    channel_json,
    list_of,
    page_of,
    session_json,
)

api = Api()

SESSION_ID = Param("id", "path", {"type": "string", "maxLength": 36}, description="session id")
REVIEW = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": list(listing.REVIEW_STATES)},
        "note": {"type": "string"},
        "by": {"type": "string"},
        "at": {"type": "string"},
    },
}


async def visible_session(call: Call, session_id: str) -> tuple[Session, Ticket]:
    async with call.deps.store.read() as db:
        session = await db.get(Session, session_id)
        if session is None:
            raise NotFound(f"No session {session_id}.")
        ticket = await db.get_one(Ticket, session.ticket_id)
        if not await listing.may_see_ticket(db, viewer(call), ticket.id):
            raise Denied(f"{ticket.key} is assigned to other engineers.")
    return session, ticket


@api.op(
    "GET",
    "/sessions",
    summary="List sessions, newest first",
    roles=ROLES_ALL,
    tag="sessions",
    params=(
        Param("ticket", schema={"type": "string", "maxLength": 32}),
        Param("state", schema={"type": "string", "enum": list(SESSION_STATES)}),
        LIMIT,
        CURSOR,
    ),
    response=page_of(SESSION),
)
async def list_sessions(call: Call) -> web.Response:
    async with call.deps.store.read() as db:
        ticket_id = None
        if call.params["ticket"]:
            ticket_id = (await q.get_ticket(db, call.params["ticket"])).id
        rows, more = await listing.sessions(
            db,
            viewer(call),
            ticket_id=ticket_id,
            state=call.params["state"],
            limit=call.params["limit"],
            offset=cursor_int(call) or 0,
        )
    items = [session_json(s, t.key) for s, t in rows]
    return web.json_response({"items": items, "next_cursor": str(more) if more else None})


@api.op(
    "GET",
    "/sessions/{id}",
    summary="One session with its reviews",
    roles=ROLES_ALL,
    tag="sessions",
    params=(SESSION_ID,),
    response=SESSION,
)
async def show_session(call: Call) -> web.Response:
    session, ticket = await visible_session(call, call.params["id"])
    async with call.deps.store.read() as db:
        reviews = await listing.reviews(db, session.id)
    return web.json_response({**session_json(session, ticket.key), "reviews": reviews})


@api.op(
    "GET",
    "/sessions/{id}/channels",
    summary="The channels of a session (shells, commands, file transfers, forwards)",
    roles=ROLES_ALL,
    tag="sessions",
    params=(SESSION_ID,),
    response=list_of(CHANNEL),
)
async def list_channels(call: Call) -> web.Response:
    session, _ = await visible_session(call, call.params["id"])
    async with call.deps.store.read() as db:
        rows = await listing.channels(db, session.id)
        names = await q.names_by_id(db)
    items = [channel_json(c, names.get(c.engineer_id, "?")) for c in rows]
    return web.json_response({"items": items})


@api.op(
    "POST",
    "/sessions/{id}/end",
    summary="End a live session now",
    roles=("engineer", "admin"),
    tag="sessions",
    params=(SESSION_ID,),
    response={"type": "object", "properties": {"session": {"type": "string"}}},
)
async def end_session(call: Call) -> web.Response:
    session, ticket = await visible_session(call, call.params["id"])
    if session.state not in q.LIVE_STATES:
        raise NotFound(f"Session {session.id} is not live (it is {session.state}).")
    async with call.deps.store.begin() as db:
        await call.audit(
            db, "session.end_requested", {"via": "api"}, ticket_id=ticket.id, session_id=session.id
        )
    result = await admin.request(call.deps.store, "end", {"session": session.id})
    return web.json_response(result)


@api.op(
    "POST",
    "/sessions/{id}/reviews",
    summary="Mark a session reviewed or flagged, with a note",
    roles=("auditor", "admin"),
    tag="sessions",
    params=(SESSION_ID,),
    body={
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": list(listing.REVIEW_STATES)},
            "note": {"type": "string", "maxLength": 4000, "x-multiline": True},
        },
    },
    response=REVIEW,
)
async def review_session(call: Call) -> web.Response:
    session, ticket = await visible_session(call, call.params["id"])
    status, note = call.body["status"], str(call.body.get("note") or "")
    async with call.deps.store.begin() as db:
        account = await db.get_one(Account, call.principal.account_id)
        review = await listing.add_review(db, session.id, account.id, status, note)
        await call.audit(
            db,
            "session.reviewed",
            {"status": status, "note": note},
            ticket_id=ticket.id,
            session_id=session.id,
        )
    body = {"status": status, "note": note, "by": account.name, "at": review.created_at.isoformat()}
    return web.json_response(body, status=201)
