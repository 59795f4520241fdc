from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from broker.logsetup import configure_logging
from broker.store.db import Store
from broker.vocabulary import Action, declare
from tests.harness import BrokerHarness
from tests.ptydriver import PtyDriver

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"

configure_logging("warning", "console")

UNIT_DIRS = ("tests/broker/", "tests/agent_client/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/broker and tests/agent_client are the unit tier (scripts/test --fast
    runs them with the few end-to-end tests marked ``smoke``)."""
    for item in items:
        if any(part in item.nodeid for part in UNIT_DIRS):
            item.add_marker(pytest.mark.unit)


async def _pg_available() -> str | None:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(PG_DSN), 3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL is not available at 127.0.0.1:5432 ({exc!r})"
    await conn.close()
    return None


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    reason = await _pg_available()
    if reason:
        pytest.skip(reason)
    name = f"assist_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    store = Store(db_url)
    await store.upgrade()
    yield store
    await store.close()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[BrokerHarness]:
    """A real broker on 127.0.0.1, port 0, with its own data dir and SQLite database."""
    h = await BrokerHarness(tmp_path).start()
    yield h
    await h.stop()


@pytest.fixture
async def screens() -> AsyncIterator[tuple[PtyDriver, PtyDriver]]:
    """Two terminals (a pty each), closed after the test."""
    first, second = PtyDriver(), PtyDriver()
    yield first, second
    first.close()
    second.close()


# Events that tests write of their own (the broker's code never writes these).
for _name, _fields in (
    ("test.event", ("i", "text")),
    ("test.concurrent", ("i",)),
    ("test.after", ()),
):
    declare(Action(_name, "tester", _fields, "A test's own event."))
