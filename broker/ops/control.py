"""Acting on live sessions and logins: what only the running broker can do.

:class:`LiveControl` does it in the broker's own process (the HTTP API, and the admin requests
it picks up); :class:`ViaBroker` is the command line's way to the same: it writes an
``admin_request`` row and waits for the running broker's answer (broker.admin).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import update

from broker.errors import BrokerError, Invalid, NotFound
from broker.session.core.commands import Record
from broker.session.core.events import HandOver, Person
from broker.store import queries as q
from broker.store.db import Store
from broker.store.models import AdminRequest, utcnow

if TYPE_CHECKING:  # the live side: only the broker's process holds these (the CLI never loads them)
    from broker.session.live import LiveSession
    from broker.session.manager import SessionManager
    from broker.transport.agent_ssh import AgentEdge
    from broker.tunnels import EngineerLogins, TunnelRegistry

NO_BROKER = (
    "The broker did not answer. Is `assist-broker serve` running with this data dir and database?"
)


class Control(Protocol):
    async def end(self, session_id: str, actor: str) -> dict[str, Any]: ...

    async def handoff(self, session_id: str, to: str, actor: str) -> dict[str, Any]: ...

    async def end_logins(self, account: str) -> int | None:
        """SSH logins of ``account`` ended; ``None`` when no broker could be asked."""


class LiveControl:
    def __init__(
        self,
        store: Store,
        manager: SessionManager,
        tunnels: TunnelRegistry[AgentEdge],
        engineers: EngineerLogins,
    ) -> None:
        self.store = store
        self.manager = manager
        self.tunnels = tunnels
        self.engineers = engineers

    def live(self, session_id: str) -> LiveSession:
        """The live session with this id (or a unique prefix of it)."""
        prefix = session_id.strip().lower()
        matches = [s for s in self.manager.live() if s.id.startswith(prefix)] if prefix else []
        if len(matches) != 1:
            raise NotFound(
                f"No live session {session_id} on this broker."
                if not matches
                else f"{session_id} matches several sessions; give more of the id."
            )
        return matches[0]

    async def end(self, session_id: str, actor: str) -> dict[str, Any]:
        live = self.live(session_id)
        await self.manager.end(live, "admin")
        return {"session": live.id, "ended": True}

    async def end_logins(self, account: str) -> int | None:
        return self.engineers.end_account(account)

    async def handoff(self, session_id: str, to: str, actor: str) -> dict[str, Any]:
        live = self.live(session_id)
        async with self.store.read() as db:
            account = await q.get_account(db, to)
            ticket = await q.get_ticket(db, live.ticket_key)
            allowed = await q.may_work_on(db, ticket, account.name)
        if account.role != "engineer" or account.disabled:
            raise Invalid(f"{to} is not an active engineer account")
        if not allowed:
            raise Invalid(f"{live.ticket_key} is not assigned to {to}")
        person = Person(account.name, account.display_name)
        commands = await live.step(HandOver(person, actor))
        (record,) = [c for c in commands if isinstance(c, Record) and c.action == "session.handoff"]
        removed = sorted(record.details["disconnected"])
        return {"session": live.id, "to": account.name, "disconnected": removed}


class ViaBroker:
    """The command line's way to the running broker, through the store."""

    def __init__(self, store: Store, timeout: float = 10.0) -> None:
        self.store = store
        self.timeout = timeout

    async def end(self, session_id: str, actor: str) -> dict[str, Any]:
        return await self.ask("end", {"session": session_id, "actor": actor})

    async def handoff(self, session_id: str, to: str, actor: str) -> dict[str, Any]:
        return await self.ask("handoff", {"session": session_id, "to": to, "actor": actor})

    async def end_logins(self, account: str) -> int | None:
        try:
            answer = await self.ask("end_logins", {"account": account}, timeout=5)
        except BrokerError:
            return None  # no broker runs: nobody is logged in through one
        return int(answer.get("ssh_logins_ended", 0))

    async def ask(
        self, op: str, args: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Write the request, wait for the broker's answer (or give up and withdraw it)."""
        async with self.store.begin() as db:
            row = AdminRequest(op=op, args=args)
            db.add(row)
            await db.flush()
            request_id = row.id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while loop.time() < deadline:
            await asyncio.sleep(0.1)
            async with self.store.read() as db:
                row = await db.get_one(AdminRequest, request_id)
                if row.state != "pending":
                    if row.state == "done":
                        return dict(row.result or {})
                    raise BrokerError(str((row.result or {}).get("error", row.state)))
        async with self.store.begin() as db:
            await db.execute(
                update(AdminRequest)
                .where(AdminRequest.id == request_id, AdminRequest.state == "pending")
                .values(state="expired", done_at=utcnow())
            )
        raise BrokerError(NO_BROKER)
