"""What the SSH edge needs from the rest of the broker, passed explicitly (no globals)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from assist_protocol.constants import CIPHERS
from broker.config import Settings
from broker.keys import BrokerKeys
from broker.metrics import Metrics
from broker.session.manager import SessionManager
from broker.session.ratelimit import Attempt, RateLimiter
from broker.sinks.dispatch import Dispatcher
from broker.store.db import Store
from broker.transport.links import LinkWaiters
from broker.tunnels import EngineerLogins


async def _bound(coro: Coroutine[Any, Any, Any], values: Mapping[str, str]) -> Any:
    with structlog.contextvars.bound_contextvars(**values):
        return await coro


@dataclass(frozen=True)
class Context:
    settings: Settings
    keys: BrokerKeys
    store: Store
    manager: SessionManager
    dispatcher: Dispatcher
    metrics: Metrics | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    #: reverse links the broker asked helpers for, waiting for their sockets
    links: LinkWaiters = field(default_factory=LinkWaiters)
    #: engineers logged in on this node (an account disabled ends its logins)
    engineers: EngineerLogins = field(default_factory=EngineerLogins)
    #: failed SSH logins audited one by one per network, then only counted (a flood of
    #: connections offering unknown keys must not flood the chain)
    auth_failures: RateLimiter = field(
        default_factory=lambda: RateLimiter(per_source=5, overall=200, window=300.0)
    )

    def audit_auth_failure(self, peer: str) -> bool:
        """Whether this failed login gets its own audit event (else it is counted for the
        network's ``access.rate_limited`` summary)."""
        decided = self.auth_failures.try_reserve(peer, "ssh_auth_failed")
        if isinstance(decided, Attempt):
            decided.settle()
            return True
        return decided is None

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        name: str | None = None,
        log_context: Mapping[str, str] | None = None,
    ) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, held until it ends (shutdown waits for these).

        ``log_context`` (peer, ticket, session ...) is bound to structlog's context variables
        for the task, so every log line it writes carries them."""
        if log_context:
            coro = _bound(coro, log_context)
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def drain(self, timeout: float) -> set[asyncio.Task[Any]]:
        """Wait until every relayed channel has closed and what the background ran for it
        (its audit and recording rows) has ended; return what still runs at ``timeout``.

        A channel closes a moment after its session ended (the engineer's client answers, or
        the broker hangs up on it), so the tasks are looked at again until none are left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.tasks or self.engineers.relaying():
            left = deadline - loop.time()
            if left <= 0:
                break
            if self.tasks:
                await asyncio.wait(set(self.tasks), timeout=left)
            else:  # a channel's close is on its way; nothing to wait on but time
                await asyncio.sleep(min(0.05, left))
        return set(self.tasks)


__all__ = ["CIPHERS", "Context"]
