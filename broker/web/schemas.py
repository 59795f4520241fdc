"""The OpenAPI schemas of the API's answers: the JSON shapes themselves are made in one place,
broker.ops.shapes (the command line's --json prints the same)."""

from __future__ import annotations

from typing import Any

TICKET_STATUSES = ("open", "pending", "resolved", "closed")
SESSION_STATES = ("pending", "active", "ended", "interrupted")
ROLES_ALL = ("engineer", "auditor", "admin")
READERS = ("auditor", "admin")


# --- OpenAPI schemas -----------------------------------------------------------------------

STR = {"type": "string"}
OPT_STR = {"type": "string", "nullable": True}
OPT_TIME = {"type": "string", "format": "date-time", "nullable": True}
INT = {"type": "integer"}
OPT_INT = {"type": "integer", "nullable": True}
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
        "engineer": OPT_STR,
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
        "opened_at": OPT_TIME,
        "closed_at": OPT_TIME,
        "bytes_in": INT,
        "bytes_out": INT,
        "exit_status": OPT_INT,
        "exit_signal": OPT_STR,
        "close_reason": OPT_STR,
        "recording": {"type": "boolean"},
        "recording_sha256": OPT_STR,
        "recording_size": OPT_INT,
    },
}
EVENT = {
    "type": "object",
    "properties": {
        "seq": INT,
        "time": OPT_TIME,
        "ticket": OPT_STR,
        "ticket_id": OPT_INT,
        "session": OPT_STR,
        "actor": STR,
        "action": STR,
        "details": OBJ,
        "hash": STR,
    },
}


def with_properties(schema: dict[str, Any], **more: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an object) with more properties: an answer that adds to a shape."""
    return {**schema, "properties": {**schema["properties"], **more}}


def page_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": item}, "next_cursor": OPT_STR},
    }


def list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"items": {"type": "array", "items": item}}}
