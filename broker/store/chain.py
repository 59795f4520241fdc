"""The audit chain, in a form an outside auditor can re-implement in a few lines.

Each audit event is encoded canonically: JSON with sorted keys, no spaces, UTF-8, of

    {"seq", "time" (ISO 8601 UTC, microseconds), "ticket_id", "session_id", "actor",
     "action", "details"}

    digest = SHA-256(canonical event), hex
    hash   = SHA-256(prev_hash + "|" + ticket_id + "|" + digest), hex
             (ticket_id as decimal, or empty; prev_hash of the first event is 64 zeros)

so ``hash`` covers the event and every event before it. Chaining the digest (rather than the
event itself) lets an export bundle prove one ticket's events with the other tickets' events
given only as ``(seq, ticket_id, digest)``: nothing of other customers is disclosed, and since
the ticket id is chained in the clear, a bundle cannot pass off one of its own ticket's events
as someone else's.

Checkpoints sign the chain head. Each names the one before it, so that the checkpoints form a
chain of their own (deleting one, or the events it covers, breaks that chain)::

    assist-broker checkpoint v2
    seq=<seq of the head>
    hash=<hash of the head>
    prev=<digest of the previous checkpoint's message, or 64 zeros for the first>
    time=<ISO 8601 UTC, microseconds>

(each line ends with a newline). ``digest`` of a checkpoint is SHA-256 of its message. The
message is signed in OpenSSH's SSHSIG format (namespace ``assist-broker-checkpoint``), so that
``ssh-keygen -Y verify`` checks it. Older databases hold v1 checkpoints: a raw Ed25519
signature over ``"assist-broker checkpoint v1\\nseq=<seq>\\nhash=<hash>\\n"``, no ``prev``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from typing import Any, Protocol

GENESIS = "0" * 64


def canonical(
    *,
    seq: int,
    time: dt.datetime,
    ticket_id: int | None,
    session_id: str | None,
    actor: str,
    action: str,
    details: dict[str, Any],
) -> bytes:
    event = {
        "seq": seq,
        "time": time.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "ticket_id": ticket_id,
        "session_id": session_id,
        "actor": actor,
        "action": action,
        "details": details,
    }
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class EventRow(Protocol):
    """An audit event as stored (broker.store.models.AuditEvent has these)."""

    seq: int
    time: dt.datetime
    ticket_id: int | None
    session_id: str | None
    actor: str
    action: str
    details: dict[str, Any]


def row_digest(row: EventRow) -> str:
    """SHA-256 of a stored event's canonical encoding."""
    return digest(
        canonical(
            seq=row.seq,
            time=row.time,
            ticket_id=row.ticket_id,
            session_id=row.session_id,
            actor=row.actor,
            action=row.action,
            details=row.details,
        )
    )


def digest(encoded: bytes) -> str:
    return hashlib.sha256(encoded).hexdigest()


def link(prev_hash: str, ticket_id: int | None, event_digest: str) -> str:
    ticket = "" if ticket_id is None else str(ticket_id)
    return hashlib.sha256(f"{prev_hash}|{ticket}|{event_digest}".encode()).hexdigest()


def seal(key: bytes, event_hash: str) -> str:
    """The seal of an event: HMAC-SHA256 of its hash under the data dir's seal key."""
    return hmac.new(key, event_hash.encode(), hashlib.sha256).hexdigest()


def checkpoint_message(seq: int, head: str) -> bytes:
    """The v1 message (raw Ed25519 signatures of older databases)."""
    return f"assist-broker checkpoint v1\nseq={seq}\nhash={head}\n".encode()


CHECKPOINT_V2 = "assist-broker checkpoint v2"
_V2_FIELDS = ("seq", "hash", "prev", "time")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def checkpoint_message_v2(seq: int, head: str, prev: str, time: dt.datetime) -> str:
    stamp = time.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return f"{CHECKPOINT_V2}\nseq={seq}\nhash={head}\nprev={prev}\ntime={stamp}\n"


def parse_checkpoint_v2(message: str) -> dict[str, str]:
    """The fields of a v2 message; ``ValueError`` naming what is wrong with it."""
    lines = message.split("\n")
    if lines[0] != CHECKPOINT_V2 or lines[-1] != "" or len(lines) != len(_V2_FIELDS) + 2:
        raise ValueError("not an assist-broker checkpoint v2 message")
    fields: dict[str, str] = {}
    for name, line in zip(_V2_FIELDS, lines[1:-1], strict=True):
        key, sep, value = line.partition("=")
        if key != name or not sep:
            raise ValueError(f"the line {name}= is missing")
        fields[name] = value
    if not fields["seq"].isdigit():
        raise ValueError("seq is not a number")
    if not _HEX64.fullmatch(fields["hash"]) or not _HEX64.fullmatch(fields["prev"]):
        raise ValueError("hash and prev must be 64 hex digits")
    dt.datetime.fromisoformat(fields["time"])
    return fields


def checkpoint_digest(message: bytes) -> str:
    """What the next checkpoint names as ``prev``."""
    return hashlib.sha256(message).hexdigest()
