"""Who is asking: API tokens, passwords and browser logins, all kept hashed.

API tokens and login cookies are 256-bit random values; the store keeps only their SHA-256,
which is enough for values that cannot be guessed (and lets a lookup find them). Passwords are
chosen by people, so they are kept as argon2id hashes. Nothing here writes a secret to a log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker import fields
from broker.errors import Invalid, NotFound
from broker.store import queries as q
from broker.store.models import Account, ApiToken, WebLogin, utcnow

TOKEN_PREFIX = "abt_"  # noqa: S105 - a marker, not a secret
LOGIN_LIFETIME = dt.timedelta(hours=8)
#: last_used_at is written at most this often per token (not on every request)
TOUCH_EVERY = dt.timedelta(minutes=1)
MIN_PASSWORD = 12

_hasher = PasswordHasher()


@functools.cache
def _dummy() -> str:
    """Verified against when the account does not exist, so both paths take as long. Made on
    first use, not at import: every command-line command imports this module."""
    return _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class Principal:
    account_id: int
    name: str
    display_name: str
    role: str
    #: "token" or "login" (a browser cookie, which needs a CSRF token for changes)
    via: str
    csrf: str | None = None
    #: the token's last_used_at is older than TOUCH_EVERY (worth writing down)
    stale: bool = False

    @property
    def actor(self) -> str:
        return self.name


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


# --- passwords -----------------------------------------------------------------------------


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"a password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def password_matches(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _dummy(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


class PasswordChecker:
    """Checks passwords off the event loop, a few at a time, without holding the database.

    argon2id is slow and memory-hard on purpose (64 MiB, tens of milliseconds each): run on the
    event loop it stalled every SSH session (a keystroke echo went from 46 ms to 6.4 s under 40
    concurrent wrong passwords), and holding a database connection meanwhile emptied the pool.
    The account's hash is read first, the connection given back, then the hash is checked in a
    worker thread; at most ``parallel`` at once, so memory stays bounded too."""

    def __init__(self, parallel: int = 2) -> None:
        self._slots = asyncio.Semaphore(parallel)

    async def check(self, db_factory: Any, name: str, password: str) -> Account | None:
        """The enabled account whose password this is, or ``None`` (as long either way)."""
        async with db_factory() as db:
            account = await q.find_account(db, name[:64])
        async with self._slots:
            stored = account.password_hash if account else None
            ok = await asyncio.to_thread(password_matches, stored, password)
        if not ok or account is None or account.disabled:
            return None
        return account


# --- API tokens ----------------------------------------------------------------------------


async def create_token(
    db: AsyncSession,
    account: Account,
    name: str,
    lifetime: dt.timedelta | None,
    via: str = "cli",
) -> tuple[str, ApiToken]:
    """A new token for ``account``; the clear value is returned once and never stored."""
    if not name.strip() or len(name) > 100:
        raise Invalid("a token needs a name of 1 to 100 characters")
    fields.plain(name, "the token name")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        account_id=account.id,
        name=name.strip(),
        token_hash=digest(secret),
        expires_at=utcnow() + lifetime if lifetime else None,
        created_via=via,
    )
    db.add(row)
    await db.flush()
    return secret, row


async def token_principal(db: AsyncSession, secret: str) -> Principal | None:
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 100:
        return None
    row = (
        await db.execute(
            select(ApiToken, Account)
            .join(Account, Account.id == ApiToken.account_id)
            .where(ApiToken.token_hash == digest(secret))
        )
    ).first()
    if row is None:
        return None
    token, account = row
    now = utcnow()
    if token.revoked_at is not None or account.disabled:
        return None
    if token.expires_at is not None and token.expires_at <= now:
        return None
    stale = token.last_used_at is None or token.last_used_at < now - TOUCH_EVERY
    return Principal(
        account.id, account.name, account.display_name, account.role, "token", stale=stale
    )


async def touch_token(db: AsyncSession, secret: str) -> None:
    """Note when a token was last used (at most once a minute)."""
    now = utcnow()
    await db.execute(
        update(ApiToken)
        .where(ApiToken.token_hash == digest(secret))
        .where((ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < now - TOUCH_EVERY))
        .values(last_used_at=now)
    )


async def list_tokens(db: AsyncSession, account_id: int) -> list[ApiToken]:
    rows = await db.execute(
        select(ApiToken).where(ApiToken.account_id == account_id).order_by(ApiToken.id)
    )
    return list(rows.scalars())


async def revoke_token(db: AsyncSession, token_id: int, principal: Principal) -> ApiToken:
    """Revoke one's own token (an admin may revoke anyone's)."""
    token = await db.get(ApiToken, token_id)
    if token is None or (token.account_id != principal.account_id and principal.role != "admin"):
        raise NotFound(f"No token {token_id}.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token


# --- browser logins ------------------------------------------------------------------------


async def start_login(db: AsyncSession, account: Account) -> tuple[str, WebLogin]:
    cookie = secrets.token_urlsafe(32)
    row = WebLogin(
        account_id=account.id,
        cookie_hash=digest(cookie),
        csrf=secrets.token_urlsafe(32),
        expires_at=utcnow() + LOGIN_LIFETIME,
    )
    db.add(row)
    await db.flush()
    return cookie, row


async def login_principal(db: AsyncSession, cookie: str) -> Principal | None:
    if not cookie or len(cookie) > 100:
        return None
    row = (
        await db.execute(
            select(WebLogin, Account)
            .join(Account, Account.id == WebLogin.account_id)
            .where(WebLogin.cookie_hash == digest(cookie))
        )
    ).first()
    if row is None:
        return None
    login, account = row
    if login.expires_at <= utcnow() or account.disabled:
        return None
    return Principal(
        account.id, account.name, account.display_name, account.role, "login", login.csrf
    )


async def end_logins(db: AsyncSession, account_id: int, *, keep: str | None = None) -> int:
    """End the account's browser logins (``keep``: the cookie of the one asking); how many."""
    query = delete(WebLogin).where(WebLogin.account_id == account_id)
    if keep:
        query = query.where(WebLogin.cookie_hash != digest(keep))
    result = await db.execute(query.execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


async def set_disabled(db: AsyncSession, account: Account, disabled: bool) -> int:
    """Disable (or enable) an account; disabling ends its browser logins at once (its SSH
    logins are the running broker's to end). Returns the browser logins ended."""
    account.disabled = disabled
    return await end_logins(db, account.id) if disabled else 0


async def set_password(
    db: AsyncSession, account: Account, hashed: str, *, keep: str | None = None
) -> tuple[int, int]:
    """A new password (hashed by :func:`hash_password`, in a worker thread: it is slow) ends
    the account's other browser logins and revokes the API tokens that browser logins made
    (someone who had the old password could have made one). Returns (logins ended, tokens
    revoked). Tokens made on the command line or with another token stay."""
    account.password_hash = hashed
    ended = await end_logins(db, account.id, keep=keep)
    result = await db.execute(
        update(ApiToken)
        .where(
            ApiToken.account_id == account.id,
            ApiToken.created_via == "login",
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return ended, int(getattr(result, "rowcount", 0) or 0)


async def end_login(db: AsyncSession, cookie: str) -> None:
    login = (
        await db.execute(select(WebLogin).where(WebLogin.cookie_hash == digest(cookie)))
    ).scalar_one_or_none()
    if login is not None:
        await db.delete(login)


def csrf_ok(principal: Principal, offered: str | None) -> bool:
    return bool(principal.csrf and offered) and hmac.compare_digest(
        str(principal.csrf).encode(), str(offered).encode()
    )
