"""The audit chain, in a form an outside auditor can re-implement in a few lines.

Each audit event is encoded canonically: JSON with sorted keys, no spaces, UTF-8, of

    {"seq", "time" (ISO 8601 UTC, microseconds), "ticket_id", "session_id", "actor",
     "action", "details"}

    digest = SHA-256(canonical event), hex
    hash   = SHA-256(prev_hash + digest), hex; prev_hash of the first event is 64 zeros

so ``hash`` covers the event and every event before it. Chaining the digest (rather than the
event itself) lets an export bundle prove one ticket's events with the other tickets' events
given only as ``(seq, digest)``: nothing of other customers is disclosed.

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


def link(prev_hash: str, event_digest: str) -> str:
    return hashlib.sha256((prev_hash + event_digest).encode()).hexdigest()


def checkpoint_message(seq: int, head: str) -> bytes:
    return f"assist-broker checkpoint v1\nseq={seq}\nhash={head}\n".encode()
