"""The JSON shapes of the API: how rows are turned into JSON, and the same shapes as OpenAPI
schemas (kept side by side so that a change to one is a change to the other)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from broker.store.models import AuditEvent, Channel, Session, Ticket

TICKET_STATUSES = ("open", "pending", "resolved", "closed")
SESSION_STATES = ("pending", "active", "ended", "interrupted")
ROLES_ALL = ("engineer", "auditor", "admin")
READERS = ("auditor", "admin")


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def ticket_json(t: Ticket) -> dict[str, Any]:
    return {
        "key": t.key,
        "title": t.title,
        "severity": t.severity,
        "status": t.status,
        "customer_name": t.customer_name,
        "customer_email": t.customer_email,
        "created_at": _time(t.created_at),
        "updated_at": _time(t.updated_at),
    }


def session_json(s: Session, ticket_key: str) -> dict[str, Any]:
    return {
        "id": s.id,
        "ticket": ticket_key,
        "state": s.state,
        "requested_scope": s.requested_scope,
        "granted_scope": s.granted_scope,
        "customer_host": s.customer_host or {},
        "customer_addr": s.customer_addr,
        "created_at": _time(s.created_at),
        "started_at": _time(s.started_at),
        "ended_at": _time(s.ended_at),
        "end_reason": s.end_reason,
    }


def channel_json(c: Channel, engineer: str) -> dict[str, Any]:
    return {
        "id": c.id,
        "session": c.session_id,
        "engineer": engineer,
        "kind": c.kind,
        "detail": c.detail or {},
        "opened_at": _time(c.opened_at),
        "closed_at": _time(c.closed_at),
        "bytes_in": c.bytes_in,
        "bytes_out": c.bytes_out,
        "exit_status": c.exit_status,
        "exit_signal": c.exit_signal,
        "close_reason": c.close_reason,
        "recording": c.recording_path is not None,
        "recording_sha256": c.recording_sha256,
        "recording_size": c.recording_size,
    }


def event_json(e: AuditEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "time": _time(e.time),
        "ticket_id": e.ticket_id,
        "session": e.session_id,
        "actor": e.actor,
        "action": e.action,
        "details": e.details,
        "hash": e.hash,
    }


# --- OpenAPI schemas -----------------------------------------------------------------------

STR = {"type": "string"}
OPT_STR = {"type": "string", "nullable": True}
OPT_TIME = {"type": "string", "format": "date-time", "nullable": True}
INT = {"type": "integer"}
OBJ = {"type": "object"}

TICKET = {
    "type": "object",
    "properties": {
        "key": STR,
        "title": STR,
        "severity": {"type": "integer", "minimum": 1, "maximum": 4},
        "status": {"type": "string", "enum": list(TICKET_STATUSES)},
        "customer_name": OPT_STR,
        "customer_email": OPT_STR,
        "created_at": OPT_TIME,
        "updated_at": OPT_TIME,
    },
}
SESSION = {
    "type": "object",
    "properties": {
        "id": STR,
        "ticket": STR,
        "state": STR,
        "requested_scope": STR,
        "granted_scope": OPT_STR,
        "customer_host": OBJ,
        "customer_addr": OPT_STR,
        "created_at": OPT_TIME,
        "started_at": OPT_TIME,
        "ended_at": OPT_TIME,
        "end_reason": OPT_STR,
    },
}
CHANNEL = {
    "type": "object",
    "properties": {
        "id": INT,
        "session": STR,
        "engineer": STR,
        "kind": STR,
        "detail": OBJ,
        "bytes_in": INT,
        "bytes_out": INT,
        "recording": {"type": "boolean"},
        "recording_sha256": OPT_STR,
    },
}
EVENT = {
    "type": "object",
    "properties": {
        "seq": INT,
        "time": OPT_TIME,
        "ticket_id": {"type": "integer", "nullable": True},
        "session": OPT_STR,
        "actor": STR,
        "action": STR,
        "details": OBJ,
        "hash": STR,
    },
}


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": item}, "next_cursor": OPT_STR},
    }


def list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"items": {"type": "array", "items": item}}}
