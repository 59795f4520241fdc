"""API: who am I, API tokens (one's own), accounts (admins only)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp import web

from broker import fields
from broker.errors import Invalid
from broker.store import queries as q
from broker.store.models import Account, ApiToken
from broker.transport.keys import fingerprint_of
from broker.web import access
from broker.web.api import MAX_INT, Api, Call, Param
from broker.web.auth import COOKIE
from broker.web.schemas import ROLES_ALL, list_of

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


def account_json(a: Account) -> dict[str, Any]:
    return {
        "name": a.name,
        "display_name": a.display_name,
        "role": a.role,
        "disabled": a.disabled,
        "password": a.password_hash is not None,
    }


def token_json(t: ApiToken) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "created_at": t.created_at.isoformat(),
        "expires_at": t.expires_at.isoformat() if t.expires_at else None,
        "revoked": t.revoked_at is not None,
        "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
    }


@api.op(
    "GET", "/me", summary="The account asking", roles=ROLES_ALL, tag="accounts", response=ACCOUNT
)
async def me(call: Call) -> web.Response:
    async with call.deps.store.read() as db:
        account = await db.get_one(Account, call.principal.account_id)
    return web.json_response({**account_json(account), "via": call.principal.via})


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
    return web.json_response({"items": [token_json(t) for t in tokens]})


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
    response=TOKEN,
)
async def create_token(call: Call) -> web.Response:
    days = call.body.get("expires_days", 90)
    async with call.deps.store.begin() as db:
        account = await db.get_one(Account, call.principal.account_id)
        secret, token = await access.create_token(
            db, account, call.body["name"], dt.timedelta(days=days), via=call.principal.via
        )
        await call.audit(
            db, "token.created", {"account": account.name, "token_id": token.id, "name": token.name}
        )
    return web.json_response(
        {**token_json(token), "token": secret}, status=201, headers={"Cache-Control": "no-store"}
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
    async with call.deps.store.begin() as db:
        token = await access.revoke_token(db, call.params["id"], call.principal)
        await call.audit(db, "token.revoked", {"token_id": token.id, "name": token.name})
    return web.json_response(token_json(token))


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
    return web.json_response({"items": [account_json(a) for a, _ in rows]})


@api.op(
    "POST",
    "/accounts",
    summary="Add an account",
    roles=("admin",),
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
)
async def create_account(call: Call) -> web.Response:
    body = call.body
    keys = []
    for line in body.get("ssh_keys", []):
        try:
            keys.append(fingerprint_of(line))
        except Exception:  # asyncssh raises several types for bad keys
            raise Invalid("ssh_keys holds a line that is not an OpenSSH public key") from None
    if body["role"] == "engineer" and not keys:
        raise Invalid("an engineer needs at least one SSH key to log in")
    password = (
        await asyncio.to_thread(access.hash_password, body["password"])
        if body.get("password")
        else None
    )
    async with call.deps.store.begin() as db:
        account = await q.add_account(
            db,
            name=body["name"],
            role=body["role"],
            display_name=body.get("display_name") or body["name"],
            keys=keys,
        )
        account.password_hash = password
        await call.audit(
            db,
            "account.added",
            {
                "account": account.name,
                "role": account.role,
                "keys": [fp for fp, _, _ in keys],
                "password": password is not None,
            },
        )
    return web.json_response(account_json(account), status=201)


@api.op(
    "PATCH",
    "/accounts/{name}",
    summary="Disable or enable an account, or set its password",
    roles=("admin",),
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
    hashed = (
        await asyncio.to_thread(access.hash_password, body["password"])
        if "password" in body
        else None
    )
    async with call.deps.store.begin() as db:
        account = await q.get_account(db, call.params["name"])
        changed: dict[str, Any] = {}
        if "disabled" in body:
            changed["disabled"] = body["disabled"]
            changed["web_logins_ended"] = await access.set_disabled(db, account, body["disabled"])
        if "display_name" in body:
            fields.plain(body["display_name"], "the display name", limit=200)
            account.display_name = changed["display_name"] = body["display_name"]
        if "password" in body:
            mine = call.principal.via == "login" and call.principal.account_id == account.id
            cookie = call.request.cookies.get(COOKIE) if mine else None
            assert hashed is not None
            ended, revoked = await access.set_password(db, account, hashed, keep=cookie)
            changed.update(
                password_changed=True, other_web_logins_ended=ended, login_tokens_revoked=revoked
            )
        await call.audit(db, "account.updated", {"account": account.name, **changed})
    if body.get("disabled"):  # committed: no new login gets in; end the ones that are in
        call.deps.engineers.end_account(account.name)
    return web.json_response(account_json(account))
