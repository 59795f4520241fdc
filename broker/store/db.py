"""The engine, transactions, and schema upgrades (alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")
#: the newest migration; a test checks that it is alembic's head. A database already there
#: skips alembic altogether (it costs most of a command's start-up time).
HEAD_REVISION = "0010"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the CLI read and write while `serve` runs; busy_timeout makes writers queue
    # instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class WriteTurns:
    """SQLite's one writer in this process, taken in turn; ``urgent`` takers go first.

    Under load each statement of a transaction waits for a turn of the event loop, so a write
    holds the writer for a long time (0.4 s each with 200 sessions relaying bulk, measured)
    and a plain FIFO queued a new customer's code redemption behind hundreds of channel
    audits, past the helper's patience. The customer's way in (redeem, consent, start) is
    urgent; audit events of running sessions wait their turn behind it."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    async def acquire(self, urgent: bool) -> None:
        if not self._held:
            self._held = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._normal
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed the writer just as we were cancelled: pass it on
            else:
                queue.remove(turn)
            raise

    def release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # the writer passes straight to the next taker
                    return
        self._held = False


class Store:
    """Owns the engine. ``async with store.begin() as db:`` is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self.read_engine = self.engine
        if self.is_sqlite:
            # Writes begin IMMEDIATE: the write lock is held from the first statement, so a
            # read-then-write (the audit chain's head, then the new event) cannot interleave
            # with another process's. Reads keep SQLite's deferred transactions.
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "connect", _autocommit_driver)
            event.listen(self.engine.sync_engine, "begin", _begin_immediate)
            self.read_engine = create_async_engine(url)
            event.listen(self.read_engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._reads = async_sessionmaker(self.read_engine, expire_on_commit=False)
        # SQLite allows one writer at a time; serializing writers here avoids "database is locked"
        # retries inside this process (other processes wait on busy_timeout).
        self._write_lock = WriteTurns() if self.is_sqlite else None
        #: told the seconds each audit append took (the broker's metrics)
        self.audit_timer: Callable[[float], None] | None = None
        #: the data dir's secret that seals each audit event (None: events are not sealed)
        self.seal_key: bytes | None = None
        #: audit events this process wrote and no checkpoint has signed yet: seq -> hash
        self.appended: dict[int, str] = {}
        #: store work that must not be cut off (see :meth:`finish`)
        self._finishing: set[asyncio.Task[Any]] = set()

    @asynccontextmanager
    async def begin(self, *, urgent: bool = False) -> AsyncIterator[AsyncSession]:
        """A read-write transaction: committed on success, rolled back on any error.
        ``urgent`` for a customer waiting on it (see :class:`WriteTurns`)."""
        if self._write_lock is None:
            async with self._sessions.begin() as db:
                db.info["audit_timer"] = self.audit_timer
                db.info["seal_key"] = self.seal_key
                yield db
            self._remember(db)
            return
        await self._write_lock.acquire(urgent)
        try:
            async with self._sessions.begin() as db:
                db.info["audit_timer"] = self.audit_timer
                db.info["seal_key"] = self.seal_key
                yield db
            self._remember(db)
        finally:
            self._write_lock.release()

    def _remember(self, db: AsyncSession) -> None:
        """A committed transaction's audit events (seq -> hash), until a checkpoint signs
        them: the checkpointer checks that every one is still there, unchanged, so that
        an event deleted before its first signature is an alarm, not a gap."""
        self.appended.update(db.info.pop("appended", []))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._reads() as db:
            yield db

    async def upgrade(self) -> None:
        """Apply every alembic migration that this database has not seen yet."""
        if await self.revision() == HEAD_REVISION:
            return
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)

    async def revision(self) -> str | None:
        try:
            async with self.read_engine.connect() as conn:
                result = await conn.execute(text("SELECT version_num FROM alembic_version"))
                return result.scalar()
        except DBAPIError:
            return None  # a new database

    async def finish(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` (store steps) to its end even if the caller is cancelled meanwhile.

        A transaction cut off by a cancellation in the middle of a statement can leave the
        SQLite connection in its transaction with nobody owning it: the write lock stays taken
        and every later write fails with "database is locked" (seen when the broker stopped
        while its store watchdog was in its probe). The caller still sees the cancellation;
        :meth:`close` waits for the work to end."""
        task = asyncio.ensure_future(work)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return await asyncio.shield(task)

    async def close(self) -> None:
        if self._finishing:
            await asyncio.wait(list(self._finishing), timeout=15)
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
