"""The tamper-evident audit chain and its signed checkpoints, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update

from broker.evidence.checkpoints import ChainBroken, Checkpointer
from broker.evidence.ckptlog import LOG_FILE, TAIL, CheckpointLog, Signed
from broker.evidence.signing import Signer
from broker.evidence.verify import verify_store
from broker.keys import load_seal_key
from broker.store import chain
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import AuditCheckpoint, AuditEvent, utcnow


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
            .values(sshsig=first.sshsig)
        )
    assert await _verify(store, signer, tmp_path) == (
        f"BROKEN: checkpoint at event {second.seq}: the signature is not valid: "
        "the signature does not match (the signed text was changed)"
    )
    other = Signer.load(tmp_path / "other")  # and a checkpoint by a key that is not ours
    report = await verify_store(store, other.public, tmp_path)
    assert not report.ok and "not by the trusted key" in report.problems[0]


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


# --- an attacker with write access to the database (not to the data dir) ---------------------


async def _recompute_from(store: Store, seq: int) -> None:
    """What a careful forger does after changing event ``seq``: every hash from there on is
    recomputed, so that the chain itself is consistent again."""
    async with store.begin() as db:
        rows = [r for r in await q.list_audit(db) if r.seq >= seq]
        prev = (await db.get_one(AuditEvent, seq - 1)).hash if seq > 1 else chain.GENESIS
        for row in rows:
            new = chain.link(prev, row.ticket_id, chain.row_digest(row))
            await db.execute(
                update(AuditEvent).where(AuditEvent.seq == row.seq).values(prev_hash=prev, hash=new)
            )
            prev = new


async def test_deleted_tail_and_its_checkpoint_are_caught(store: Store, tmp_path: Path) -> None:
    """The last events and the checkpoint that signed them go: the chain that is left is
    consistent, but the checkpoint log outside the database still names the lost checkpoint."""
    signer = Signer.load(tmp_path)
    checkpointer = Checkpointer(store, signer)
    await _events(store, 3)
    await checkpointer.checkpoint()
    await _events(store, 3)
    second = await checkpointer.checkpoint()
    assert second is not None
    async with store.begin() as db:
        await db.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq == second.seq))
        await db.execute(delete(AuditEvent).where(AuditEvent.seq > 4))
    assert await _verify(store, signer, tmp_path) == (
        f"BROKEN: checkpoint at event {second.seq} is in the checkpoint log but not in the "
        "database: checkpoints or events were deleted or rewritten"
    )


async def test_rewritten_command_with_recomputed_chain_is_caught(
    store: Store, tmp_path: Path
) -> None:
    """A command is rewritten, the chain recomputed and the later checkpoints dropped; the
    broker then refuses to sign the forged head (an alarm, once), and verify names the loss."""
    signer = Signer.load(tmp_path)
    alarms: list[str] = []
    checkpointer = Checkpointer(store, signer, on_alarm=alarms.append)
    await _events(store, 3)
    first = await checkpointer.checkpoint()
    await _events(store, 3)
    await checkpointer.checkpoint()
    assert first is not None
    async with store.begin() as db:
        await db.execute(
            update(AuditEvent)
            .where(AuditEvent.seq == 7)
            .values(details={"i": 1, "text": "rm -rf / was never typed"})
        )
        await db.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq > first.seq))
    await _recompute_from(store, 7)
    assert (await _verify(store, signer, tmp_path)).startswith(
        "BROKEN: checkpoint at event 8 is in the checkpoint log but not in the database"
    )
    for _ in range(2):
        with pytest.raises(ChainBroken, match="signed by the last logged checkpoint is gone"):
            await checkpointer.checkpoint()
    async with store.read() as db:
        points = (await db.execute(select(AuditCheckpoint))).scalars().all()
        audit = await q.list_audit(db)
    assert [p.seq for p in points] == [first.seq]  # nothing new was signed
    assert len(alarms) == 2
    assert [e.action for e in audit].count("audit.alarm") == 1  # one event per break
    report = await verify_store(store, signer.public, tmp_path)
    assert not report.ok


async def test_every_checkpoint_deleted_is_caught(store: Store, tmp_path: Path) -> None:
    signer = Signer.load(tmp_path)
    await _events(store, 3)
    await Checkpointer(store, signer).checkpoint()
    async with store.begin() as db:
        await db.execute(delete(AuditCheckpoint))
    assert (await _verify(store, signer, tmp_path)).startswith(
        "BROKEN: checkpoint at event 4 is in the checkpoint log but not in the database"
    )


async def test_checkpoint_removed_from_the_middle_is_caught(store: Store, tmp_path: Path) -> None:
    """Checkpoints name the one before them: a gap is visible even without the log."""
    signer = Signer.load(tmp_path)
    checkpointer = Checkpointer(store, signer)
    seqs = []
    for _ in range(3):
        await _events(store, 2)
        point = await checkpointer.checkpoint()
        assert point is not None
        seqs.append(point.seq)
    async with store.begin() as db:
        await db.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq == seqs[1]))
    (tmp_path / LOG_FILE).unlink()  # even with the log gone too
    assert await _verify(store, signer, tmp_path) == (
        f"BROKEN: checkpoint at event {seqs[2]}: it names a checkpoint before it that is not "
        "there (checkpoints were removed)"
    )


async def test_unsigned_tail_fails_once_older_than_the_window(store: Store, tmp_path: Path) -> None:
    """Events without a signed checkpoint pass only while they are younger than the window in
    which the broker signs every new head."""
    signer = Signer.load(tmp_path)
    await _events(store, 2)
    await Checkpointer(store, signer).checkpoint()
    await _events(store, 2)
    now = utcnow()
    fresh = await verify_store(store, signer.public, tmp_path, window=60, now=now)
    assert fresh.ok and fresh.unsigned == 3
    assert fresh.summary().endswith("The newest 3 events are not signed yet (within the window).")
    late = await verify_store(
        store, signer.public, tmp_path, window=60, now=now + dt.timedelta(seconds=61)
    )
    assert late.problems == [
        "events 4 to 6 are not covered by a signed checkpoint; the oldest was written 61 s ago "
        "(the broker signs within 60 s): signed events were removed, or the broker's signing "
        "stopped"
    ]


async def test_no_checkpoint_at_all_fails_after_the_window(store: Store, tmp_path: Path) -> None:
    signer = Signer.load(tmp_path)
    await _events(store, 2)
    later = utcnow() + dt.timedelta(minutes=5)
    report = await verify_store(store, signer.public, tmp_path, now=later)
    assert report.problems[0].startswith("events 1 to 3 are not covered by a signed checkpoint")
    assert report.checkpoints == 0


async def test_checkpoint_verifies_with_ssh_keygen(store: Store, tmp_path: Path) -> None:
    """An outside auditor checks a checkpoint with stock OpenSSH and an allowed_signers file."""
    signer = Signer.load(tmp_path)
    await _events(store, 2)
    point = await Checkpointer(store, signer).checkpoint()
    assert point is not None and point.message and point.sshsig
    (tmp_path / "allowed_signers").write_text(signer.allowed_signers + "\n")
    (tmp_path / "checkpoint.txt").write_text(point.message)
    (tmp_path / "checkpoint.txt.sig").write_text(point.sshsig)

    def keygen(message: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                "ssh-keygen",
                "-Y",
                "verify",
                "-f",
                str(tmp_path / "allowed_signers"),
                "-I",
                "assist-broker-audit",
                "-n",
                "assist-broker-checkpoint",
                "-s",
                str(tmp_path / "checkpoint.txt.sig"),
            ],
            input=message.encode(),
            capture_output=True,
            check=False,
        )

    good = keygen(point.message)
    assert good.returncode == 0, good.stderr
    assert b'Good "assist-broker-checkpoint" signature for assist-broker-audit' in good.stdout
    forged = keygen(point.message.replace(f"seq={point.seq}", f"seq={point.seq + 1}"))
    assert forged.returncode != 0


async def test_checkpoint_log_is_append_only_json(store: Store, tmp_path: Path) -> None:
    signer = Signer.load(tmp_path)
    checkpointer = Checkpointer(store, signer)
    await _events(store, 1)
    first = await checkpointer.checkpoint()
    await _events(store, 1)
    second = await checkpointer.checkpoint()
    assert first is not None and second is not None
    logged, problems = CheckpointLog.of(tmp_path).read()
    assert problems == []
    assert [(p.seq, p.digest) for p in logged] == [
        (first.seq, first.digest),
        (second.seq, second.digest),
    ]
    assert logged[1].prev == first.digest and logged[0].prev == chain.GENESIS
    assert (tmp_path / LOG_FILE).stat().st_mode & 0o777 == 0o600


def test_the_newest_checkpoint_is_read_from_the_end_of_a_long_log(tmp_path: Path) -> None:
    """The log grows by a line every few seconds for as long as the broker runs: the newest
    entry is found from the file's end (and a line still being written is left out)."""
    log = CheckpointLog.of(tmp_path)
    template = Signed(0, "h" * 64, chain.GENESIS, "d" * 64, "m" * 400, "s" * 300, "SHA256:k")
    with log.path.open("w") as out:
        for seq in range(1, 5001):
            out.write(dataclasses.replace(template, seq=seq, digest=f"{seq:064d}").line())
        out.write('{"seq": 9999, "hash": "cut off mid-wri')
    assert log.path.stat().st_size > 20 * TAIL
    newest = log.last()
    assert newest is not None and newest.seq == 5000
    assert log.last() is newest  # unchanged file: not read again
    entries = log.entries(0)
    assert len(entries) == 5000 and entries[-1][1] < log.path.stat().st_size


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("seal", "é" * 64, "is malformed"),
        ("details", "[]", "does not match its hash"),
        ("time", "garbage", "cannot be read"),
    ],
)
async def test_rows_written_by_hand_are_named_not_crashes(
    db_url: str, tmp_path: Path, column: str, value: str, expected: str
) -> None:
    """A row no broker could have written gets a verdict from verify and an alarm from the
    broker, never a traceback."""
    if not db_url.startswith("sqlite") and column == "time":
        pytest.skip("PostgreSQL itself refuses a time that is not a time")
    store = Store(db_url)
    await store.upgrade()
    store.seal_key = load_seal_key(tmp_path)
    try:
        signer = Signer.load(tmp_path)
        alarms: list[str] = []
        checkpointer = Checkpointer(store, signer, on_alarm=alarms.append)
        await _events(store, 2)
        await checkpointer.checkpoint()
        await _events(store, 1)
        raw = value if column != "details" else "[]"
        async with store.begin() as db:
            if db.get_bind().dialect.name == "postgresql" and column == "details":
                await db.execute(text("UPDATE audit_event SET details = '[]'::json WHERE seq = 4"))
            else:
                await db.execute(
                    text(f"UPDATE audit_event SET {column} = :v WHERE seq = 4"), {"v": raw}
                )
        report = await verify_store(store, signer.public, tmp_path)
        assert report.problems and expected in report.problems[0], report.problems
        with pytest.raises(ChainBroken):
            await checkpointer.checkpoint()
        assert alarms and (expected in alarms[0] or "gone or changed" in alarms[0]), alarms
    finally:
        await store.close()
