"""Domain queries. Each takes an open transaction (``AsyncSession``) so callers choose what
commits together: a redeemed code, its session and its audit row are one transaction."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker import fields, vocabulary
from broker.errors import AuditLost, Invalid, NotFound
from broker.store import chain
from broker.store.models import (
    Account,
    AccountKey,
    AuditEvent,
    Channel,
    ConsentCode,
    Session,
    Ticket,
    TicketAssignee,
    utcnow,
)

ROLES = ("engineer", "auditor", "admin")
#: PostgreSQL advisory lock that serializes audit appends across nodes
AUDIT_LOCK = 0x41554449
#: ticket keys double as SSH user names, so they stay short and plain
TICKET_KEY = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,31}")
#: the broker's own keys; a custom key may not look like one (it would take a later ticket's)
AUTOMATIC_KEY = re.compile(r"[Tt]-[0-9]+")
LIVE_STATES = ("pending", "active")


# --- tickets -------------------------------------------------------------------------------


async def create_ticket(
    db: AsyncSession,
    *,
    title: str,
    severity: int,
    customer_email: str | None = None,
    customer_name: str | None = None,
    key: str | None = None,
    actor: str = "admin",
) -> Ticket:
    if not title.strip():
        raise Invalid("a ticket needs a title")
    fields.plain(title, "the title", limit=500)
    customer_email = fields.email(customer_email)
    if customer_name is not None:
        fields.plain(customer_name, "the customer name", limit=200)
    if severity not in (1, 2, 3, 4):
        raise Invalid(f"severity must be 1, 2, 3 or 4, got {severity}")
    if key is not None:
        if not TICKET_KEY.fullmatch(key) or key.lower() == "agent":
            raise Invalid(
                f"a ticket key starts with a letter and has up to 32 letters, digits and '-', "
                f"got {key!r}"
            )
        if AUTOMATIC_KEY.fullmatch(key):
            raise Invalid(
                f"a ticket key of the form T-<number> is given by the broker; choose another "
                f"key than {key!r}, or leave --key out"
            )
        if await find_ticket(db, key) is not None:
            raise Invalid(f"ticket {key} already exists")
    ticket = Ticket(
        key=key or f"~{uuid.uuid4().hex[:16]}",  # replaced by T-<id> below
        title=title.strip(),
        severity=severity,
        customer_email=customer_email,
        customer_name=customer_name,
    )
    db.add(ticket)
    await db.flush()
    if key is None:
        # T-<id>, or the next free number should an older custom key hold that one already
        number = ticket.id
        while await find_ticket(db, f"T-{number}") is not None:
            number += 1
        ticket.key = f"T-{number}"
        await db.flush()
    # Every ticket's evidence starts here: an export bundle must begin with this event.
    await append_audit(
        db,
        action="ticket.created",
        actor=actor,
        ticket_id=ticket.id,
        # what a bundle's ticket.json says comes from the chain, not from this table
        details={
            "key": ticket.key,
            "severity": ticket.severity,
            "title": ticket.title,
            "customer_name": ticket.customer_name,
            "customer_email": ticket.customer_email,
        },
    )
    return ticket


async def find_ticket(db: AsyncSession, key: str) -> Ticket | None:
    result = await db.execute(select(Ticket).where(func.upper(Ticket.key) == key.upper()))
    return result.scalar_one_or_none()


async def get_ticket(db: AsyncSession, key: str) -> Ticket:
    ticket = await find_ticket(db, key)
    if ticket is None:
        raise NotFound(f"There is no ticket {key}.")
    return ticket


async def list_tickets(db: AsyncSession) -> Sequence[Ticket]:
    return (await db.execute(select(Ticket).order_by(Ticket.id))).scalars().all()


async def assignees(db: AsyncSession, ticket: Ticket) -> list[str]:
    query = (
        select(Account.name)
        .join(TicketAssignee, TicketAssignee.account_id == Account.id)
        .where(TicketAssignee.ticket_id == ticket.id)
        .order_by(Account.name)
    )
    return list((await db.execute(query)).scalars())


async def set_assignees(db: AsyncSession, ticket: Ticket, names: Sequence[str]) -> list[str]:
    """Restrict ``ticket`` to these engineers (none: open to every engineer)."""
    accounts = [await get_account(db, name) for name in names]
    for account in accounts:
        if account.role != "engineer":
            raise Invalid(f"{account.name} is not an engineer")
    await db.execute(delete(TicketAssignee).where(TicketAssignee.ticket_id == ticket.id))
    for account in accounts:
        db.add(TicketAssignee(ticket_id=ticket.id, account_id=account.id))
    await db.flush()
    return sorted(a.name for a in accounts)


async def may_work_on(db: AsyncSession, ticket: Ticket, account_name: str) -> bool:
    names = await assignees(db, ticket)
    return not names or account_name in names


# --- accounts ------------------------------------------------------------------------------


async def add_account(
    db: AsyncSession,
    *,
    name: str,
    role: str,
    display_name: str,
    keys: Sequence[tuple[str, str, str | None]] = (),
) -> Account:
    """``keys`` are ``(fingerprint, openssh public key line, comment)``."""
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    plain_name = name.replace("-", "").replace("_", "").replace(".", "")
    if not name or not name.isascii() or not plain_name.isalnum() or len(name) > 64:
        raise Invalid(f"account names use letters, digits, '-', '_' and '.', got {name!r}")
    fields.plain(display_name, "the display name", limit=200)
    if await find_account(db, name) is not None:
        raise Invalid(f"account {name} already exists")
    account = Account(name=name, role=role, display_name=display_name or name)
    db.add(account)
    await db.flush()
    for fingerprint, line, comment in keys:
        await add_key(db, account, fingerprint, line, comment)
    return account


async def add_key(
    db: AsyncSession, account: Account, fingerprint: str, line: str, comment: str | None
) -> AccountKey:
    owner = await account_for_key(db, fingerprint, include_disabled=True)
    if owner is not None:
        raise Invalid(f"the key {fingerprint} already belongs to {owner.name}")
    key = AccountKey(
        account_id=account.id, fingerprint=fingerprint, public_key=line, comment=comment
    )
    db.add(key)
    await db.flush()
    return key


async def find_account(db: AsyncSession, name: str) -> Account | None:
    result = await db.execute(select(Account).where(Account.name == name))
    return result.scalar_one_or_none()


async def get_account(db: AsyncSession, name: str) -> Account:
    account = await find_account(db, name)
    if account is None:
        raise NotFound(f"There is no account {name}.")
    return account


async def account_for_key(
    db: AsyncSession, fingerprint: str, *, include_disabled: bool = False
) -> Account | None:
    query = (
        select(Account)
        .join(AccountKey, AccountKey.account_id == Account.id)
        .where(AccountKey.fingerprint == fingerprint)
    )
    if not include_disabled:
        query = query.where(Account.disabled.is_(False))
    return (await db.execute(query)).scalar_one_or_none()


async def list_accounts(db: AsyncSession) -> Sequence[tuple[Account, int]]:
    keys = func.count(AccountKey.id)
    query = (
        select(Account, keys)
        .outerjoin(AccountKey, AccountKey.account_id == Account.id)
        .group_by(Account.id)
        .order_by(Account.name)
    )
    return [(a, n) for a, n in (await db.execute(query)).all()]


# --- consent codes -------------------------------------------------------------------------


async def insert_code(
    db: AsyncSession,
    *,
    ticket: Ticket,
    code_hash: bytes,
    scope: str,
    issued_by: Account,
    expires_at: dt.datetime,
) -> ConsentCode:
    code = ConsentCode(
        ticket_id=ticket.id,
        code_hash=code_hash,
        scope=scope,
        issued_by=issued_by.id,
        expires_at=expires_at,
    )
    db.add(code)
    await db.flush()
    return code


async def find_code(db: AsyncSession, code_hash: bytes) -> ConsentCode | None:
    result = await db.execute(select(ConsentCode).where(ConsentCode.code_hash == code_hash))
    return result.scalar_one_or_none()


async def claim_code(db: AsyncSession, code: ConsentCode, now: dt.datetime) -> bool:
    """Atomic single use: exactly one concurrent caller sees ``True``."""
    result = await db.execute(
        update(ConsentCode)
        .where(
            ConsentCode.id == code.id,
            ConsentCode.state == "issued",
            ConsentCode.expires_at > now,
        )
        .values(state="redeemed", redeemed_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


# --- sessions and channels -----------------------------------------------------------------


async def create_session(
    db: AsyncSession, *, code: ConsentCode, customer_addr: str, node: str
) -> Session:
    session = Session(
        id=str(uuid.uuid4()),
        ticket_id=code.ticket_id,
        consent_id=code.id,
        engineer_id=code.issued_by,
        requested_scope=code.scope,
        customer_addr=customer_addr,
        node=node,
    )
    db.add(session)
    await db.flush()
    return session


async def get_session(db: AsyncSession, session_id: str) -> Session:
    session = await db.get(Session, session_id)
    if session is None:
        raise NotFound(f"There is no session {session_id}.")
    return session


async def update_session(db: AsyncSession, session_id: str, **values: Any) -> None:
    await db.execute(update(Session).where(Session.id == session_id).values(**values))


async def end_session(db: AsyncSession, session_id: str, reason: str) -> bool:
    """Mark a live session ended. ``False`` if it had already ended (ends are recorded once)."""
    result = await db.execute(
        update(Session)
        .where(Session.id == session_id, Session.state.in_(LIVE_STATES))
        .values(state="ended", ended_at=utcnow(), end_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def list_sessions(db: AsyncSession, ticket: Ticket | None = None) -> Sequence[Session]:
    query = select(Session).order_by(Session.created_at)
    if ticket is not None:
        query = query.where(Session.ticket_id == ticket.id)
    return (await db.execute(query)).scalars().all()


async def open_channel(
    db: AsyncSession,
    *,
    session_id: str,
    engineer_id: int,
    kind: str,
    detail: dict[str, Any],
    ref: str | None = None,
) -> Channel:
    channel = Channel(
        session_id=session_id, engineer_id=engineer_id, kind=kind, detail=detail, ref=ref
    )
    db.add(channel)
    await db.flush()
    return channel


async def close_channel(db: AsyncSession, channel_id: int, **values: Any) -> None:
    await db.execute(
        update(Channel).where(Channel.id == channel_id).values(closed_at=utcnow(), **values)
    )


async def channel_by_ref(db: AsyncSession, ref: str) -> Channel | None:
    return (await db.execute(select(Channel).where(Channel.ref == ref))).scalar_one_or_none()


async def list_channels(db: AsyncSession, session_id: str) -> Sequence[Channel]:
    query = select(Channel).where(Channel.session_id == session_id).order_by(Channel.id)
    return (await db.execute(query)).scalars().all()


# --- audit ---------------------------------------------------------------------------------


async def append_audit(
    db: AsyncSession,
    *,
    action: str,
    actor: str,
    ticket_id: int | None = None,
    session_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the hash chain: the one writer of audit events, and it writes only
    actions (and detail fields) declared in broker.vocabulary. Appends are serialized (SQLite:
    the transaction holds the write lock from its start; PostgreSQL: an advisory lock), so the
    chain never forks, whichever process or node writes. ``db.info["audit_timer"]``, if the
    store set one, is told how long the append took."""
    vocabulary.check(action, details or {})  # the one writer speaks only the declared words
    began = time.perf_counter()
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK})
    head = (
        await db.execute(
            select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
        )
    ).first()
    seq, prev = (head[0] + 1, head[1]) if head else (1, chain.GENESIS)
    now = utcnow()
    details = details or {}
    encoded = chain.canonical(
        seq=seq,
        time=now,
        ticket_id=ticket_id,
        session_id=session_id,
        actor=actor,
        action=action,
        details=details,
    )
    event_hash = chain.link(prev, ticket_id, chain.digest(encoded))
    key = db.info.get("seal_key")
    event = AuditEvent(
        seq=seq,
        time=now,
        action=action,
        actor=actor,
        ticket_id=ticket_id,
        session_id=session_id,
        details=details,
        prev_hash=prev,
        hash=event_hash,
        seal=chain.seal(key, event_hash) if key else None,
    )
    db.add(event)
    await db.flush()
    # Read it back: a database that drops the row (a trigger, a rule) must not let the
    # action go on as if it were recorded. The store remembers what it wrote until signed.
    stored = await db.scalar(select(AuditEvent.hash).where(AuditEvent.seq == seq))
    if stored != event_hash:
        raise AuditLost(
            f"The audit event {action} was not stored (the database dropped or changed it); "
            "nothing was done."
        )
    db.info.setdefault("appended", []).append((seq, event_hash))
    timer = db.info.get("audit_timer")
    if timer is not None:
        timer(time.perf_counter() - began)
    return event


async def list_audit(db: AsyncSession, ticket: Ticket | None = None) -> Sequence[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.seq)
    if ticket is not None:
        query = query.where(AuditEvent.ticket_id == ticket.id)
    return (await db.execute(query)).scalars().all()


async def ticket_keys(db: AsyncSession, ids: set[int]) -> dict[int, str]:
    """Ticket id -> key, for these ids."""
    if not ids:
        return {}
    rows = await db.execute(select(Ticket.id, Ticket.key).where(Ticket.id.in_(ids)))
    return {int(i): str(k) for i, k in rows.all()}


async def names_by_id(db: AsyncSession) -> dict[int, str]:
    return {a.id: a.name for a in (await db.execute(select(Account))).scalars()}
