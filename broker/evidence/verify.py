"""Checks the evidence: the audit chain, every checkpoint signature, every recording.

``check_chain`` is the small, pure function an outside auditor can re-implement (see
broker.evidence.chain for the encoding); ``verify_store`` applies it to the database and also
checks each recording's SHA-256 and size."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from broker.evidence import chain
from broker.evidence.signing import valid
from broker.store.db import Store
from broker.store.models import AuditCheckpoint, AuditEvent


@dataclass(frozen=True)
class ChainEvent:
    """One event as verified: the full event, or only ``(seq, digest)`` for events that an
    export bundle leaves out (other tickets')."""

    seq: int
    prev_hash: str
    hash: str
    ticket_id: int | None = None
    action: str = ""
    fields: dict[str, Any] | None = None
    given_digest: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    signature: str


@dataclass
class Report:
    events: int = 0
    checkpoints: int = 0
    recordings: int = 0
    head: str = chain.GENESIS
    problems: list[str] = field(default_factory=list)
    #: for bundles: the key that signed them (compare with `assist-broker audit pubkey`)
    key_id: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.problems:
            return f"BROKEN: {self.problems[0]}"
        signed_by = f" Signed by {self.key_id}." if self.key_id else ""
        return (
            f"OK: {self.events} events chained (head {self.head[:16]}), {self.checkpoints} "
            f"checkpoint signatures valid, {self.recordings} recordings match their hashes."
            f"{signed_by}"
        )


def event_digest(event: ChainEvent) -> str:
    if event.fields is None:
        assert event.given_digest is not None
        return event.given_digest
    return chain.digest(chain.canonical(**event.fields))


def check_chain(
    events: Sequence[ChainEvent],
    checkpoints: Iterable[Checkpoint],
    public: Ed25519PublicKey,
    *,
    first_seq: int = 1,
    first_prev: str = chain.GENESIS,
) -> tuple[list[str], str]:
    """Walk the events in order; return (problems, head hash). Stops at the first broken link."""
    problems: list[str] = []
    prev, expected_seq = first_prev, first_seq
    hashes: dict[int, str] = {}
    for event in events:
        name = f"event {event.seq}" + (f" ({event.action})" if event.action else "")
        if event.seq != expected_seq:
            problems.append(
                f"event {expected_seq} is missing (the chain jumps to {event.seq})"
                if event.seq > expected_seq
                else f"{name} is out of order"
            )
            break
        if event.prev_hash != prev:
            problems.append(
                f"{name}: prev_hash does not match the event before it "
                "(an event was removed, inserted or reordered)"
            )
            break
        if chain.link(prev, event.ticket_id, event_digest(event)) != event.hash:
            problems.append(
                f"{name}: its content does not match its hash (it was changed after it was written)"
            )
            break
        hashes[event.seq] = event.hash
        prev, expected_seq = event.hash, expected_seq + 1
    last = expected_seq - 1
    for point in checkpoints:
        if problems:
            break
        if point.seq > last:
            problems.append(
                f"checkpoint at event {point.seq} is past the last event ({last}): "
                "events were removed from the end"
            )
        elif point.seq in hashes and hashes[point.seq] != point.hash:
            problems.append(f"checkpoint at event {point.seq}: its hash is not the chain's")
        elif not valid(public, point.seq, point.hash, point.signature):
            problems.append(f"checkpoint at event {point.seq}: the signature is not valid")
    return problems, prev


def as_chain_event(row: AuditEvent) -> ChainEvent:
    time = row.time if row.time.tzinfo else row.time.replace(tzinfo=dt.UTC)
    return ChainEvent(
        seq=row.seq,
        prev_hash=row.prev_hash,
        hash=row.hash,
        ticket_id=row.ticket_id,
        action=row.action,
        fields={
            "seq": row.seq,
            "time": time,
            "ticket_id": row.ticket_id,
            "session_id": row.session_id,
            "actor": row.actor,
            "action": row.action,
            "details": row.details,
        },
    )


def check_recording(path: Path, sha256: str | None, size: int | None) -> str | None:
    if not path.exists():
        return "the file is missing"
    digest, total = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            total += len(chunk)
    if size is not None and total != size:
        return f"its size is {total} bytes, the record says {size}"
    if sha256 is not None and digest.hexdigest() != sha256:
        return "its SHA-256 does not match the record (the file was changed)"
    return None


def recordings_in_chain(rows: Iterable[AuditEvent]) -> dict[str, dict[str, Any]]:
    """Recording path -> what its ``recording.closed`` event says, less the pruned ones.

    The chain, not the (unchained) channel table, is what recordings are checked against."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        path = str(row.details.get("path", ""))
        if row.action == "recording.closed" and path:
            found[path] = {**row.details, "ticket_id": row.ticket_id}
        elif row.action == "recording.pruned":
            found.pop(path, None)
    return found


async def verify_store(
    store: Store, public: Ed25519PublicKey, data_dir: Path, ticket_id: int | None = None
) -> Report:
    report = Report()
    async with store.read() as db:
        rows = (await db.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars().all()
        points = await db.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))
        checkpoints = [Checkpoint(p.seq, p.hash, p.signature) for p in points.scalars()]
    problems, head = check_chain([as_chain_event(r) for r in rows], checkpoints, public)
    report.problems += problems
    report.events = len(rows) if ticket_id is None else sum(r.ticket_id == ticket_id for r in rows)
    report.checkpoints, report.head = len(checkpoints), head
    for path, record in recordings_in_chain(rows).items():
        if ticket_id is not None and record["ticket_id"] != ticket_id:
            continue
        problem = check_recording(data_dir / path, record.get("sha256"), record.get("size"))
        if problem:
            report.problems.append(
                f"recording of channel {record.get('channel_id')} ({path}): {problem}"
            )
        report.recordings += 1
    return report
