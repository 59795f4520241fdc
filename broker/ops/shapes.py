"""One JSON shape per kind of row: what ``--json`` prints and what the API answers are the same
dicts (the OpenAPI schemas that describe them live beside the API, in broker.web.schemas)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from broker.store.models import (
    Account,
    ApiToken,
    AuditEvent,
    Channel,
    ConsentCode,
    Session,
    Ticket,
)


def when(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def ticket(t: Ticket) -> dict[str, Any]:
    return {
        "key": t.key,
        "title": t.title,
        "severity": t.severity,
        "status": t.status,
        "customer_name": t.customer_name,
        "customer_email": t.customer_email,
        "created_at": when(t.created_at),
        "updated_at": when(t.updated_at),
    }


def session(s: Session, ticket_key: str, engineer: str | None = None) -> dict[str, Any]:
    return {
        "id": s.id,
        "ticket": ticket_key,
        "state": s.state,
        "engineer": engineer,
        "requested_scope": s.requested_scope,
        "granted_scope": s.granted_scope,
        "customer_host": s.customer_host or {},
        "customer_addr": s.customer_addr,
        "created_at": when(s.created_at),
        "started_at": when(s.started_at),
        "ended_at": when(s.ended_at),
        "end_reason": s.end_reason,
    }


def channel(c: Channel, engineer: str) -> dict[str, Any]:
    return {
        "id": c.id,
        "session": c.session_id,
        "engineer": engineer,
        "kind": c.kind,
        "detail": c.detail or {},
        "opened_at": when(c.opened_at),
        "closed_at": when(c.closed_at),
        "bytes_in": c.bytes_in,
        "bytes_out": c.bytes_out,
        "exit_status": c.exit_status,
        "exit_signal": c.exit_signal,
        "close_reason": c.close_reason,
        "recording": c.recording_path is not None,
        "recording_sha256": c.recording_sha256,
        "recording_size": c.recording_size,
    }


def event(e: AuditEvent, ticket_key: str | None = None) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "time": when(e.time),
        "ticket": ticket_key,
        "ticket_id": e.ticket_id,
        "session": e.session_id,
        "actor": e.actor,
        "action": e.action,
        "details": e.details,
        "hash": e.hash,
    }


def account(a: Account, keys: int | None = None) -> dict[str, Any]:
    shaped: dict[str, Any] = {
        "name": a.name,
        "display_name": a.display_name,
        "role": a.role,
        "disabled": a.disabled,
        "password": a.password_hash is not None,
    }
    if keys is not None:
        shaped["keys"] = keys
    return shaped


def token(t: ApiToken) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "created_at": when(t.created_at),
        "expires_at": when(t.expires_at),
        "revoked": t.revoked_at is not None,
        "last_used_at": when(t.last_used_at),
    }


def code(c: ConsentCode, ticket_key: str, engineer: str | None, now: dt.datetime) -> dict[str, Any]:
    """A consent code's record (the code itself is never kept); an unused code past its time
    shows as ``expired``."""
    expires = c.expires_at if c.expires_at.tzinfo else c.expires_at.replace(tzinfo=dt.UTC)
    state = "expired" if c.state == "issued" and expires <= now else c.state
    return {
        "id": c.id,
        "ticket": ticket_key,
        "engineer": engineer,
        "scope": c.scope,
        "state": state,
        "issued_at": when(c.issued_at),
        "expires_at": when(c.expires_at),
        "redeemed_at": when(c.redeemed_at),
    }
