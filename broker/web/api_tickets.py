"""API: tickets and consent codes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from broker import ops
from broker.errors import Invalid
from broker.ops import shapes
from broker.store import listing
from broker.store.models import Ticket
from broker.web.api import MAX_INT, Api, Call, Param
from broker.web.helper_download import customer_line
from broker.web.schemas import (
    ROLES_ALL,
    TICKET,
    TICKET_STATUSES,
    page_of,
)

api = Api()

KEY = Param("key", "path", {"type": "string", "maxLength": 32}, description="ticket key, e.g. T-1")
LIMIT = Param("limit", schema={"type": "integer", "minimum": 1, "maximum": 500, "default": 50})
CURSOR = Param("cursor", schema={"type": "string", "maxLength": 64})


def viewer(call: Call) -> listing.Viewer:
    return listing.Viewer(call.principal.account_id, call.principal.role)


def cursor_int(call: Call) -> int | None:
    raw = call.params.get("cursor")
    if raw is None:
        return None
    if not str(raw).isdigit():
        raise Invalid("cursor is not one this API gave out")
    return int(raw)


async def visible_ticket(call: Call, key: str) -> Ticket:
    """The ticket, if this account may see it (404 if none, 403 if not theirs)."""
    return await ops.tickets.visible(call.deps.store, call.actor, key)


@api.op(
    "GET",
    "/tickets",
    summary="List tickets, newest first",
    roles=ROLES_ALL,
    tag="tickets",
    params=(
        Param("severity", schema={"type": "integer", "minimum": 1, "maximum": 4}),
        Param("status", schema={"type": "string", "enum": list(TICKET_STATUSES)}),
        LIMIT,
        CURSOR,
    ),
    response=page_of(TICKET),
)
async def list_tickets(call: Call) -> web.Response:
    async with call.deps.store.read() as db:
        rows, more = await listing.tickets(
            db,
            viewer(call),
            severity=call.params["severity"],
            status=call.params["status"],
            limit=call.params["limit"],
            after=cursor_int(call),
        )
    return web.json_response(
        {"items": [shapes.ticket(t) for t in rows], "next_cursor": str(more) if more else None}
    )


NEW_TICKET = {
    "type": "object",
    "required": ["title", "severity"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 500},
        "severity": {"type": "integer", "minimum": 1, "maximum": 4},
        "customer_name": {"type": "string", "maxLength": 200},
        "customer_email": {"type": "string", "maxLength": 320},
        "key": {"type": "string", "minLength": 1, "maxLength": 32},
    },
}


@api.op(
    "POST",
    "/tickets",
    summary="Open a ticket",
    roles=ops.tickets.create.roles,
    tag="tickets",
    body=NEW_TICKET,
    response=TICKET,
    status=201,
)
async def create_ticket(call: Call) -> web.Response:
    body = call.body
    ticket = await ops.tickets.create(
        call.deps.store,
        call.actor,
        title=body["title"],
        severity=body["severity"],
        customer_name=body.get("customer_name"),
        customer_email=body.get("customer_email"),
        key=body.get("key"),
    )
    return web.json_response(shapes.ticket(ticket), status=201)


@api.op(
    "GET",
    "/tickets/{key}",
    summary="One ticket",
    roles=ROLES_ALL,
    tag="tickets",
    params=(KEY,),
    response=TICKET,
)
async def show_ticket(call: Call) -> web.Response:
    return web.json_response(shapes.ticket(await visible_ticket(call, call.params["key"])))


@api.op(
    "PATCH",
    "/tickets/{key}",
    summary="Change a ticket's status",
    roles=ops.tickets.set_status.roles,
    tag="tickets",
    params=(KEY,),
    body={
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": list(TICKET_STATUSES)}},
    },
    response=TICKET,
)
async def update_ticket(call: Call) -> web.Response:
    ticket = await ops.tickets.set_status(
        call.deps.store, call.actor, call.params["key"], call.body["status"]
    )
    return web.json_response(shapes.ticket(ticket))


CODE = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "code": {"type": "string"},
        "ticket": {"type": "string"},
        "scope": {"type": "string"},
        "expires_at": {"type": "string", "format": "date-time"},
        "helper_command": {
            "type": "string",
            "description": "the customer's one line: download the helper from this broker and "
            "run it; it asks for the code",
        },
        "helper_command_installed": {
            "type": "string",
            "description": "the same with assist-helper installed; it asks for the code",
        },
    },
}


@api.op(
    "POST",
    "/tickets/{key}/codes",
    summary="Issue a one-time consent code (shown once)",
    roles=("engineer",),  # for themselves (an admin names the engineer on the command line)
    tag="codes",
    params=(KEY,),
    body={
        "type": "object",
        "properties": {
            "scope": {"type": "string", "minLength": 1, "maxLength": 500},
            "ttl_seconds": {"type": "integer", "minimum": 60, "maximum": 86400},
        },
    },
    response=CODE,
    status=201,
)
async def issue_code(call: Call) -> web.Response:
    deps = call.deps
    ttl = float(call.body.get("ttl_seconds") or deps.settings.code_ttl)
    code, row, _ = await ops.codes.issue(
        deps.store,
        call.actor,
        deps.codes,
        call.params["key"],
        engineer=None,
        scope=call.body.get("scope") or deps.settings.default_scope,
        ttl=ttl,
    )
    ticket = await visible_ticket(call, call.params["key"])
    # what the customer runs; the helper asks for the code (never in argv, where any local
    # user can read it), so the engineer reads the code out separately
    command = customer_line(str(call.request.url.origin()))
    installed = (
        f"assist-helper connect --broker {deps.broker_address} --fingerprint {deps.fingerprint}"
    )
    result: dict[str, Any] = {
        "id": row.id,
        "code": code,
        "ticket": ticket.key,
        "scope": row.scope,
        "expires_at": row.expires_at.isoformat(),
        "helper_command": command,
        "helper_command_installed": installed,
    }
    return web.json_response(result, status=201, headers={"Cache-Control": "no-store"})


@api.op(
    "DELETE",
    "/codes/{id}",
    summary="Revoke an unused consent code",
    roles=ops.codes.revoke.roles,
    tag="codes",
    params=(Param("id", "path", {"type": "integer", "minimum": 1, "maximum": MAX_INT}),),
    response={
        "type": "object",
        "properties": {"id": {"type": "integer"}, "state": {"type": "string"}},
    },
)
async def revoke_code(call: Call) -> web.Response:
    code = await ops.codes.revoke(call.deps.store, call.actor, call.deps.codes, call.params["id"])
    return web.json_response({"id": code.id, "state": code.state})
