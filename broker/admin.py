"""Requests from the command line to the running broker: ``session end`` and ``session
handoff``. The command line writes an ``admin_request`` row and waits; the broker polls, acts on
its live sessions, and writes the answer."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import structlog
from sqlalchemy import select, update

from broker.background import every
from broker.errors import BrokerError, Invalid, NotFound
from broker.session.manager import SessionManager
from broker.session.model import LiveSession
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import AdminRequest, utcnow
from broker.tunnels import EngineerLogins, TunnelRegistry

log = structlog.get_logger(__name__)

POLL_INTERVAL = 0.3
#: requests older than this are not acted on (the command line has given up on them)
STALE_AFTER = dt.timedelta(seconds=30)


class AdminWorker:
    def __init__(
        self,
        store: Store,
        manager: SessionManager,
        tunnels: TunnelRegistry,
        engineers: EngineerLogins | None = None,
    ) -> None:
        self.store = store
        self.manager = manager
        self.tunnels = tunnels
        self.engineers = engineers if engineers is not None else EngineerLogins()

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

    def _live(self, session_id: str) -> LiveSession:
        prefix = session_id.strip().lower()
        matches = [s for s in self.manager.live() if s.id.startswith(prefix)] if prefix else []
        if len(matches) != 1:
            raise NotFound(
                f"No live session {session_id} on this broker."
                if not matches
                else f"{session_id} matches several sessions; give more of the id."
            )
        return matches[0]

    async def _act(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "end_logins":
            account = str(args.get("account", ""))[:64]
            return {"account": account, "ssh_logins_ended": self.engineers.end_account(account)}
        live = self._live(str(args.get("session", "")))
        if op == "end":
            await self.manager.end(live, "admin")
            return {"session": live.id, "ended": True}
        if op == "handoff":
            return await self._handoff(live, str(args.get("to", "")))
        raise Invalid(f"unknown request {op!r}")

    async def _handoff(self, live: LiveSession, to: str) -> dict[str, Any]:
        async with self.store.read() as db:
            account = await q.get_account(db, to)
            ticket = await q.get_ticket(db, live.ticket_key)
            allowed = await q.may_work_on(db, ticket, account.name)
        if account.role != "engineer" or account.disabled:
            raise Invalid(f"{to} is not an active engineer account")
        if not allowed:
            raise Invalid(f"{live.ticket_key} is not assigned to {to}")
        previous = sorted(live.approved | {live.redemption.engineer_name})
        live.hand_over(account.name)
        removed: list[str] = []
        agent = self.tunnels.find(live)
        if agent is not None and agent.attendance is not None:
            for engineer in {e.account_name for e in agent.attendance.engineers}:
                if engineer and engineer != account.name:
                    await agent.attendance.remove(engineer, reason="handoff")
                    removed.append(engineer)
            agent.notify(
                f"The session was handed over to {account.display_name}; "
                "they will ask you before joining."
            )
        await self.manager.record(
            live,
            "session.handoff",
            "admin",
            {"to": account.name, "previous": previous, "disconnected": sorted(removed)},
        )
        return {"session": live.id, "to": account.name, "disconnected": sorted(removed)}


async def request(
    store: Store, op: str, args: dict[str, Any], timeout: float = 10
) -> dict[str, Any]:
    """From the command line: ask the running broker and wait for its answer."""
    async with store.begin() as db:
        row = AdminRequest(op=op, args=args)
        db.add(row)
        await db.flush()
        request_id = row.id
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        async with store.read() as db:
            row = await db.get_one(AdminRequest, request_id)
            if row.state != "pending":
                if row.state == "done":
                    return dict(row.result or {})
                raise BrokerError(str((row.result or {}).get("error", row.state)))
    async with store.begin() as db:
        await db.execute(
            update(AdminRequest)
            .where(AdminRequest.id == request_id, AdminRequest.state == "pending")
            .values(state="expired", done_at=utcnow())
        )
    raise BrokerError(
        "The broker did not answer. Is `assist-broker serve` running with this data dir "
        "and database?"
    )
