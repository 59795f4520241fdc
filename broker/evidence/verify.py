"""Checks the evidence: the audit chain, the checkpoints' signatures and their own chain, the
checkpoint log outside the database, the unsigned tail, and every recording.

The pure functions here (:func:`walk`, :func:`check_checkpoints`, :func:`check_log`,
:func:`tail_problem`) are what an outside auditor re-implements (see broker.store.chain for
the encoding); :func:`verify_store` applies them to the database and the data dir. The same
checks run in the broker before it signs a new checkpoint (broker.evidence.checkpoints), so that
forged history is an alarm, never a new signature.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from broker.evidence import sshsig
from broker.evidence.ckptlog import CheckpointLog, Signed
from broker.evidence.signing import valid
from broker.keys import load_seal_key
from broker.store import chain
from broker.store.db import Store
from broker.store.models import AuditCheckpoint, AuditEvent, utcnow

#: the longest an event may stay without a signed checkpoint before ``audit verify`` fails
DEFAULT_WINDOW = 60.0


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
    #: HMAC of ``hash`` under the data dir's seal key (None: unsealed, or not disclosed)
    seal: str | None = None

    @property
    def time(self) -> dt.datetime | None:
        return None if self.fields is None else self.fields["time"]


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as stored: v1 (``signature``) or v2 (``message`` and ``sshsig``)."""

    seq: int
    hash: str
    signature: str = ""
    message: str | None = None
    sshsig: str | None = None

    @property
    def digest(self) -> str:
        text = (
            self.message.encode() if self.message else chain.checkpoint_message(self.seq, self.hash)
        )
        return chain.checkpoint_digest(text)

    @classmethod
    def of(cls, row: AuditCheckpoint | Signed) -> Checkpoint:
        if isinstance(row, Signed):
            return cls(row.seq, row.hash, "", row.message, row.sshsig)
        return cls(row.seq, row.hash, row.signature or "", row.message, row.sshsig)


@dataclass
class Report:
    events: int = 0
    checkpoints: int = 0
    recordings: int = 0
    head: str = chain.GENESIS
    problems: list[str] = field(default_factory=list)
    #: the newest events not yet covered by a signed checkpoint (within the window)
    unsigned: int = 0
    #: checkpoints also found in the checkpoint log outside the database
    logged: int = 0
    #: the key that signed (a bundle names it; compare with `assist-broker audit pubkey`)
    key_id: str = ""
    #: for bundles checked without a trusted key: consistent, but by a key nobody checked
    untrusted: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and not self.untrusted

    def summary(self) -> str:
        if self.problems:
            return f"BROKEN: {self.problems[0]}"
        text = (
            f"{self.events} events chained (head {self.head[:16]}), {self.checkpoints} "
            f"checkpoint signatures valid, {self.recordings} recordings match their hashes."
        )
        if self.logged:
            text += f" {self.logged} checkpoints match the checkpoint log."
        if self.unsigned:
            text += f" The newest {self.unsigned} events are not signed yet (within the window)."
        if self.untrusted:
            return (
                f"NOT CHECKED: {text} It was signed by {self.key_id}, but that key was not "
                "checked: give the key you trust with --pubkey or --allowed-signers."
            )
        signed_by = f" Signed by {self.key_id}." if self.key_id else ""
        return f"OK: {text}{signed_by}"


def event_digest(event: ChainEvent) -> str:
    if event.fields is None:
        assert event.given_digest is not None
        return event.given_digest
    return chain.digest(chain.canonical(**event.fields))


def walk(
    events: Sequence[ChainEvent],
    *,
    first_seq: int = 1,
    first_prev: str = chain.GENESIS,
    seal_key: bytes | None = None,
    sealed_from: int | None = None,
) -> tuple[list[str], str, dict[int, str]]:
    """Walk the events in order: (problems, head hash, seq -> hash). Stops at the first break.

    With ``seal_key`` (only the broker's own data dir has it) every seal present must match,
    and from ``sealed_from`` on every event must carry one: an event appended by someone who
    can write the database but does not hold the key chains correctly, but has no seal."""
    prev, expected_seq = first_prev, first_seq
    hashes: dict[int, str] = {}
    for event in events:
        name = f"event {event.seq}" + (f" ({event.action})" if event.action else "")
        if event.seq != expected_seq:
            problem = (
                f"event {expected_seq} is missing (the chain jumps to {event.seq})"
                if event.seq > expected_seq
                else f"{name} is out of order"
            )
            return [problem], prev, hashes
        if event.prev_hash != prev:
            problem = (
                f"{name}: prev_hash does not match the event before it "
                "(an event was removed, inserted or reordered)"
            )
            return [problem], prev, hashes
        try:
            linked = chain.link(prev, event.ticket_id, event_digest(event))
            unsealed = _seal_problem(event, name, seal_key, sealed_from) if seal_key else None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            malformed = f"{name} is malformed ({type(exc).__name__}): it was written by hand"
            return [malformed], prev, hashes
        if linked != event.hash:
            problem = (
                f"{name}: its content does not match its hash (it was changed after it was written)"
            )
            return [problem], prev, hashes
        if unsealed:
            return [unsealed], prev, hashes
        hashes[event.seq] = event.hash
        prev, expected_seq = event.hash, expected_seq + 1
    return [], prev, hashes


def _seal_problem(event: ChainEvent, name: str, key: bytes, sealed_from: int | None) -> str | None:
    if event.seal is None:
        if sealed_from is not None and event.seq >= sealed_from:
            return (
                f"{name} carries no seal: it was not written by this broker (someone wrote it "
                "into the database directly)"
            )
        return None
    if not hmac.compare_digest(event.seal, chain.seal(key, event.hash)):
        return (
            f"{name}: its seal does not match: it was not written by this broker, or changed "
            "afterwards"
        )
    return None


def signature_problem(point: Checkpoint, public: Ed25519PublicKey) -> str | None:
    """Why ``point`` is not validly signed by ``public`` (v1 or v2), or ``None``."""
    if point.message is None:
        if point.signature and valid(public, point.seq, point.hash, point.signature):
            return None
        return "the signature is not valid"
    try:
        fields = chain.parse_checkpoint_v2(point.message)
    except ValueError as exc:
        return f"its message is not valid ({exc})"
    if int(fields["seq"]) != point.seq or fields["hash"] != point.hash:
        return "its message names another event than its record"
    why = sshsig.problem(
        point.message.encode(), point.sshsig or "", sshsig.CHECKPOINT_NAMESPACE, public
    )
    return None if why is None else f"the signature is not valid: {why}"


def check_checkpoints(
    points: Sequence[Checkpoint],
    hashes: dict[int, str],
    last_seq: int,
    public: Ed25519PublicKey,
    *,
    first_prev: str | None = chain.GENESIS,
) -> tuple[list[str], int]:
    """Each checkpoint (in the order signed): signed by ``public``, naming the chain's hash at
    its event, and naming the checkpoint before it (``first_prev``: what the first names; None
    when the ones before are not given, as in a bundle). Returns (problems, the last checked
    checkpoint's seq, 0 if none)."""
    previous: str | None = first_prev
    signed = 0
    for point in points:
        where = f"checkpoint at event {point.seq}"
        if point.seq > last_seq:
            return [
                f"{where} is past the last event ({last_seq}): events were removed from the end"
            ], signed
        if point.seq in hashes and hashes[point.seq] != point.hash:
            return [f"{where}: its hash is not the chain's"], signed
        why = signature_problem(point, public)
        if why is not None:
            return [f"{where}: {why}"], signed
        if point.message is not None:
            prev = chain.parse_checkpoint_v2(point.message)["prev"]
            if previous is not None and prev != previous:
                return [
                    f"{where}: it names a checkpoint before it that is not there "
                    "(checkpoints were removed)"
                ], signed
        previous = point.digest
        signed = max(signed, point.seq)
    return [], signed


def check_log(logged: Sequence[Signed], stored: Iterable[Checkpoint]) -> list[str]:
    """Every checkpoint of the log outside the database is in the database, unchanged."""
    by_digest = {p.digest: p for p in stored}
    for entry in logged:
        point = by_digest.get(entry.digest)
        if point is None or point.message != entry.message or point.sshsig != entry.sshsig:
            return [
                f"checkpoint at event {entry.seq} is in the checkpoint log but not in the "
                "database: checkpoints or events were deleted or rewritten"
            ]
    return []


def tail_problem(
    events: Sequence[ChainEvent], signed_seq: int, now: dt.datetime, window: float
) -> tuple[str | None, int]:
    """Events after the last signed checkpoint: a problem if the oldest of them is older than
    ``window`` seconds; and how many there are."""
    tail = [e for e in events if e.seq > signed_seq]
    if not tail:
        return None, 0
    oldest = tail[0].time
    if oldest is None:
        return (f"events {tail[0].seq} to {tail[-1].seq} are not covered by a signature"), len(tail)
    age = (now - oldest).total_seconds()
    if age > window:
        return (
            f"events {tail[0].seq} to {tail[-1].seq} are not covered by a signed checkpoint; "
            f"the oldest was written {round(age)} s ago (the broker signs within {round(window)} "
            "s): signed events were removed, or the broker's signing stopped"
        ), len(tail)
    return None, len(tail)


def check_chain(
    events: Sequence[ChainEvent],
    checkpoints: Sequence[Checkpoint],
    public: Ed25519PublicKey,
    *,
    first_seq: int = 1,
    first_prev: str = chain.GENESIS,
    first_checkpoint_prev: str | None = chain.GENESIS,
    seal_key: bytes | None = None,
    sealed_from: int | None = None,
) -> tuple[list[str], str, int]:
    """Walk the events, then check the checkpoints: (problems, head hash, last signed seq)."""
    problems, head, hashes = walk(
        events,
        first_seq=first_seq,
        first_prev=first_prev,
        seal_key=seal_key,
        sealed_from=sealed_from,
    )
    if problems:
        return problems, head, 0
    last = first_seq + len(events) - 1
    problems, signed = check_checkpoints(
        checkpoints, hashes, last, public, first_prev=first_checkpoint_prev
    )
    return problems, head, signed


def as_chain_event(row: AuditEvent) -> ChainEvent:
    time = row.time if row.time.tzinfo else row.time.replace(tzinfo=dt.UTC)
    return ChainEvent(
        seq=row.seq,
        prev_hash=row.prev_hash,
        hash=row.hash,
        ticket_id=row.ticket_id,
        action=row.action,
        seal=row.seal,
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
        details: Any = row.details  # typed a dict, but a row written by hand may hold a list
        if not isinstance(details, dict):
            continue  # malformed: the chain walk names it
        path = str(details.get("path", ""))
        if row.action == "recording.closed" and path:
            found[path] = {**row.details, "ticket_id": row.ticket_id}
        elif row.action == "recording.pruned":
            found.pop(path, None)
    return found


async def verify_store(
    store: Store,
    public: Ed25519PublicKey,
    data_dir: Path,
    ticket_id: int | None = None,
    *,
    window: float = DEFAULT_WINDOW,
    now: dt.datetime | None = None,
    recordings: Path | None = None,
) -> Report:
    """Everything, against the database, the checkpoint log in ``data_dir`` and the files."""
    from broker.evidence.recordings import resolve

    report = Report()
    try:
        async with store.read() as db:
            rows = (await db.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars().all()
            stored = await db.execute(
                select(AuditCheckpoint).order_by(AuditCheckpoint.seq, AuditCheckpoint.id)
            )
            checkpoints = [Checkpoint.of(p) for p in stored.scalars()]
    except (StatementError, ValueError, TypeError) as exc:  # a row written by hand
        report.problems.append(f"the audit tables hold a row that cannot be read ({exc})"[:500])
        return report
    events = [as_chain_event(r) for r in rows]
    logged, log_problems = CheckpointLog.of(data_dir).read()
    # Every event after the first checkpoint this data dir logged was written by a broker
    # that seals (the log and the seals came with the same version).
    sealed_from = min(p.seq for p in logged) + 1 if logged else None
    problems, head, signed = check_chain(
        events,
        checkpoints,
        public,
        seal_key=load_seal_key(data_dir, create=False),
        sealed_from=sealed_from,
    )
    report.problems += problems
    report.events = len(rows) if ticket_id is None else sum(r.ticket_id == ticket_id for r in rows)
    report.checkpoints, report.head = len(checkpoints), head
    report.problems += log_problems
    if not report.problems:
        report.problems += check_log(logged, checkpoints)
        if not logged and any(p.message is not None for p in checkpoints):
            report.problems.append(
                f"the checkpoint log {data_dir / 'audit_checkpoints.log'} is missing or empty: "
                "deleted checkpoints could not be noticed"
            )
        report.logged = len(logged)
    if not report.problems:
        late, report.unsigned = tail_problem(events, signed, now or utcnow(), window)
        if late:
            report.problems.append(late)
    root = recordings or data_dir / "recordings"
    for path, record in recordings_in_chain(rows).items():
        if ticket_id is not None and record["ticket_id"] != ticket_id:
            continue
        file = resolve(data_dir, root, path)
        problem = (
            "it lies outside the recordings folder"
            if file is None  # hashing reads the whole file: off the event loop
            else await asyncio.to_thread(
                check_recording, file, record.get("sha256"), record.get("size")
            )
        )
        if problem:
            report.problems.append(
                f"recording of channel {record.get('channel_id')} ({path}): {problem}"
            )
        report.recordings += 1
    return report
