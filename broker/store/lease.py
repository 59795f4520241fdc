"""One broker per data dir, and one per node name on a database: taken before any recovery.

A second ``serve`` on the same data dir used to fail only when binding its port, after it had
marked every live session of the first broker ``interrupted``. Now a broker holds

- an exclusive ``flock`` on ``DATA_DIR/broker.lock`` (released by the kernel when the process
  dies, however it dies), holding its pid; and
- a lease row in ``broker_node`` for its node name, renewed while it runs: two data dirs on one
  database (as with PostgreSQL) under the same node name cannot both run. A lease left by a
  process that died on this host is taken over at once; one from another host after it lapses.

Both are taken before recovery, so a refused broker changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import os
import socket
from pathlib import Path

import structlog
from sqlalchemy import select

from broker.background import every
from broker.errors import ConfigError
from broker.store.db import Store
from broker.store.models import BrokerNode, utcnow

log = structlog.get_logger(__name__)

LOCK_FILE = "broker.lock"
#: a node's lease lasts this long unless renewed (every third of it)
LEASE = dt.timedelta(seconds=30)


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise ConfigError(
                f"Another broker is already running with the data dir {self.path.parent}{pid}. "
                "Stop it first, or give this one a data dir of its own (--data-dir)."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the lock goes with the descriptor
            self._fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NodeLease:
    def __init__(self, store: Store, node: str, lease: dt.timedelta = LEASE) -> None:
        self.store = store
        self.node = node
        self.lease = lease
        self.host = socket.gethostname()
        self.pid = os.getpid()

    async def take(self) -> None:
        """Take the node's lease, or :class:`ConfigError` saying who holds it."""
        now = utcnow()
        async with self.store.begin() as db:
            row = (
                await db.execute(
                    select(BrokerNode).where(BrokerNode.name == self.node).with_for_update()
                )
            ).scalar_one_or_none()
            if row is not None and row.lease_until > now and not self._stale(row):
                seen = round((now - row.heartbeat_at).total_seconds())
                raise ConfigError(
                    f"Another broker is already running as node {row.name} (pid {row.pid} on "
                    f"{row.host}, seen {seen} s ago). Stop it first; its lease ends "
                    f"{round((row.lease_until - now).total_seconds())} s after it stops "
                    "renewing it."
                )
            if row is None:
                row = BrokerNode(name=self.node)
                db.add(row)
            row.host, row.pid, row.started_at = self.host, self.pid, now
            row.heartbeat_at, row.lease_until = now, now + self.lease

    def _stale(self, row: BrokerNode) -> bool:
        """Left by a process of this host that is gone."""
        return row.host == self.host and row.pid != self.pid and not _alive(row.pid)

    async def renew(self) -> bool:
        """Extend the lease; ``False`` if another process holds it now."""
        now = utcnow()
        async with self.store.begin() as db:
            row = await db.get(BrokerNode, self.node, with_for_update=True)
            if row is None or row.pid != self.pid or row.host != self.host:
                return False
            row.heartbeat_at, row.lease_until = now, now + self.lease
        return True

    async def _renew_or_say(self) -> None:
        if not await self.renew():
            log.error("node_lease_lost", node=self.node)

    async def run(self) -> None:
        await asyncio.sleep(self.lease.total_seconds() / 3)
        await every(
            self.lease.total_seconds() / 3,
            self._renew_or_say,
            store=self.store,
            failure="node_lease_renew_failed",
        )

    async def give_back(self) -> None:
        async with self.store.begin() as db:
            row = await db.get(BrokerNode, self.node)
            if row is not None and row.pid == self.pid and row.host == self.host:
                await db.delete(row)
