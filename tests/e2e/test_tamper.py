"""Evidence against someone who can write the broker's database (but not its data dir): the
running broker keeps every head signed, copies each checkpoint to an outside place, and when
the history is rewritten it raises an alarm instead of signing; verify and export refuse."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import delete, func, select, text, update

from broker.evidence.checkpoints import ChainBroken
from broker.evidence.ckptlog import CheckpointLog
from broker.evidence.signing import Signer
from broker.evidence.sshsig import BUNDLE_NAMESPACE
from broker.store import chain
from broker.store import queries as q
from broker.store.models import AuditCheckpoint, AuditEvent
from tests.e2e.test_cli_flow import run
from tests.e2e.test_handoff import cli
from tests.harness import BrokerHarness


class Collector:
    """An operator's outside place for checkpoint copies: a tiny HTTP endpoint."""

    def __init__(self) -> None:
        self.received: list[dict[str, object]] = []
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.changed.set()
        return web.Response(status=204)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(20):
            while len(self.received) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    found = Collector()
    app = web.Application()
    app.router.add_post("/checkpoints", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield found, f"http://127.0.0.1:{port}/checkpoints"
    await runner.cleanup()


async def _signed_head(harness: BrokerHarness) -> int:
    """Wait until the broker has signed the current head; return its seq."""
    async with asyncio.timeout(20):
        while True:
            async with harness.store.read() as db:
                head = await db.scalar(select(func.max(AuditEvent.seq)))
                point = await db.scalar(select(func.max(AuditCheckpoint.seq)))
            if head and point == head:
                return int(head)
            await asyncio.sleep(0.05)


async def test_running_broker_signs_copies_and_refuses_forged_history(
    tmp_path: Path, collector: tuple[Collector, str]
) -> None:
    found, url = collector
    harness = await BrokerHarness(
        tmp_path, checkpoint_interval=0.2, checkpoint_post_url=url
    ).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        await harness.connected_helper(ticket)
        assert (await harness.ssh(key, ticket, "echo first")).status == 0
        await harness.wait_audit(ticket, "recording.closed")
        await _signed_head(harness)  # without any session ending: the loop signs the head

        # Every checkpoint went to the outside place too, as the log has it.
        logged, _ = CheckpointLog.of(harness.settings.data_dir).read()
        await found.wait_for(len(logged))
        assert [p["digest"] for p in found.received[: len(logged)]] == [p.digest for p in logged]

        # The forger rewrites the command, recomputes the chain and drops the checkpoints
        # that signed it.
        async with harness.store.begin() as db:
            opened = (
                await db.execute(select(AuditEvent).where(AuditEvent.action == "channel.opened"))
            ).scalar_one()
            opened.details = {**opened.details, "command": "echo harmless"}
            await db.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq >= opened.seq))
            rows = [r for r in await q.list_audit(db) if r.seq >= opened.seq]
            prev = (await db.get_one(AuditEvent, opened.seq - 1)).hash
            for row in rows:
                new = chain.link(prev, row.ticket_id, chain.row_digest(row))
                await db.execute(
                    update(AuditEvent)
                    .where(AuditEvent.seq == row.seq)
                    .values(prev_hash=prev, hash=new)
                )
                prev = new
        async with harness.store.read() as db:
            signed_before = len((await db.execute(select(AuditCheckpoint))).scalars().all())

        # The session goes on; the broker will not sign the forged head.
        assert (await harness.ssh(key, ticket, "echo second")).status == 0
        alarm = await harness.wait_audit(None, "audit.alarm", timeout=20)
        assert "signed by the last logged checkpoint is gone or changed" in str(alarm["problem"])
        async with harness.store.read() as db:
            points = (await db.execute(select(AuditCheckpoint))).scalars().all()
        assert len(points) == signed_before

        verify = await cli(harness, "audit", "verify")
        assert verify.status == 1
        assert b"its seal does not match: it was not written by this broker" in verify.stderr
        export = await cli(harness, "audit", "export", "--ticket", ticket, "--out", "x.tar")
        assert export.status != 0 and b"does not verify, so it was not signed" in export.stderr
        metrics = harness.broker.metrics
        assert metrics is not None
        assert b"assist_audit_alarms_total" in metrics.exposition()
        assert metrics.audit_alarms._value.get() >= 1  # type: ignore[attr-defined]
    finally:
        await harness.stop()


@pytest.mark.smoke
async def test_command_line_signs_what_it_wrote(tmp_path: Path) -> None:
    """An admin's command writes an event and signs the head itself: no broker needs to run
    for the head to be signed."""
    status, _, err = await run(
        "ticket", "create", "--title", "Printer", "--severity", "3", cwd=tmp_path
    )
    assert status == 0, err
    logged, _ = CheckpointLog.of(tmp_path / "var").read()
    assert [p.seq for p in logged] == [1], "the command line signed nothing"
    status, out, err = await run("audit", "verify", "--json", cwd=tmp_path)
    assert status == 0, err
    assert json.loads(out)["checkpoints"] == 1


async def test_an_event_appended_by_a_database_writer_is_never_signed(
    harness: BrokerHarness,
) -> None:
    """The forger appends a well-chained event (the chain needs no key): it has no seal, so the
    broker raises an alarm instead of signing it, and verify names it."""
    ticket = await harness.ticket()
    await _signed_head(harness)
    async with harness.store.begin() as db:
        head = (await db.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()))).scalars()
        last = next(iter(head))
        forged = AuditEvent(
            seq=last.seq + 1,
            time=last.time,
            ticket_id=last.ticket_id,
            session_id=None,
            actor="customer",
            action="session.consented",
            details={"granted_scope": "shell,exec,sftp"},
            prev_hash=last.hash,
            hash="",
        )
        forged.hash = chain.link(last.hash, forged.ticket_id, chain.row_digest(forged))
        db.add(forged)
    async with harness.store.begin() as db:  # the broker writes on after it
        await q.append_audit(db, action="test.after", actor="broker", ticket_id=None)
    alarm = await harness.wait_audit(None, "audit.alarm", timeout=20)
    assert "(session.consented) carries no seal" in str(alarm["problem"])
    verify = await cli(harness, "audit", "verify", "--ticket", ticket)
    assert verify.status == 1 and b"carries no seal" in verify.stderr


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def any_harness(backend_url: str | None, tmp_path: Path) -> AsyncIterator[BrokerHarness]:
    harness = await BrokerHarness(tmp_path, database_url=backend_url).start()
    yield harness
    await harness.stop()


DROP_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER hide BEFORE INSERT ON audit_event WHEN NEW.action = 'channel.opened' "
        "BEGIN SELECT RAISE(IGNORE); END"
    ],
    "postgresql": [
        "CREATE FUNCTION hide() RETURNS trigger AS $$ BEGIN IF NEW.action = 'channel.opened' "
        "THEN RETURN NULL; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER hide BEFORE INSERT ON audit_event FOR EACH ROW EXECUTE FUNCTION hide()",
    ],
}


async def test_an_event_the_database_drops_stops_what_it_records(
    any_harness: BrokerHarness,
) -> None:
    """A trigger swallows every channel.opened: the command must not run unrecorded."""
    harness = any_harness
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    async with harness.store.begin() as db:
        for statement in DROP_TRIGGER[db.get_bind().dialect.name]:
            await db.execute(text(statement))
    result = await harness.ssh(key, ticket, "echo EVIL-DEED")
    assert result.status == 255 and b"EVIL-DEED" not in result.stdout
    assert b"the session was stopped to protect the customer" in result.stderr


async def test_unsigned_events_deleted_before_their_checkpoint_raise_an_alarm(
    tmp_path: Path,
) -> None:
    """Within the moments before a checkpoint, the newest events are deleted: the chain that
    is left is consistent, but the broker remembers what it wrote and will not sign."""
    harness = await BrokerHarness(tmp_path, checkpoint_interval=3600.0).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        await harness.connected_helper(ticket)
        checkpointer = harness.broker.checkpointer
        assert checkpointer is not None
        signed = await checkpointer.checkpoint()
        assert signed is not None
        assert (await harness.ssh(key, ticket, "echo evil")).status == 0
        await harness.wait_audit(ticket, "channel.closed")
        async with harness.store.begin() as db:
            await db.execute(delete(AuditEvent).where(AuditEvent.seq > signed.seq))
        with pytest.raises(ChainBroken, match="written by this broker and not yet signed, is gone"):
            await checkpointer.checkpoint()
        alarm = await harness.wait_audit(None, "audit.alarm")
        assert "is gone" in str(alarm["problem"])
    finally:
        await harness.stop()


async def test_changed_tables_change_neither_bundles_nor_retention(harness: BrokerHarness) -> None:
    """The ticket, session and account tables are not chained: rewriting them changes what a
    bundle says about the ticket not at all, and makes no recording go early."""
    ticket = await harness.ticket(title="Mail queue stuck", severity=2)
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket)
    assert (await harness.ssh(key, ticket, "echo the-real-work")).status == 0
    helper.interrupt()
    await helper.finish()
    await harness.wait_audit(ticket, "recording.closed")
    async with harness.store.begin() as db:
        await db.execute(
            text(
                "UPDATE session SET granted_scope='observe', customer_addr='10.9.9.9', "
                "end_reason='customer', ended_at='2020-01-01 00:00:00.000000'"
            )
        )
        await db.execute(
            text("UPDATE ticket SET title='Printer toner', severity=4, customer_email='x@y.z'")
        )
        await db.execute(text("UPDATE account SET name='bob' WHERE name='alice'"))
    bundle = harness.tmp / "b.tar"
    assert (
        await cli(harness, "audit", "export", "--ticket", ticket, "--out", str(bundle))
    ).status == 0
    with tarfile.open(bundle) as tar:
        said = json.loads(tar.extractfile("ticket.json").read())  # type: ignore[union-attr]
    assert (said["title"], said["severity"], said["customer_email"]) == (
        "Mail queue stuck",
        2,
        "ops@example.com",
    )
    (session,) = said["sessions"]
    assert session["engineer"] == "alice" and session["granted_scope"] == "shell,exec"
    assert session["customer_addr"] == "127.0.0.1" and session["end_reason"] == "customer"

    (harness.settings.data_dir / "broker.toml").write_text('[retention]\n"4" = 90\n')
    pruned = await cli(harness, "audit", "prune")
    assert pruned.status == 0 and b"Deleted 0 recordings" in pruned.stdout


async def test_a_ticket_json_that_differs_from_the_chain_fails(harness: BrokerHarness) -> None:
    """Even signed with the broker's own key, ticket.json must say what events.jsonl says."""
    ticket = await harness.ticket()
    bundle = harness.tmp / "b.tar"
    assert (
        await cli(harness, "audit", "export", "--ticket", ticket, "--out", str(bundle))
    ).status == 0
    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    said = json.loads(files["ticket.json"])
    files["ticket.json"] = json.dumps({**said, "title": "Something else"}).encode()
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["ticket.json"] = hashlib.sha256(files["ticket.json"]).hexdigest()
    files["manifest.json"] = json.dumps(manifest).encode()
    signer = Signer.load(harness.settings.data_dir)
    files["manifest.json.sig"] = signer.sshsig(files["manifest.json"], BUNDLE_NAMESPACE).encode()
    forged = harness.tmp / "forged.tar"
    with tarfile.open(forged, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pem = harness.tmp / "pub.pem"
    pem.write_text(signer.public_pem)
    result = await cli(harness, "audit", "verify", "--bundle", str(forged), "--pubkey", str(pem))
    assert result.status == 1
    assert b"ticket.json does not say what the chained events say (title)" in result.stderr
