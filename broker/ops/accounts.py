"""Accounts and API tokens: add, change (disable, rename, new password), tokens made and revoked."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any

from broker import credentials as access
from broker import fields
from broker.errors import Invalid, NotFound
from broker.keys import fingerprint_of
from broker.ops.base import ADMIN, EVERYONE, Actor, operation
from broker.ops.control import Control
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import Account, ApiToken, utcnow


def public_keys(lines: list[str], where: str = "ssh_keys") -> list[tuple[str, str, str | None]]:
    """``(fingerprint, line, comment)`` of each OpenSSH public key line (blank lines and
    comments skipped); :class:`Invalid` naming ``where`` for one that is not a key."""
    keys = []
    for line in (ln.strip() for ln in lines):
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(fingerprint_of(line))
        except Exception as exc:  # asyncssh raises several types for bad keys
            message = f"{where} holds a line that is not an OpenSSH public key ({exc})"
            raise Invalid(message) from None
    return keys


@operation(ADMIN)
async def add(
    store: Store,
    actor: Actor,
    *,
    name: str,
    role: str,
    display_name: str | None = None,
    ssh_keys: list[str] | None = None,
    password: str | None = None,
) -> tuple[Account, list[str]]:
    """A new account; an engineer needs at least one SSH key. Returns it and its keys'
    fingerprints (audited ``account.added``)."""
    keys = public_keys(ssh_keys or [])
    if role == "engineer" and not keys:
        raise Invalid("an engineer needs at least one SSH key to log in")
    hashed = await asyncio.to_thread(access.hash_password, password) if password else None
    async with store.begin() as db:
        account = await q.add_account(
            db, name=name, role=role, display_name=display_name or name, keys=keys
        )
        account.password_hash = hashed
        fingerprints = [fp for fp, _, _ in keys]
        await q.append_audit(
            db,
            action="account.added",
            actor=actor.name,
            details={
                "account": account.name,
                "role": account.role,
                "keys": fingerprints,
                "password": hashed is not None,
            },
        )
    return account, fingerprints


@dataclass(frozen=True)
class Change:
    """What :func:`update` did, for the answer and the audit."""

    account: Account
    details: dict[str, Any]


@operation(ADMIN)
async def update(
    store: Store,
    actor: Actor,
    name: str,
    *,
    control: Control,
    disabled: bool | None = None,
    display_name: str | None = None,
    password: str | None = None,
    keep_login: str | None = None,
) -> Change:
    """Disable or enable an account, rename it, or set its password (audited
    ``account.updated``). Disabling ends its browser logins and, through ``control``, its SSH
    logins at once; a new password ends its other browser logins (``keep_login``: the
    cookie of the one asking) and revokes the tokens browser logins made."""
    hashed = await asyncio.to_thread(access.hash_password, password) if password else None
    async with store.begin() as db:
        account = await q.get_account(db, name)
        changed: dict[str, Any] = {}
        if disabled is not None:
            changed["disabled"] = disabled
            changed["web_logins_ended"] = await access.set_disabled(db, account, disabled)
        if display_name is not None:
            fields.plain(display_name, "the display name", limit=200)
            account.display_name = changed["display_name"] = display_name
        if hashed is not None:
            ended, revoked = await access.set_password(db, account, hashed, keep=keep_login)
            changed.update(
                password_changed=True, other_web_logins_ended=ended, login_tokens_revoked=revoked
            )
        await q.append_audit(
            db, action="account.updated", actor=actor.name, details={"account": name, **changed}
        )
    if disabled:  # committed: no new login gets in; end the ones that are in
        changed["ssh_logins_ended"] = await control.end_logins(account.name)
    return Change(account, changed)


def _owner(actor: Actor, account: Account) -> None:
    if actor.role != ADMIN and actor.account_id != account.id:
        raise NotFound(f"There is no account {account.name} of yours.")


@operation(*EVERYONE)
async def create_token(
    store: Store,
    actor: Actor,
    *,
    account: str | None = None,
    label: str = "cli",
    lifetime: dt.timedelta | None = None,
) -> tuple[str, ApiToken, Account]:
    """A new API token (shown once) for ``account`` (one's own; an admin may make one for
    anyone). Audited ``token.created``."""
    async with store.begin() as db:
        owner = (
            await db.get_one(Account, actor.account_id)
            if account is None and actor.account_id is not None
            else await q.get_account(db, account or "")
        )
        _owner(actor, owner)
        secret, token = await access.create_token(db, owner, label, lifetime, via=actor.via)
        await q.append_audit(
            db,
            action="token.created",
            actor=actor.name,
            details={"account": owner.name, "token_id": token.id, "name": token.name},
        )
    return secret, token, owner


@operation(*EVERYONE)
async def revoke_token(store: Store, actor: Actor, token_id: int) -> ApiToken:
    """Revoke a token (one's own; an admin's, anyone's). Audited ``token.revoked``."""
    async with store.begin() as db:
        token = await db.get(ApiToken, token_id)
        if token is None or (actor.role != ADMIN and token.account_id != actor.account_id):
            raise NotFound(f"No token {token_id}.")
        token.revoked_at = token.revoked_at or utcnow()
        await q.append_audit(
            db,
            action="token.revoked",
            actor=actor.name,
            details={"token_id": token.id, "name": token.name},
        )
    return token


@operation(*EVERYONE)
async def tokens(store: Store, actor: Actor, account: str | None = None) -> list[ApiToken]:
    async with store.read() as db:
        owner = (
            await db.get_one(Account, actor.account_id)
            if account is None and actor.account_id is not None
            else await q.get_account(db, account or "")
        )
        _owner(actor, owner)
        return await access.list_tokens(db, owner.id)
