"""API: sessions, their channels, ending one, and the auditors' reviews."""

from __future__ import annotations

from aiohttp import web

from broker import ops
from broker.ops import shapes
from broker.store import listing
from broker.store import queries as q
from broker.store.models import Session, Ticket
from broker.web.api import Api, Call, Param
from broker.web.api_tickets import CURSOR, LIMIT, cursor_int, viewer
from broker.web.schemas import (
    CHANNEL,
    ROLES_ALL,
    SESSION,
    SESSION_STATES,
    list_of,
    page_of,
    with_properties,
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
    return await ops.sessions.visible(call.deps.store, call.actor, session_id)


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
        names = await q.names_by_id(db)
    items = [shapes.session(s, t.key, names.get(s.engineer_id)) for s, t in rows]
    return web.json_response({"items": items, "next_cursor": str(more) if more else None})


@api.op(
    "GET",
    "/sessions/{id}",
    summary="One session with its reviews and channels",
    roles=ROLES_ALL,
    tag="sessions",
    params=(SESSION_ID,),
    response=with_properties(
        SESSION,
        reviews={"type": "array", "items": REVIEW},
        channels={"type": "array", "items": CHANNEL},
    ),
)
async def show_session(call: Call) -> web.Response:
    # the same operation as `assist-broker session show` (with the channels, too)
    return web.json_response(
        await ops.sessions.show(call.deps.store, call.actor, call.params["id"])
    )


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
    items = [shapes.channel(c, names.get(c.engineer_id, "?")) for c in rows]
    return web.json_response({"items": items})


@api.op(
    "POST",
    "/sessions/{id}/end",
    summary="End a live session now",
    roles=ops.sessions.end.roles,
    tag="sessions",
    params=(SESSION_ID,),
    response={
        "type": "object",
        "properties": {"session": {"type": "string"}, "ended": {"type": "boolean"}},
    },
)
async def end_session(call: Call) -> web.Response:
    # in this process: the broker ends it itself (the command line asks it through the store)
    deps = call.deps
    result = await ops.sessions.end(deps.store, call.actor, deps.control, call.params["id"])
    return web.json_response(result)


@api.op(
    "POST",
    "/sessions/{id}/reviews",
    summary="Mark a session reviewed or flagged, with a note",
    roles=ops.sessions.review.roles,
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
    status=201,
)
async def review_session(call: Call) -> web.Response:
    status, note = call.body["status"], str(call.body.get("note") or "")
    review, account = await ops.sessions.review(
        call.deps.store, call.actor, call.params["id"], status, note
    )
    body = {"status": status, "note": note, "by": account.name, "at": review.created_at.isoformat()}
    return web.json_response(body, status=201)
