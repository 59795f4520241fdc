"""Export bundles: one ticket's evidence in one tar file, verifiable without the database.

Contents (format ``assist-broker bundle v2``):

- ``ticket.json``: the ticket and its sessions as the chain tells them (broker.evidence.facts:
  the tables are not chained, so nothing in it comes from them);
- ``events.jsonl``: every event from the ticket's first to the signed checkpoint after its last:
  the ticket's own in full, others as ``seq, digest, prev_hash, hash`` only;
- ``checkpoints.json``: the checkpoints in that range (v2: their signed message and SSHSIG);
- ``checkpoint.txt`` and ``checkpoint.txt.sig``: the checkpoint that signs the last event, as a
  file and its SSHSIG, for ``ssh-keygen -Y verify -n assist-broker-checkpoint``;
- ``recordings/...``; ``signer.pub`` (the signing key, for information only: trust comes from
  the key you hold, never from the bundle);
- ``manifest.json``: the format, the ticket's record, the first and last event and the checkpoint
  (seq and hash), the signing key's fingerprint, and the SHA-256 of every other file;
- ``manifest.json.sig``: the manifest's SSHSIG (namespace ``assist-broker-bundle``).

Before it signs a bundle the broker signs the head (broker.evidence.checkpoints), which first
checks the history since its last logged checkpoint: a broker whose database was rewritten
refuses to export rather than vouch for it. Checking is in broker.evidence.bundle_verify.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from broker.errors import Invalid
from broker.evidence import sshsig
from broker.evidence.checkpoints import Checkpointer
from broker.evidence.facts import event_dict, ticket_facts
from broker.evidence.recordings import resolve
from broker.evidence.signing import Signer
from broker.evidence.verify import recordings_in_chain
from broker.store import chain
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import AuditCheckpoint, AuditEvent, utcnow

FORMAT = "assist-broker bundle v2"


def _event_line(row: AuditEvent, full: bool) -> dict[str, Any]:
    base = {
        "seq": row.seq,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
        "ticket_id": row.ticket_id,
    }
    if not full:
        return {**base, "digest": chain.row_digest(row)}
    return {
        **base,
        "time": row.time.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "session_id": row.session_id,
        "actor": row.actor,
        "action": row.action,
        "details": row.details,
    }


def _checkpoint_json(p: AuditCheckpoint) -> dict[str, Any]:
    entry: dict[str, Any] = {"seq": p.seq, "hash": p.hash, "key_id": p.key_id}
    if p.message is not None:
        entry.update(message=p.message, sshsig=p.sshsig)
    else:
        entry["signature"] = p.signature
    return entry


async def _signed_range(
    store: Store, checkpointer: Checkpointer, ticket_id: int
) -> tuple[list[int], AuditCheckpoint]:
    """The ticket's event numbers and the v2 checkpoint that signs its last one (signing the
    head first, after the history check, if none does yet)."""
    for attempt in range(3):
        # Raises ChainBroken rather than sign a forged history. Signs again at the same head
        # when only an older (v1) checkpoint covers it.
        await checkpointer.checkpoint(only_if_behind_by=1 if attempt == 0 else 0)
        async with store.read() as db:
            own = list(
                (
                    await db.execute(
                        select(AuditEvent.seq)
                        .where(AuditEvent.ticket_id == ticket_id)
                        .order_by(AuditEvent.seq)
                    )
                ).scalars()
            )
            if not own:
                raise Invalid("the ticket has no audit events to export")
            point = (
                await db.execute(
                    select(AuditCheckpoint)
                    .where(AuditCheckpoint.seq >= own[-1], AuditCheckpoint.message.is_not(None))
                    .order_by(AuditCheckpoint.seq, AuditCheckpoint.id)
                    .limit(1)
                )
            ).scalar()
        if point is not None:
            return own, point
    raise Invalid("the ticket's newest events could not be signed; try again")


async def export_bundle(
    store: Store,
    signer: Signer,
    data_dir: Path,
    ticket_key: str,
    out: Path,
    *,
    recordings: Path | None = None,
    checkpointer: Checkpointer | None = None,
) -> dict[str, Any]:
    root = recordings or data_dir / "recordings"
    checkpointer = checkpointer or Checkpointer(store, signer)
    async with store.read() as db:
        ticket = await q.get_ticket(db, ticket_key)
    own, point = await _signed_range(store, checkpointer, ticket.id)
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
                    .order_by(AuditCheckpoint.seq, AuditCheckpoint.id)
                )
            )
            .scalars()
            .all()
        )
    own_events = [event_dict(r) for r in rows if r.ticket_id == ticket.id]
    facts = ticket_facts(ticket.id, own_events)  # from the chain only, never from the tables
    files: dict[str, bytes] = {
        "ticket.json": json.dumps(facts, indent=2, ensure_ascii=False).encode(),
        "events.jsonl": "".join(
            json.dumps(_event_line(r, r.ticket_id == ticket.id), sort_keys=True, ensure_ascii=False)
            + "\n"
            for r in rows
        ).encode(),
        "checkpoints.json": json.dumps([_checkpoint_json(p) for p in points], indent=2).encode(),
        "checkpoint.txt": (point.message or "").encode(),
        "checkpoint.txt.sig": (point.sshsig or "").encode(),
        "signer.pub": (signer.openssh_public + " assist-broker-audit\n").encode(),
    }
    recorded = recordings_in_chain(r for r in rows if r.ticket_id == ticket.id)
    files.update(await asyncio.to_thread(_recordings, data_dir, root, list(recorded)))
    manifest = {
        "format": FORMAT,
        "ticket": {"id": ticket.id, "key": ticket.key},
        "events": {
            "first": {"seq": rows[0].seq, "hash": rows[0].hash},
            "last": {"seq": rows[-1].seq, "hash": rows[-1].hash},
        },
        "checkpoint": {"seq": point.seq, "hash": point.hash, "digest": point.digest},
        "key_id": signer.key_id,
        "exported_at": utcnow().isoformat(timespec="seconds"),
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    files["manifest.json"] = json.dumps(manifest, indent=2).encode()
    files["manifest.json.sig"] = signer.sshsig(
        files["manifest.json"], sshsig.BUNDLE_NAMESPACE
    ).encode()
    await asyncio.to_thread(_write_tar, out, files, int(point.created_at.timestamp()))
    return {
        "ticket": ticket.key,
        "out": str(out),
        "events": len(rows),
        "own_events": len(own),
        "recordings": len(recorded),
        "key_id": signer.key_id,
    }


def _write_tar(out: Path, files: dict[str, bytes], mtime: int) -> None:
    with tarfile.open(out, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, mtime
            tar.addfile(info, io.BytesIO(data))


def _recordings(data_dir: Path, root: Path, paths: Sequence[str] | Any) -> dict[str, bytes]:
    """The recordings the chain names, read only from inside the recordings folder (a path
    pointing elsewhere is left out, and verification then names it as missing)."""
    found: dict[str, bytes] = {}
    for path in paths:
        file = resolve(data_dir, root, str(path))
        if file is not None and file.is_file():
            found[f"recordings/{file.name}"] = file.read_bytes()
    return found
