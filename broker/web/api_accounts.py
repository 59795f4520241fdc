"""API: who am I, API tokens (one's own), accounts (admins only)."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from broker import credentials as access
from broker import ops
from broker.ops import shapes
from broker.store import queries as q
from broker.store.models import Account
from broker.web.api import MAX_INT, Api, Call, Param
from broker.web.auth import COOKIE
from broker.web.schemas import ROLES_ALL, list_of, with_properties

api = Api()

ACCOUNT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "display_name": {"type": "string"},
        "role": {"type": "string", "enum": list(q.ROLES)},
        "disabled": {"type": "boolean"},
        "password": {"type": "boolean"},
    },
}
TOKEN = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "created_at": {"type": "string"},
        "expires_at": {"type": "string", "nullable": True},
        "revoked": {"type": "boolean"},
        "last_used_at": {"type": "string", "nullable": True},
    },
}


@api.op(
    "GET",
    "/me",
    summary="The account asking, and how it logged in (token or login)",
    roles=ROLES_ALL,
    tag="accounts",
    response=with_properties(ACCOUNT, via={"type": "string"}),
)
async def me(call: Call) -> web.Response:
    async with call.deps.store.read() as db:
        account = await db.get_one(Account, call.principal.account_id)
    return web.json_response({**shapes.account(account), "via": call.principal.via})


@api.op(
    "GET",
    "/tokens",
    summary="My API tokens",
    roles=ROLES_ALL,
    tag="accounts",
    response=list_of(TOKEN),
)
async def list_tokens(call: Call) -> web.Response:
    async with call.deps.store.read() as db:
        tokens = await access.list_tokens(db, call.principal.account_id)
    return web.json_response({"items": [shapes.token(t) for t in tokens]})


@api.op(
    "POST",
    "/tokens",
    summary="Create an API token for myself (the token is shown once)",
    roles=ROLES_ALL,
    tag="accounts",
    body={
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "expires_days": {"type": "integer", "minimum": 1, "maximum": 366},
        },
    },
    response=with_properties(TOKEN, token={"type": "string"}),
    status=201,
)
async def create_token(call: Call) -> web.Response:
    days = call.body.get("expires_days", 90)
    secret, token, _ = await ops.accounts.create_token(
        call.deps.store,
        call.actor,
        label=call.body["name"],
        lifetime=dt.timedelta(days=days),
    )
    return web.json_response(
        {**shapes.token(token), "token": secret}, status=201, headers={"Cache-Control": "no-store"}
    )


@api.op(
    "DELETE",
    "/tokens/{id}",
    summary="Revoke an API token",
    roles=ROLES_ALL,
    tag="accounts",
    params=(Param("id", "path", {"type": "integer", "minimum": 1, "maximum": MAX_INT}),),
    response=TOKEN,
)
async def revoke_token(call: Call) -> web.Response:
    token = await ops.accounts.revoke_token(call.deps.store, call.actor, call.params["id"])
    return web.json_response(shapes.token(token))


@api.op(
    "GET",
    "/accounts",
    summary="All accounts",
    roles=("admin",),
    tag="accounts",
    response=list_of(ACCOUNT),
)
async def list_accounts(call: Call) -> web.Response:
    async with call.deps.store.read() as db:
        rows = await q.list_accounts(db)
    return web.json_response({"items": [shapes.account(a) for a, _ in rows]})


@api.op(
    "POST",
    "/accounts",
    summary="Add an account",
    roles=ops.accounts.add.roles,
    tag="accounts",
    body={
        "type": "object",
        "required": ["name", "role"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 64},
            "display_name": {"type": "string", "maxLength": 200},
            "role": {"type": "string", "enum": list(q.ROLES)},
            "password": {"type": "string", "format": "password", "maxLength": 200},
            "ssh_keys": {
                "type": "array",
                "items": {"type": "string", "maxLength": 16000, "x-multiline": True},
            },
        },
    },
    response=ACCOUNT,
    status=201,
)
async def create_account(call: Call) -> web.Response:
    body = call.body
    account, _ = await ops.accounts.add(
        call.deps.store,
        call.actor,
        name=body["name"],
        role=body["role"],
        display_name=body.get("display_name"),
        ssh_keys=list(body.get("ssh_keys", [])),
        password=body.get("password") or None,
    )
    return web.json_response(shapes.account(account), status=201)


@api.op(
    "PATCH",
    "/accounts/{name}",
    summary="Disable or enable an account, or set its password",
    roles=ops.accounts.update.roles,
    tag="accounts",
    params=(Param("name", "path", {"type": "string", "maxLength": 64}),),
    body={
        "type": "object",
        "properties": {
            "disabled": {"type": "boolean"},
            "password": {"type": "string", "format": "password", "maxLength": 200},
            "display_name": {"type": "string", "minLength": 1, "maxLength": 200},
        },
    },
    response=ACCOUNT,
)
async def update_account(call: Call) -> web.Response:
    body = call.body
    mine = call.principal.via == "login" and call.principal.name == call.params["name"]
    change = await ops.accounts.update(
        call.deps.store,
        call.actor,
        call.params["name"],
        control=call.deps.control,
        disabled=body.get("disabled"),
        display_name=body.get("display_name"),
        password=body.get("password"),
        keep_login=call.request.cookies.get(COOKIE) if mine else None,
    )
    return web.json_response(shapes.account(change.account))
