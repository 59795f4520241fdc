"""Export bundles: one ticket's evidence in one tar file, verifiable without the database.

Contents: ``ticket.json``; ``events.jsonl`` (every event from the ticket's first to the signed
checkpoint after its last: the ticket's own in full, others as ``seq, digest, prev_hash, hash``
only); ``checkpoints.json``; ``recordings/...``; ``pubkey.pem``; ``manifest.json`` with the
SHA-256 of every other file.

:func:`verify_bundle` is what an outside auditor re-implements: check the manifest, walk the chain
from the first event's ``prev_hash`` (see broker.evidence.chain), require a valid signature on the
last event's hash, and match every recording against the SHA-256 its ``recording.closed`` event
names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from broker import render
from broker.errors import Invalid
from broker.evidence import chain
from broker.evidence.checkpoints import Checkpointer
from broker.evidence.signing import Signer, key_id, load_public
from broker.evidence.verify import ChainEvent, Checkpoint, Report, check_chain
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import AuditCheckpoint, AuditEvent, Channel, Session


def _event_line(row: AuditEvent, full: bool) -> dict[str, Any]:
    base = {
        "seq": row.seq,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
        "ticket_id": row.ticket_id,
    }
    if not full:
        encoded = chain.canonical(
            seq=row.seq,
            time=row.time,
            ticket_id=row.ticket_id,
            session_id=row.session_id,
            actor=row.actor,
            action=row.action,
            details=row.details,
        )
        return {**base, "digest": chain.digest(encoded)}
    return {
        **base,
        "time": row.time.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "session_id": row.session_id,
        "actor": row.actor,
        "action": row.action,
        "details": row.details,
    }


async def export_bundle(
    store: Store, signer: Signer, data_dir: Path, ticket_key: str, out: Path
) -> dict[str, Any]:
    checkpointer = Checkpointer(store, signer)
    async with store.read() as db:
        ticket = await q.get_ticket(db, ticket_key)
        own = (
            (
                await db.execute(
                    select(AuditEvent.seq)
                    .where(AuditEvent.ticket_id == ticket.id)
                    .order_by(AuditEvent.seq)
                )
            )
            .scalars()
            .all()
        )
    if not own:
        raise Invalid(f"{ticket.key} has no audit events to export")
    async with store.read() as db:
        point = (
            await db.execute(
                select(AuditCheckpoint)
                .where(AuditCheckpoint.seq >= own[-1])
                .order_by(AuditCheckpoint.seq)
                .limit(1)
            )
        ).scalar()
    if point is None:
        point = await checkpointer.checkpoint()
        assert point is not None
    async with store.read() as db:
        rows = (
            (
                await db.execute(
                    select(AuditEvent)
                    .where(AuditEvent.seq >= own[0], AuditEvent.seq <= point.seq)
                    .order_by(AuditEvent.seq)
                )
            )
            .scalars()
            .all()
        )
        points = (
            (
                await db.execute(
                    select(AuditCheckpoint)
                    .where(AuditCheckpoint.seq >= own[0], AuditCheckpoint.seq <= point.seq)
                    .order_by(AuditCheckpoint.seq)
                )
            )
            .scalars()
            .all()
        )
        sessions = [s.id for s in await q.list_sessions(db, ticket)]
        channels = (
            (
                await db.execute(
                    select(Channel).where(
                        Channel.session_id.in_(sessions), Channel.recording_path.is_not(None)
                    )
                )
            )
            .scalars()
            .all()
            if sessions
            else []
        )
        session_rows = [
            render.session(s, ticket, await q.names_by_id(db))
            for s in await db.scalars(select(Session).where(Session.id.in_(sessions)))
        ]

    files: dict[str, bytes] = {
        "ticket.json": json.dumps(
            {**render.ticket(ticket), "id": ticket.id, "sessions": session_rows}, indent=2
        ).encode(),
        "events.jsonl": "".join(
            json.dumps(_event_line(r, r.ticket_id == ticket.id), sort_keys=True, ensure_ascii=False)
            + "\n"
            for r in rows
        ).encode(),
        "checkpoints.json": json.dumps(
            [
                {"seq": p.seq, "hash": p.hash, "signature": p.signature, "key_id": p.key_id}
                for p in points
            ],
            indent=2,
        ).encode(),
        "pubkey.pem": signer.public_pem.encode(),
    }
    for channel in channels:
        assert channel.recording_path is not None
        files[f"recordings/{Path(channel.recording_path).name}"] = (
            data_dir / channel.recording_path
        ).read_bytes()
    manifest = {
        "format": "assist-broker bundle v1",
        "ticket": ticket.key,
        "events": {"first": own[0], "last": point.seq},
        "key_id": signer.key_id,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    files["manifest.json"] = json.dumps(manifest, indent=2).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(point.created_at.timestamp())
            tar.addfile(info, io.BytesIO(data))
    return {
        "ticket": ticket.key,
        "out": str(out),
        "events": len(rows),
        "own_events": len(own),
        "recordings": len(channels),
        "key_id": signer.key_id,
    }


def _chain_event(line: dict[str, Any]) -> ChainEvent:
    if "digest" in line:
        return ChainEvent(
            line["seq"],
            line["prev_hash"],
            line["hash"],
            ticket_id=line["ticket_id"],
            given_digest=line["digest"],
        )
    fields = {k: line[k] for k in ("seq", "ticket_id", "session_id", "actor", "action", "details")}
    fields["time"] = dt.datetime.fromisoformat(line["time"])
    return ChainEvent(
        line["seq"],
        line["prev_hash"],
        line["hash"],
        ticket_id=line["ticket_id"],
        action=line["action"],
        fields=fields,
    )


def _completeness(lines: list[dict[str, Any]], ticket_id: int, names: set[str]) -> list[str]:
    """The ticket's events are all there in full, from its creation on, with every recording."""
    problems = []
    first = lines[0] if lines else {}
    if first.get("action") != "ticket.created" or first.get("ticket_id") != ticket_id:
        problems.append("the bundle does not start with the ticket's creation")
    for line in lines:
        if line.get("ticket_id") == ticket_id and "digest" in line:
            problems.append(f"event {line['seq']} of this ticket is left out of the bundle")
    kept = {
        Path(str(d.get("path"))).name
        for d in (
            line.get("details", {}) for line in lines if line.get("action") == "recording.closed"
        )
    }
    kept -= {
        Path(str(line.get("details", {}).get("path"))).name
        for line in lines
        if line.get("action") == "recording.pruned"
    }
    for name in sorted(kept - names):
        problems.append(f"the recording {name} named in the chain is missing from the bundle")
    return problems


def verify_bundle(path: Path, trusted: Ed25519PublicKey | None = None) -> Report:
    """Check a bundle on its own. ``trusted``: the broker's public key, if the auditor has it
    from elsewhere (``assist-broker audit pubkey``); otherwise the bundle's own is used and its
    key id is reported for comparison."""
    report = Report()
    with tarfile.open(path) as tar:
        files = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    manifest = json.loads(files.get("manifest.json", b"{}"))
    for name, digest in manifest.get("files", {}).items():
        if name not in files:
            report.problems.append(f"{name} is listed in the manifest but missing")
        elif hashlib.sha256(files[name]).hexdigest() != digest:
            report.problems.append(f"{name}: its SHA-256 does not match the manifest")
    extra = set(files) - set(manifest.get("files", {})) - {"manifest.json"}
    if extra:
        report.problems.append(f"files not in the manifest: {', '.join(sorted(extra))}")
    if report.problems:
        return report
    public = trusted or load_public(files["pubkey.pem"].decode())
    lines = [json.loads(line) for line in files["events.jsonl"].decode().splitlines()]
    events = [_chain_event(line) for line in lines]
    points = [
        Checkpoint(p["seq"], p["hash"], p["signature"])
        for p in json.loads(files["checkpoints.json"])
    ]
    problems, head = check_chain(
        events, points, public, first_seq=events[0].seq, first_prev=events[0].prev_hash
    )
    report.problems += problems
    if not problems:
        ticket_id = int(json.loads(files["ticket.json"])["id"])
        recordings = {Path(n).name for n in files if n.startswith("recordings/")}
        report.problems += _completeness(lines, ticket_id, recordings)
    report.events, report.checkpoints, report.head = len(events), len(points), head
    if not problems and not any(p.seq == events[-1].seq and p.hash == head for p in points):
        report.problems.append("no valid signature covers the last event of the bundle")
    recorded = {
        Path(str(line["details"].get("path"))).name: line["details"]
        for line in lines
        if line.get("action") == "recording.closed" and "details" in line
    }
    for name, data in files.items():
        if not name.startswith("recordings/"):
            continue
        entry = recorded.get(Path(name).name)
        if entry is None:
            report.problems.append(f"{name}: no recording.closed event names it")
        elif hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            report.problems.append(f"{name}: its SHA-256 does not match the audit chain")
        report.recordings += 1
    report.key_id = key_id(public)
    return report
