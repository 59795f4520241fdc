"""The helper's side of the SSH edge: code login, the control channel, the one virtual forward,
and the nested client connections that carry engineers to the helper's embedded server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncssh
import structlog

from assist_protocol import messages as msg
from assist_protocol.constants import KBDINT_PROMPT, RESUME_PREFIX
from assist_protocol.safetext import visible
from assist_protocol.scope import Scope, ScopeError
from broker.errors import CodeRejected
from broker.session.consent import Redemption
from broker.session.lifetime import Lifetime, Limits
from broker.session.mail import mail_receipt
from broker.session.model import (
    END_MESSAGES,
    LiveSession,
    State,
    dropped_message,
)
from broker.session.receipt import build_receipt, receipt_text
from broker.store import queries as q
from broker.transport.context import Context
from broker.transport.control import ControlSession
from broker.transport.joins import Attendance
from broker.transport.nested import HelperLinks, VirtualListener

log = structlog.get_logger(__name__)


def live_id(facts: Redemption) -> str:
    return facts.session_id[:8]


#: how many "remove" requests that remove nobody are audited per helper connection
IDLE_REMOVALS_AUDITED = 10


class AgentEdge:
    """One helper connection. Created by the SSH server when the user name is ``agent``."""

    def __init__(
        self,
        conn: asyncssh.SSHServerConnection,
        ctx: Context,
        peer: str,
        find_agent: Callable[[LiveSession], AgentEdge | None] = lambda _live: None,
    ) -> None:
        self.conn = conn
        self.ctx = ctx
        self.peer = peer
        self._find_agent = find_agent
        self.live: LiveSession | None = None
        #: this connection resumed a session after a drop (it skips the consent)
        self.resuming = False
        self._unregister_end: Callable[[], None] = lambda: None
        #: set once this edge handed its session over to the drop (or to a resumed edge)
        self.abandoned = False
        self.control: ControlSession | None = None
        self.links = HelperLinks(ctx, conn, self._send)
        self.attendance: Attendance | None = None
        self.tried = False
        #: "remove" requests that removed nobody (only the first few are audited)
        self.idle_removals = 0
        #: SSH keys offered for user "agent" (someone trying to log in to the broker itself)
        self.offered_keys: list[str] = []
        #: control messages in arrival order; ``None`` tells the worker the connection is gone
        self._messages: asyncio.Queue[msg.Message | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.log_context = {"peer": peer, "role": "helper"}
        self._log = log.bind(**self.log_context)

    # --- authentication: the consent code as the keyboard-interactive answer ---------------

    def get_kbdint_challenge(self) -> tuple[str, str, str, list[tuple[str, bool]]]:
        return (
            "assist-broker",
            "Enter the consent code the engineer gave you.",
            "en",
            [(KBDINT_PROMPT, False)],
        )

    async def validate_kbdint_response(self, responses: list[str]) -> bool:
        if self.tried or len(responses) != 1:
            return False  # one code per connection
        self.tried = True
        answer = responses[0]
        try:
            if answer.startswith(RESUME_PREFIX):
                self.live = await self.ctx.manager.resume(answer[len(RESUME_PREFIX) :], self.peer)
                self.resuming = True
                previous = self._find_agent(self.live)
                if previous is not None and previous is not self:
                    previous.abandon()  # its connection is dead but not noticed yet
                await self.ctx.manager.record(
                    self.live,
                    "session.resume_accepted",
                    "customer",
                    {"source": self.peer, "gap_seconds": round(self.live.gap(), 3)},
                )
            else:
                self.live = await self.ctx.manager.redeem(answer, self.peer)
        except CodeRejected as exc:
            self._log.info("code_rejected", reason=exc.code)
            # The helper shows this banner to the customer word for word.
            self.conn.send_auth_banner(f"{exc.code}: {exc.message}\n")
            return False
        self.log_context.update(session=self.live.id, ticket=self.live.ticket_key)
        self._log = log.bind(**self.log_context)
        self._unregister_end = self.live.on_end(self._session_ended)
        return True

    # --- the control channel ---------------------------------------------------------------

    def session_requested(self) -> ControlSession | bool:
        if self.live is None or self.control is not None:
            return False
        self.control = ControlSession(self._control_open, self._messages.put_nowait, self._lost)
        return self.control

    def _control_open(self, control: ControlSession) -> None:
        assert self.live is not None
        facts = self.live.redemption
        if self.resuming:
            self._resumed(control)
            return
        control.send(
            msg.Hello(
                session=facts.session_id,
                ticket=msg.TicketFacts(facts.ticket_key, facts.ticket_title, facts.severity),
                engineer=msg.Person(facts.engineer_name, facts.engineer_display),
                scope=facts.scope,
                scope_text=Scope.parse(facts.scope).describe(),
                relay_key=self._relay_key(),
                link=self.ctx.settings.helper_link,
            )
        )
        self._worker = self.ctx.spawn(
            self._serve_control(), f"control-{live_id(facts)}", self.log_context
        )

    def _resumed(self, control: ControlSession) -> None:
        """Back after a drop: the consent stands; the helper brings its forward up again."""
        live = self.live
        assert live is not None and live.granted is not None
        self.attendance = Attendance(live, self.ctx.manager, self._send)
        live.tell = self.notify
        control.send(
            msg.Resumed(
                session=live.id,
                scope=str(live.granted),
                relay_key=self._relay_key(),
                gap_seconds=round(live.gap(), 1),
                # the next way back; the token just used stays valid until the forward is up
                resume=live.new_resume_token(),
            )
        )
        self._worker = self.ctx.spawn(
            self._serve_control(), f"control-{live_id(live.redemption)}", self.log_context
        )

    def _relay_key(self) -> str:
        return self.ctx.keys.relay_key.export_public_key().decode().strip()

    async def _serve_control(self) -> None:
        while (message := await self._messages.get()) is not None:
            try:
                await self._handle(message)
            except asyncio.CancelledError:
                raise
            except (ScopeError, ValueError, KeyError, TypeError) as exc:
                self._log.warning("control_message_refused", type=message.TYPE, error=str(exc))
                if self.control is not None:
                    self.control.send(msg.Error(str(exc)))
            except Exception:
                self._log.exception("control_failed")
                await self._end("error")
                return

    async def _handle(self, message: msg.Message) -> None:
        live = self.live
        assert live is not None
        if isinstance(message, msg.Consent) and live.state is State.PENDING:
            host_key = asyncssh.import_public_key(message.host_key)
            # What the customer's computer says of itself is shown to admins and auditors.
            host = {visible(k, 32): visible(v, 200) for k, v in message.host.items()}
            reverse = message.link == "reverse" == self.ctx.settings.helper_link
            live.helper_link = "reverse" if reverse else "nested"  # a helper says what it can
            await self.ctx.manager.consented(
                live, message.scope, host_key.export_public_key().decode().strip(), host
            )
            self._log.info("session_consented", scope=str(live.granted))
            self.attendance = Attendance(live, self.ctx.manager, self._send)
            live.tell = self.notify
            assert self.control is not None and live.granted is not None
            self.control.send(
                msg.Consented(
                    scope=str(live.granted),
                    scope_text=live.granted.describe(),
                    # the helper's way back after a network drop (never the code again)
                    resume=live.new_resume_token(),
                    grace_seconds=self.ctx.settings.session_grace,
                )
            )
        elif isinstance(message, msg.Decline) and live.state is State.PENDING:
            await self.ctx.manager.declined(live)
        elif isinstance(message, msg.End):
            await self._end("customer")
        elif isinstance(message, msg.LinkFailed):
            self.ctx.links.failed(message.nonce, message.reason)
        elif isinstance(message, msg.JoinAnswer) and self.attendance is not None:
            self.attendance.answered(message)
        elif isinstance(message, msg.Who) and self.attendance is not None and self.control:
            self.control.send(msg.Engineers(self.attendance.who()))
        elif isinstance(message, msg.Remove) and self.attendance is not None and self.control:
            name = message.engineer[:64]
            count = await self.attendance.remove(name)
            # A removal is audited; asking to remove nobody is, a few times (a helper that
            # repeats it endlessly does not write a row each time).
            self.idle_removals += not count
            if count or self.idle_removals <= IDLE_REMOVALS_AUDITED:
                await self.ctx.manager.record(
                    live,
                    "session.engineer_removed",
                    "customer",
                    {"engineer": name, "connections": count},
                )
            text = f"{name} was removed." if count else f"{name} is not connected."
            self.control.send(msg.Notice(text))
        else:
            raise ValueError(f"unexpected {message.TYPE!r} in state {live.state}")

    async def _end(self, reason: str) -> None:
        """End the session in a task of its own: hanging up on the helper cancels this edge's
        tasks, and the end must still be recorded."""
        if self.live is not None:
            await asyncio.shield(
                self.ctx.spawn(self.ctx.manager.end(self.live, reason), None, self.log_context)
            )

    def notify(self, text: str) -> None:
        """A line for the customer's screen."""
        self._send(msg.Notice(text))

    def _send(self, message: msg.Message) -> None:
        if self.control is not None:
            self.control.send(message)

    def _session_ended(self, reason: str) -> None:
        """The session ended (for any reason): tell the helper, with its receipt, then hang up."""
        if self.control is None:
            self.conn.close()
            return
        self.ctx.spawn(self._say_goodbye(reason), "goodbye", self.log_context)

    async def _say_goodbye(self, reason: str) -> None:
        receipt: dict[str, Any] | None = None
        if self.live is not None:
            try:
                receipt = await build_receipt(self.ctx.store, self.live.id)
            except Exception:  # the store may be why the session ended
                self._log.warning("receipt_unavailable")
            else:
                mail = mail_receipt(
                    self.ctx.store, self.ctx.manager, self.ctx.settings.extra, self.live, receipt
                )
                self.ctx.spawn(mail, "mail", self.log_context)
        message = msg.Ended(
            reason=reason,
            message=END_MESSAGES.get(reason, END_MESSAGES["error"]),
            receipt=receipt,
            receipt_text=receipt_text(receipt) if receipt is not None else None,
        )
        if self.control is not None:
            self.control.send(message)
            self.control.close()
        self.links.close()
        self.conn.close()

    # --- the virtual forward and nested connections ----------------------------------------

    async def server_requested(self, host: str, port: int) -> VirtualListener | bool:
        live = self.live
        if live is None or not live.may_forward(host, port):
            self._log.warning("forward_refused", host=host, port=port)
            return False
        listener = VirtualListener(self.forward_closed)
        resumed = live.dropped_at is not None
        await self.ctx.manager.started(live)
        if resumed and live.lifetime is not None:
            self._send(live.lifetime.limits_message())
        else:
            self._log.info("session_started")
            self._start_lifetime(live)
        return listener

    def _start_lifetime(self, live: LiveSession) -> None:
        live.lifetime = Lifetime(Limits.of(live.redemption.severity, self.ctx.settings))
        live.on_end(lambda _reason: live.lifetime.disarm() if live.lifetime else None)
        self._send(live.lifetime.limits_message())

        def warn(seconds_left: float) -> None:
            live.tell(Lifetime.warning_text(seconds_left))

        self.ctx.spawn(live.lifetime.run(warn, self._end), "lifetime", self.log_context)

    def forward_closed(self) -> None:
        if self.abandoned:
            return  # the helper's connection is gone; the drop handles the session
        if self.live is not None and self.live.state is State.ACTIVE:
            self.ctx.spawn(self._end("customer"), None, self.log_context)

    async def open_nested(self, username: str) -> asyncssh.SSHClientConnection:
        """A connection to the helper's embedded server for engineer ``username``."""
        live = self.live
        assert live is not None and live.helper_host_key is not None
        return await self.links.open(live.helper_link, live.helper_host_key, username)

    def key_offered(self, fingerprint: str) -> None:
        if fingerprint not in self.offered_keys and len(self.offered_keys) < 10:
            self.offered_keys.append(fingerprint)

    def connection_lost(self) -> None:
        if self.offered_keys and not self.tried:
            self.ctx.spawn(self._audit_key_login(), None, self.log_context)
        self._lost()

    async def _audit_key_login(self) -> None:
        self._log.warning("agent_key_login_refused", keys=self.offered_keys)
        if self.ctx.metrics is not None:
            self.ctx.metrics.auth_failures.labels("ssh").inc()
        if not self.ctx.audit_auth_failure(self.peer):
            return
        try:
            async with self.ctx.store.begin() as db:
                await q.append_audit(
                    db,
                    action="engineer.auth_failed",
                    actor=f"unknown@{self.peer}",
                    details={
                        "user": "agent",
                        "source": self.peer,
                        "keys": self.offered_keys,
                        "reason": "the broker itself accepts no SSH key logins",
                    },
                )
        except Exception:
            self._log.exception("audit_write_failed", action="engineer.auth_failed")

    def _lost(self) -> None:
        self.links.close(lost=True)
        if self.attendance is not None:
            self.attendance.unanswerable()
        # Let the worker finish what it is doing (recording a decline, an end), then stop.
        self._messages.put_nowait(None)
        live = self.live
        if live is None or live.state is State.ENDED or self.abandoned:
            return
        if live.dropped_at is not None:
            # A resumed connection lost before its forward came up: the grace period that
            # is already running decides.
            self.abandoned = True
            self._unregister_end()
        elif live.forwarded and live.resumable:
            self.abandon()  # the session waits for the helper to come back
        else:
            # The customer's connection went away without saying "end", before it started.
            self.ctx.spawn(self._end("network"), None, self.log_context)

    def abandon(self) -> None:
        """The helper's connection dropped (or a resumed one replaced it) while the session
        ran: engineers are told and hung up, the customer's shells keep running on their
        side, and the session waits ``session_grace`` for the helper before it ends."""
        live = self.live
        if self.abandoned or live is None or live.state is not State.ACTIVE:
            return
        self.abandoned = True
        self._unregister_end()
        grace = self.ctx.settings.session_grace
        message = dropped_message(grace)
        if self.attendance is not None:
            for edge in list(self.attendance.engineers):
                shells = edge.open_shells()
                if shells and edge.account_name:
                    live.cut_shells[edge.account_name] += shells
                edge.session_ended("dropped", message)
            self.attendance.engineers.clear()
        self._log.warning("helper_dropped", grace=grace)
        live.drop()
        self.ctx.spawn(self.ctx.manager.dropped(live, grace), "grace", self.log_context)
        self.conn.close()
