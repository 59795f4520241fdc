"""The broker's side of requests from the command line (``session end``, ``session
handoff``, ``account disable``): the command line writes an ``admin_request`` row and waits
(broker.ops.control.ViaBroker); the broker polls, acts on its live sessions through
:class:`~broker.ops.control.LiveControl`, and writes the answer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from sqlalchemy import select, update

from broker.background import every
from broker.errors import BrokerError, Invalid
from broker.ops.control import LiveControl
from broker.store.db import Store
from broker.store.models import AdminRequest, utcnow

log = structlog.get_logger(__name__)

POLL_INTERVAL = 0.3
#: requests older than this are not acted on (the command line has given up on them)
STALE_AFTER = dt.timedelta(seconds=30)


class AdminWorker:
    def __init__(self, store: Store, control: LiveControl) -> None:
        self.store = store
        self.control = control

    async def run(self) -> None:
        """Poll for pending requests until cancelled."""
        await every(POLL_INTERVAL, self.poll_once, store=self.store, failure="admin_poll_failed")

    async def poll_once(self) -> None:
        async with self.store.read() as db:
            pending = (
                (
                    await db.execute(
                        select(AdminRequest)
                        .where(AdminRequest.state == "pending")
                        .order_by(AdminRequest.id)
                    )
                )
                .scalars()
                .all()
            )
        for request in pending:
            await self._serve(request)

    async def _serve(self, request: AdminRequest) -> None:
        state, result = "done", {}
        if utcnow() - request.requested_at > STALE_AFTER:
            state, result = "expired", {"error": "the request waited too long"}
        else:
            try:
                result = await self._act(request.op, request.args)
            except BrokerError as exc:
                state, result = "failed", {"error": exc.message}
        async with self.store.begin() as db:
            await db.execute(
                update(AdminRequest)
                .where(AdminRequest.id == request.id, AdminRequest.state == "pending")
                .values(state=state, result=result, done_at=utcnow())
            )

    async def _act(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        actor = str(args.get("actor", "admin"))[:100]
        if op == "end_logins":
            account = str(args.get("account", ""))[:64]
            return {"account": account, "ssh_logins_ended": await self.control.end_logins(account)}
        if op == "end":
            return await self.control.end(str(args.get("session", "")), actor)
        if op == "handoff":
            return await self.control.handoff(
                str(args.get("session", "")), str(args.get("to", "")), actor
            )
        raise Invalid(f"unknown request {op!r}")
