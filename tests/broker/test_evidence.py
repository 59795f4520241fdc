"""The tamper-evident audit chain and its signed checkpoints, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import delete, update

from broker.evidence.checkpoints import Checkpointer
from broker.evidence.signing import Signer
from broker.evidence.verify import verify_store
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import AuditCheckpoint, AuditEvent


async def _events(store: Store, n: int) -> None:
    async with store.begin() as db:
        ticket = await q.create_ticket(db, title="t", severity=3)
    for i in range(n):
        async with store.begin() as db:
            await q.append_audit(
                db,
                action="test.event",
                actor="tester",
                ticket_id=ticket.id,
                details={"i": i, "text": "héllo"},
            )


async def _verify(store: Store, signer: Signer, tmp_path: Path) -> str:
    return (await verify_store(store, signer.public, tmp_path)).summary()


async def test_untouched_chain_verifies(store: Store, tmp_path: Path) -> None:
    signer = Signer.load(tmp_path)
    await _events(store, 5)
    point = await Checkpointer(store, signer).checkpoint()
    assert point is not None and point.seq == 6  # ticket.created, then five events
    report = await verify_store(store, signer.public, tmp_path)
    assert report.ok and report.events == 6 and report.checkpoints == 1
    assert report.summary().startswith("OK: 6 events chained")
    assert await Checkpointer(store, signer).checkpoint() is None  # nothing new to sign


async def test_changed_event_is_named(store: Store, tmp_path: Path) -> None:
    signer = Signer.load(tmp_path)
    await _events(store, 5)
    async with store.begin() as db:
        await db.execute(
            update(AuditEvent).where(AuditEvent.seq == 3).values(details={"i": 99, "text": "héllo"})
        )
    assert await _verify(store, signer, tmp_path) == (
        "BROKEN: event 3 (test.event): its content does not match its hash "
        "(it was changed after it was written)"
    )


async def test_deleted_event_is_named(store: Store, tmp_path: Path) -> None:
    signer = Signer.load(tmp_path)
    await _events(store, 5)
    async with store.begin() as db:
        await db.execute(delete(AuditEvent).where(AuditEvent.seq == 4))
    assert await _verify(store, signer, tmp_path) == (
        "BROKEN: event 4 is missing (the chain jumps to 5)"
    )


async def test_reordered_events_are_named(store: Store, tmp_path: Path) -> None:
    signer = Signer.load(tmp_path)
    await _events(store, 5)
    async with store.begin() as db:  # swap the contents (and hashes) of events 2 and 3
        rows = {r.seq: r for r in await q.list_audit(db)}
        two, three = rows[2], rows[3]
        values = [
            dict(details=r.details, prev_hash=r.prev_hash, hash=r.hash, time=r.time)
            for r in (two, three)
        ]
        await db.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(hash="x" * 64))
        await db.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(**values[0]))
        await db.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(**values[1]))
    assert (await _verify(store, signer, tmp_path)).startswith("BROKEN: event 2 (test.event): ")


async def test_swapped_signature_is_named(store: Store, tmp_path: Path) -> None:
    signer = Signer.load(tmp_path)
    checkpointer = Checkpointer(store, signer)
    await _events(store, 3)
    first = await checkpointer.checkpoint()
    await _events(store, 3)
    second = await checkpointer.checkpoint()
    assert first is not None and second is not None
    async with store.begin() as db:
        await db.execute(
            update(AuditCheckpoint)
            .where(AuditCheckpoint.seq == second.seq)
            .values(signature=first.signature)
        )
    assert await _verify(store, signer, tmp_path) == (
        f"BROKEN: checkpoint at event {second.seq}: the signature is not valid"
    )
    other = Signer.load(tmp_path / "other")  # and a checkpoint by a key that is not ours
    assert not (await verify_store(store, other.public, tmp_path)).ok


async def test_fifty_writers_at_once_make_one_chain(store: Store, tmp_path: Path) -> None:
    signer = Signer.load(tmp_path)
    async with store.begin() as db:
        ticket = await q.create_ticket(db, title="t", severity=3)

    async def writer(n: int) -> None:
        for i in range(4):
            async with store.begin() as db:
                await q.append_audit(
                    db,
                    action="test.concurrent",
                    actor=f"w{n}",
                    ticket_id=ticket.id,
                    details={"i": i},
                )

    await asyncio.gather(*(writer(n) for n in range(50)))
    report = await verify_store(store, signer.public, tmp_path)
    assert report.ok, report.problems
    assert report.events == 201


async def test_events_removed_from_the_end_are_named(store: Store, tmp_path: Path) -> None:
    """A checkpoint past the chain's end means its tail was cut off."""
    signer = Signer.load(tmp_path)
    await _events(store, 5)
    await Checkpointer(store, signer).checkpoint()
    async with store.begin() as db:
        await db.execute(delete(AuditEvent).where(AuditEvent.seq >= 5))
    assert await _verify(store, signer, tmp_path) == (
        "BROKEN: checkpoint at event 6 is past the last event (4): events were removed from the end"
    )
