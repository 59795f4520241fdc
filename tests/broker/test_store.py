"""The store on SQLite and on PostgreSQL (skipped with the reason where no server runs)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import inspect

from broker.errors import CodeRejected, Invalid, NotFound
from broker.session.consent import MESSAGES, CodeHasher, ConsentCodes
from broker.session.ratelimit import RateLimiter
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import utcnow

KEY = b"k" * 32


async def _setup(store: Store) -> tuple[str, ConsentCodes]:
    async with store.begin() as db:
        ticket = await q.create_ticket(
            db, title="Mail queue stuck", severity=2, customer_email="ops@example.com"
        )
        await q.add_account(db, name="alice", role="engineer", display_name="Alice Smith")
    return ticket.key, ConsentCodes(store, CodeHasher(KEY))


async def test_migrations_build_the_schema_of_the_models(store: Store) -> None:
    """Every table and column the models declare exists after the migrations (and no other)."""
    from broker.store.models import Base

    def columns(conn):  # type: ignore[no-untyped-def]
        inspector = inspect(conn)
        return {
            table: {c["name"] for c in inspector.get_columns(table)}
            for table in inspector.get_table_names()
            if table != "alembic_version"
        }

    async with store.engine.connect() as conn:
        found = await conn.run_sync(columns)
    declared = {name: {c.name for c in t.columns} for name, t in Base.metadata.tables.items()}
    assert found == declared
    await store.upgrade()  # idempotent


async def test_tickets_get_sequential_keys_and_validate(store: Store) -> None:
    async with store.begin() as db:
        first = await q.create_ticket(db, title="One", severity=1)
        second = await q.create_ticket(db, title="Two", severity=4)
    assert (first.key, second.key) == ("T-1", "T-2")
    with pytest.raises(Invalid, match="severity must be 1, 2, 3 or 4"):
        async with store.begin() as db:
            await q.create_ticket(db, title="Bad", severity=5)
    async with store.read() as db:
        assert (await q.get_ticket(db, "t-2")).title == "Two"  # keys are case-insensitive
        with pytest.raises(NotFound, match="There is no ticket T-9"):
            await q.get_ticket(db, "T-9")


async def test_times_come_back_timezone_aware(store: Store) -> None:
    async with store.begin() as db:
        ticket = await q.create_ticket(db, title="One", severity=3)
    async with store.read() as db:
        again = await q.get_ticket(db, ticket.key)
    assert again.created_at.tzinfo is not None
    assert abs(again.created_at - utcnow()) < dt.timedelta(minutes=1)


async def test_code_is_stored_only_as_keyed_hash(store: Store) -> None:
    ticket, codes = await _setup(store)
    code, row = await codes.issue(ticket, "alice", "shell", 600)
    assert row.code_hash == CodeHasher(KEY).hash(code)
    assert code.replace("-", "").encode() not in row.code_hash
    async with store.read() as db:
        events = await q.list_audit(db)
    assert code not in repr([e.details for e in events])


async def test_redeem_refusals_each_have_their_reason(store: Store) -> None:
    ticket, codes = await _setup(store)
    with pytest.raises(CodeRejected) as unknown:
        await codes.redeem("000-000-000", "192.0.2.1")
    assert (unknown.value.code, unknown.value.message) == ("unknown", MESSAGES["unknown"])

    expired, _ = await codes.issue(ticket, "alice", "shell", 0.001)
    await asyncio.sleep(0.01)  # let the 1 ms lifetime pass
    with pytest.raises(CodeRejected) as late:
        await codes.redeem(expired, "192.0.2.1")
    assert late.value.code == "expired"

    good, _ = await codes.issue(ticket, "alice", "shell", 600)
    redemption = await codes.redeem(good.replace("-", " "), "192.0.2.1")
    assert redemption.ticket_key == ticket and redemption.engineer_display == "Alice Smith"
    with pytest.raises(CodeRejected) as again:
        await codes.redeem(good, "192.0.2.1")
    assert again.value.code == "used"

    async with store.read() as db:
        session = await q.get_session(db, redemption.session_id)
        assert session.state == "pending" and session.customer_addr == "192.0.2.1"
        reasons = [
            e.details.get("reason")
            for e in await q.list_audit(db)
            if e.action == "consent.rejected"
        ]
    assert reasons == ["unknown", "expired", "used"]


async def test_twenty_concurrent_redemptions_one_winner(store: Store) -> None:
    ticket, codes = await _setup(store)
    code, _ = await codes.issue(ticket, "alice", "shell,exec", 600)

    async def attempt() -> str:
        try:
            return (await codes.redeem(code, "192.0.2.7")).session_id
        except CodeRejected as exc:
            return exc.code

    results = await asyncio.gather(*(attempt() for _ in range(20)))

    winners = [r for r in results if r not in ("used",)]
    assert len(winners) == 1
    assert results.count("used") == 19
    async with store.read() as db:
        assert len(await q.list_sessions(db)) == 1


async def test_rate_limit_refuses_even_the_right_code(store: Store) -> None:
    ticket, _ = await _setup(store)
    now = [1000.0]
    limiter = RateLimiter(per_source=3, overall=100, window=60, clock=lambda: now[0])
    codes = ConsentCodes(store, CodeHasher(KEY), limiter)
    code, _ = await codes.issue(ticket, "alice", "shell", 600)
    for _ in range(3):
        with pytest.raises(CodeRejected):
            await codes.redeem("999-999-999", "198.51.100.1")
    with pytest.raises(CodeRejected) as limited:
        await codes.redeem(code, "198.51.100.1")
    assert limited.value.code == "rate_limited"
    assert limited.value.message == (
        "Too many wrong codes were tried. Wait 60 seconds, then try again."
    )
    # Another source is not affected, and the code was not used up by the refusal.
    assert (await codes.redeem(code, "198.51.100.2")).ticket_key == ticket


async def test_session_ends_once(store: Store) -> None:
    ticket, codes = await _setup(store)
    code, _ = await codes.issue(ticket, "alice", "shell", 600)
    redemption = await codes.redeem(code, "192.0.2.1")
    async with store.begin() as db:
        assert await q.end_session(db, redemption.session_id, "customer") is True
        assert await q.end_session(db, redemption.session_id, "shutdown") is False
    async with store.read() as db:
        session = await q.get_session(db, redemption.session_id)
    assert session.end_reason == "customer" and session.ended_at is not None


async def test_accounts_and_keys(store: Store) -> None:
    import asyncssh

    from broker.keys import fingerprint_of

    line = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    fp = fingerprint_of(line)
    async with store.begin() as db:
        await q.add_account(db, name="bob", role="engineer", display_name="Bob", keys=[fp])
    async with store.read() as db:
        assert (await q.account_for_key(db, fp[0])).name == "bob"
    with pytest.raises(Invalid, match="already belongs to bob"):
        async with store.begin() as db:
            await q.add_account(db, name="eve", role="engineer", display_name="Eve", keys=[fp])
    async with store.read() as db:
        assert await q.find_account(db, "eve") is None  # nothing half-written
    with pytest.raises(Invalid, match="role must be one of"):
        async with store.begin() as db:
            await q.add_account(db, name="x", role="root", display_name="X")


def test_head_revision_constant_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from broker.store.db import HEAD_REVISION, MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


async def test_upgrade_reaches_head(store: Store) -> None:
    from broker.store.db import HEAD_REVISION

    assert await store.revision() == HEAD_REVISION
