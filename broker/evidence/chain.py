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

Checkpoints sign the chain head with Ed25519 over the bytes of
``"assist-broker checkpoint v1\\nseq=<seq>\\nhash=<hash>\\n"``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

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


def digest(encoded: bytes) -> str:
    return hashlib.sha256(encoded).hexdigest()


def link(prev_hash: str, ticket_id: int | None, event_digest: str) -> str:
    ticket = "" if ticket_id is None else str(ticket_id)
    return hashlib.sha256(f"{prev_hash}|{ticket}|{event_digest}".encode()).hexdigest()


def checkpoint_message(seq: int, head: str) -> bytes:
    return f"assist-broker checkpoint v1\nseq={seq}\nhash={head}\n".encode()
