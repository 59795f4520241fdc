"""The engineer's side of the SSH edge: public-key login mapped to an engineer account, the
SSH user name naming the ticket, and one nested connection to the customer per engineer login."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import asyncssh
import structlog

from assist_protocol.scope import ChannelRequest
from broker.errors import BrokerError, Denied, NotFound
from broker.events import ChannelRef, ChannelRefused
from broker.relay.ports import Notified, Relay
from broker.session.core.commands import Admit, Refuse
from broker.session.core.events import ChannelClosed, ChannelRequested, LoginLeft, Person
from broker.session.core.facts import State, end_message
from broker.session.live import LiveSession, new_id, refusal_error
from broker.store import queries as q
from broker.transport.context import Context
from broker.tunnels import DISABLED_MESSAGE

if TYPE_CHECKING:
    from broker.transport.agent_ssh import AgentEdge


log = structlog.get_logger(__name__)

UNKNOWN_KEY = (
    "assist-broker: the key {fp} is not registered to an engineer account.\n"
    "Ask an admin to run: assist-broker account add NAME --role engineer --ssh-key KEY.pub\n"
)


class EngineerEdge:
    """One engineer login. ``ticket`` is the SSH user name (``ssh T-1@broker``)."""

    def __init__(
        self,
        conn: asyncssh.SSHServerConnection,
        ctx: Context,
        peer: str,
        ticket: str,
        find_agent: Callable[[LiveSession], AgentEdge | None],
    ) -> None:
        self.conn = conn
        self.ctx = ctx
        self.peer = peer
        # ``T-1+watch``: a read-only view of the ticket's open shell
        base, plus, mode = ticket.partition("+")
        self.ticket = base
        self.watch = bool(plus) and mode == "watch"
        self.bad_mode = mode[:32] if plus and not self.watch else None
        self._find_agent = find_agent
        self.account_id: int | None = None
        self.account_name: str | None = None
        self.account_display: str | None = None
        self.rejected_keys: list[str] = []
        self.relays: set[Relay] = set()
        self._nested: asyncssh.SSHClientConnection | None = None
        self._nested_for: LiveSession | None = None
        self._nested_lock = asyncio.Lock()
        #: this login, as the session's core knows it, and the session it asked to work on
        self.login_id = new_id()
        self._live: LiveSession | None = None
        #: relays waiting for the session's verdict, and those of them closed meanwhile
        self._admitting: set[object] = set()
        self._closed_early: set[object] = set()
        #: set once this login was removed from (or outlived) its session
        self.removed = False
        #: this account may work on the ticket (checked at login and at each channel): only
        #: then do refusals name the session's granted scope
        self.may_work = False
        self._may_work_checked: asyncio.Task[None] | None = None
        #: lines for the engineer that no session channel has shown yet
        self._untold: list[str] = []
        #: refusal lines already shown on this login (each once)
        self._told: set[str] = set()
        self.log_context = {"peer": peer, "ticket": ticket, "role": "engineer"}
        self._log = log.bind(**self.log_context)

    # --- authentication --------------------------------------------------------------------

    async def validate_public_key(self, key: asyncssh.SSHKey) -> bool:
        fingerprint = str(key.get_fingerprint("sha256"))
        async with self.ctx.store.read() as db:
            account = await q.account_for_key(db, fingerprint)
        if account is not None and account.role == "engineer":
            self.account_id, self.account_name = account.id, account.name
            self.account_display = account.display_name
            return True
        if fingerprint not in self.rejected_keys and len(self.rejected_keys) < 10:
            if not self.rejected_keys:
                self.conn.send_auth_banner(UNKNOWN_KEY.format(fp=fingerprint))
            self.rejected_keys.append(fingerprint)
        return False

    def auth_completed(self) -> None:
        assert self.account_name is not None
        self.log_context["engineer"] = self.account_name
        self._log = log.bind(**self.log_context)
        self._log.info("engineer_authenticated")
        self._may_work_checked = self.ctx.spawn(
            self._check_may_work(), "may-work", self.log_context
        )

    async def _check_may_work(self) -> None:
        with contextlib.suppress(Exception):  # a hint for refusals; each channel checks again
            await self._authorize()

    # --- reaching the customer -------------------------------------------------------------

    def ref(self, live: LiveSession | None, kind: str) -> ChannelRef:
        assert self.account_id is not None and self.account_name is not None
        return ChannelRef(
            key=uuid.uuid4().hex,
            session_id=live.id if live else "",
            ticket_id=live.redemption.ticket_id if live else 0,
            ticket_key=live.ticket_key if live else self.ticket,
            engineer_id=self.account_id,
            engineer_name=self.account_name,
            kind=kind,
        )

    async def admit(
        self, kind: str, request: ChannelRequest, what: str, detail: dict[str, Any], relay: object
    ) -> tuple[LiveSession, Admit]:
        """Ask the ticket's live session to let ``relay`` open (``what`` tells the customer
        for what, if they are asked): the one door every channel kind goes through. A
        refusal raises the error the engineer reads; a refusal by the scope is audited here."""
        live = await self._find_live()
        await self._authorize()
        assert self.account_name is not None
        self._live = live
        live.attach_login(self.login_id, self)
        person = Person(self.account_name, self.account_display or self.account_name)
        self._admitting.add(relay)
        try:
            event = ChannelRequested(new_id(), self.login_id, person, request, what)
            verdict = await live.ask(event, relay.tell if isinstance(relay, Notified) else None)
        finally:
            self._admitting.discard(relay)
            closed = relay in self._closed_early
            self._closed_early.discard(relay)
        if isinstance(verdict, Refuse):
            if verdict.error == "refused":
                await self.refuse(kind, verdict.reason or verdict.message, **detail)
            raise refusal_error(verdict)
        assert isinstance(verdict, Admit)
        if closed:  # the engineer closed it while it waited (for the customer, say)
            live.step_soon(ChannelClosed(verdict.channel))
            raise Denied("The channel was closed before it opened.", code="closed")
        live.bind_channel(verdict.channel, relay)
        return live, verdict

    async def _find_live(self) -> LiveSession:
        """The ticket's live session, or a :class:`BrokerError` saying why not."""
        if self.bad_mode is not None:
            raise Denied(
                f"Unknown mode '+{self.bad_mode}': use {self.ticket}@broker to work, or "
                f"{self.ticket}+watch@broker to watch."
            )
        live = self.ctx.manager.find(self.ticket)
        if live is None or live.state is State.ENDED:
            if not await self.ctx.manager.ticket_exists(self.ticket):
                raise NotFound(
                    f"There is no ticket {self.ticket}. The SSH user name must be a ticket key, "
                    f"for example: ssh -p {self.reached()} T-1@{self.reached(host=True)}"
                )
            await self._authorize()  # the next step below is only for who may work on it
            raise NotFound(
                f"No customer is connected for {self.ticket}. Issue a code with: "
                f"assist-broker code issue {self.ticket} --engineer {self.account_name}"
            )
        return live

    async def _authorize(self) -> None:
        """A ticket with assignees is open to them only."""
        assert self.account_name is not None
        async with self.ctx.store.read() as db:
            account = await q.find_account(db, self.account_name)
            if account is None or account.disabled:  # disabled since this login
                raise Denied(DISABLED_MESSAGE, code="account_disabled")
            ticket = await q.get_ticket(db, self.ticket)
            if await q.may_work_on(db, ticket, self.account_name):
                self.may_work = True
                return
            self.may_work = False
            names = await q.assignees(db, ticket)
        # ticket assign sets the whole list: the command keeps the others and adds this one
        everyone = " ".join([*names, self.account_name])
        raise Denied(
            f"{self.ticket} is assigned to {', '.join(names)}; you ({self.account_name}) may not "
            f"join it. An admin can add you: assist-broker ticket assign {self.ticket} {everyone}"
        )

    def reached(self, *, host: bool = False) -> str:
        """The port (or host) this engineer reached the broker on: what their ssh must use."""
        sockname = self.conn.get_extra_info("sockname") or ("", 0)
        if host:
            return str(self.ctx.settings.public_host or sockname[0])
        return str(sockname[1])

    async def nested(self, live: LiveSession) -> asyncssh.SSHClientConnection:
        """This login's connection to the customer's helper, opened on first use (after the
        session admitted a channel of this login)."""
        async with self._nested_lock:
            if self.removed:
                raise Denied(f"You are no longer part of the session on {self.ticket}.")
            if self._nested is not None and self._nested_for is live:
                return self._nested
            agent = self._find_agent(live)
            if agent is None:
                raise NotFound(f"No customer is connected for {self.ticket}.")
            assert self.account_name is not None
            try:
                self._nested = await agent.open_nested(self.account_name)
            except (OSError, asyncssh.Error) as exc:
                self._log.warning("nested_connect_failed", error=str(exc))
                raise BrokerError(
                    "The customer's computer could not be reached; the helper may have stopped."
                ) from exc
            self._nested_for = live
            return self._nested

    async def refuse(self, kind: str, reason: str, **detail: object) -> None:
        """Audit a refused request (a forward, an unknown subsystem ...)."""
        live = self.ctx.manager.find(self.ticket)
        ref = self.ref(live, kind)
        if live is None:  # still name the ticket, if there is one
            async with self.ctx.store.read() as db:
                ticket = await q.find_ticket(db, self.ticket)
            ref = replace(ref, ticket_id=ticket.id if ticket else 0)
        extra = {"user": f"{self.ticket}+{self.bad_mode}"} if self.bad_mode else {}
        await self.ctx.dispatcher.emit(ChannelRefused(ref, reason, {**extra, **detail}))

    def refused_text(self, reason: str) -> str:
        """The line "Refused: REASON (granted: SCOPE)." (the README's refusal table)."""
        live = self.ctx.manager.find(self.ticket)
        # what the customer granted is for those who may work on the ticket
        granted = live.granted if live is not None and self.may_work else None
        return f"Refused: {reason} (granted: {granted})." if granted else f"Refused: {reason}."

    async def refusal(self, reason: str) -> str:
        """:meth:`refused_text`, once the check at login has said whether this account may
        work on the ticket (the granted scope is named only to those who may)."""
        if self._may_work_checked is not None:
            await asyncio.wait([self._may_work_checked], timeout=5)
        return self.refused_text(reason)

    def tell(self, text: str) -> None:
        """Show the engineer ``text`` on the stderr of a session channel of this login: one
        open now, else the next that starts. For refusals whose SSH reply carries no text
        (a global request such as ``-R``): stock OpenSSH shows only a generic warning."""
        if text in self._told or len(self._told) >= 10:  # a client may ask forever: said once
            return
        for relay in self.relays:
            if isinstance(relay, Notified) and relay.notice(text):
                self._told.add(text)
                return
        if len(self._untold) < 10 and text not in self._untold:
            self._untold.append(text)

    def untold(self) -> list[str]:
        lines, self._untold = self._untold, []
        self._told.update(lines)
        return lines

    def refuse_soon(self, kind: str, reason: str, **detail: object) -> None:
        """:meth:`refuse`, from a hook that cannot wait (asyncssh's synchronous ones)."""
        self.ctx.spawn(self.refuse(kind, reason, **detail), None, self.log_context)

    async def audit_refusal(self, kind: str, exc: BrokerError, **detail: object) -> None:
        """Audit a refusal that was not audited where it was decided."""
        if exc.code in ("refused", "audit_failed", "closed"):
            return
        try:
            await self.refuse(kind, exc.message, **detail)
        except BrokerError:
            self._log.error("refusal_not_audited", kind=kind)

    def session_ended(self, reason: str, message: str | None = None) -> None:
        """The session ended, or this engineer was removed from it: tell them, hang up."""
        # No new channel may ride on the old approval in the moments before the hang-up.
        self.removed = True
        message = message or end_message(reason)
        for relay in list(self.relays):
            relay.end(message, reason)
        if self._nested is not None:  # after the relays told the engineer why
            self._nested.close()
            self._nested = None
        if not self.relays:
            self.conn.close()
        else:
            # Clients close themselves once their channels have exited; make sure of it.
            asyncio.get_running_loop().call_later(2.0, self.conn.close)

    def relay_closed(self, relay: Relay) -> None:
        self.relays.discard(relay)
        if relay in self._admitting:
            self._closed_early.add(relay)
        if relay.channel is not None and self._live is not None:
            self._live.step_soon(ChannelClosed(relay.channel))

    def connection_lost(self) -> None:
        if self._live is not None:
            self._live.step_soon(LoginLeft(self.login_id))
        if self._nested is not None:
            self._nested.close()
        if self.account_id is None and self.rejected_keys:
            self.ctx.spawn(self._audit_auth_failure(), None, self.log_context)

    async def _audit_auth_failure(self) -> None:
        self._log.warning("engineer_auth_failed", keys=self.rejected_keys)
        if self.ctx.metrics is not None:
            self.ctx.metrics.auth_failures.labels("ssh").inc()
        if not self.ctx.audit_auth_failure(self.peer):
            return
        try:
            async with self.ctx.store.begin() as db:
                ticket = await q.find_ticket(db, self.ticket)
                await q.append_audit(
                    db,
                    action="engineer.auth_failed",
                    actor=f"unknown@{self.peer}",
                    ticket_id=ticket.id if ticket else None,
                    details={
                        "user": self.ticket[:64],
                        "source": self.peer,
                        "keys": self.rejected_keys[:10],
                    },
                )
        except Exception:
            self._log.exception("audit_write_failed", action="engineer.auth_failed")
