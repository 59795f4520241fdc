"""The helper's side of the SSH edge: code login, the control channel, the one virtual forward,
and the nested client connections that carry engineers to the helper's embedded server."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh
import structlog

from assist_protocol import messages as msg
from assist_protocol.constants import KBDINT_PROMPT, RESUME_PREFIX
from broker.errors import CodeRejected
from broker.session.core import events as ev
from broker.session.core.commands import Accept
from broker.session.core.facts import Redemption, State, end_message
from broker.session.live import LiveSession, new_id
from broker.session.mail import mail_receipt
from broker.session.receipt import build_receipt, receipt_text
from broker.store import queries as q
from broker.transport.context import Context
from broker.transport.control import ControlSession
from broker.transport.nested import HelperLinks, VirtualListener

log = structlog.get_logger(__name__)


def live_id(facts: Redemption) -> str:
    return facts.session_id[:8]


class AgentEdge:
    """One helper connection. Created by the SSH server when the user name is ``agent``.

    It turns what asyncssh and the control channel report into session events; the session's
    core decides (:mod:`broker.session.core`), and the runner calls back through
    :meth:`send`, :meth:`hang_up` and :meth:`goodbye`."""

    def __init__(
        self,
        conn: asyncssh.SSHServerConnection,
        ctx: Context,
        peer: str,
    ) -> None:
        self.conn = conn
        self.ctx = ctx
        self.peer = peer
        #: this connection, as the session's core knows it
        self.conn_id = new_id()
        self.live: LiveSession | None = None
        #: the session this connection tries to resume (its login may be cut off before the
        #: answer, after the session took it as its helper)
        self._resuming: str | None = None
        self.control: ControlSession | None = None
        self.links = HelperLinks(ctx, conn, self.send)
        self.tried = False
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
        manager = self.ctx.manager
        try:
            if answer.startswith(RESUME_PREFIX):
                token = answer[len(RESUME_PREFIX) :]
                self._resuming = token.partition(".")[0][:64]
                self.live = await manager.resume(token, self.peer, self.conn_id, self)
            else:
                self.live = await manager.redeem(answer, self.peer, self.conn_id, self)
        except CodeRejected as exc:
            self._log.info("code_rejected", reason=exc.code)
            # The helper shows this banner to the customer word for word.
            self.conn.send_auth_banner(f"{exc.code}: {exc.message}\n")
            return False
        self.log_context.update(session=self.live.id, ticket=self.live.ticket_key)
        self._log = log.bind(**self.log_context)
        return True

    # --- the control channel ---------------------------------------------------------------

    def session_requested(self) -> ControlSession | bool:
        if self.live is None or self.control is not None:
            return False
        self.control = ControlSession(self._control_open, self._messages.put_nowait, self._lost)
        return self.control

    def _control_open(self, control: ControlSession) -> None:
        assert self.live is not None
        relay_key = self.ctx.keys.relay_key.export_public_key().decode().strip()
        name = f"control-{live_id(self.live.redemption)}"
        self._worker = self.ctx.spawn(self._serve_control(relay_key), name, self.log_context)

    async def _serve_control(self, relay_key: str) -> None:
        live = self.live
        assert live is not None
        await live.step(ev.ControlOpened(self.conn_id, relay_key))
        while (message := await self._messages.get()) is not None:
            if isinstance(message, msg.LinkFailed):  # about a link, not the session
                self.ctx.links.failed(message.nonce, message.reason)
                continue
            try:
                event = self._event(message)
            except ValueError as exc:  # a key that is none, a message out of place
                self._log.warning("control_message_refused", type=message.TYPE, error=str(exc))
                self.send(msg.Error(str(exc)))
                continue
            try:
                await live.step(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("control_failed")
                await self._end("error")
                return

    def _event(self, message: msg.Message) -> ev.Event:
        """A control message from the helper, as the session's core reads it."""
        conn = self.conn_id
        if isinstance(message, msg.Consent):
            # The key is checked (and written canonically) here, where SSH keys are known.
            key = asyncssh.import_public_key(message.host_key).export_public_key()
            return ev.Consented(
                conn, message.scope, key.decode().strip(), dict(message.host), message.link
            )
        if isinstance(message, msg.Decline):
            return ev.Declined(conn)
        if isinstance(message, msg.End):
            return ev.EndAsked(conn)
        if isinstance(message, msg.JoinAnswer):
            return ev.JoinAnswered(conn, message.id, message.allow, message.always)
        if isinstance(message, msg.Who):
            return ev.WhoAsked(conn)
        if isinstance(message, msg.Remove):
            return ev.RemoveAsked(conn, message.engineer)
        raise ValueError(f"unexpected {message.TYPE!r}")

    async def _end(self, reason: str) -> None:
        """End the session in a task of its own: hanging up on the helper cancels this edge's
        tasks, and the end must still be recorded."""
        if self.live is not None:
            await asyncio.shield(
                self.ctx.spawn(self.ctx.manager.end(self.live, reason), None, self.log_context)
            )

    # --- what the session's runner calls ---------------------------------------------------

    def send(self, message: msg.Message) -> None:
        if self.control is not None:
            self.control.send(message)

    def hang_up(self) -> None:
        """A resumed connection replaced this one (dead, but not noticed yet)."""
        self.conn.close()

    def goodbye(self, reason: str) -> None:
        """The session ended (for any reason): tell the helper, with its receipt, then hang up."""
        if self.control is None:
            self.conn.close()
            return
        self.ctx.spawn(self._say_goodbye(reason), "goodbye", self.log_context)

    async def _say_goodbye(self, reason: str) -> None:
        receipt: dict[str, Any] | None = None
        if self.live is not None:
            try:
                # the end may not be recorded yet (it is, just after): say why it ended
                receipt = await build_receipt(self.ctx.store, self.live.id, reason)
            except Exception:  # the store may be why the session ended
                self._log.warning("receipt_unavailable")
            else:
                mail = mail_receipt(
                    self.ctx.store, self.ctx.manager, self.ctx.settings.extra, self.live, receipt
                )
                self.ctx.spawn(mail, "mail", self.log_context)
        message = msg.Ended(
            reason=reason,
            message=end_message(reason),
            receipt=receipt,
            receipt_text=receipt_text(receipt) if receipt is not None else None,
        )
        if self.control is not None:
            self.control.send(message)
            self.control.close()
        self.links.close()
        self.conn.close()

    # --- the virtual forward and the connections to the helper's server ---------------------

    async def server_requested(self, host: str, port: int) -> VirtualListener | bool:
        live = self.live
        if live is not None:
            resumed = live.dropped_at is not None
            verdict = await live.ask(ev.ForwardRequested(self.conn_id, new_id(), host, port))
            if isinstance(verdict, Accept):
                if not resumed:
                    self._log.info("session_started")
                return VirtualListener(self.forward_closed)
        self._log.warning("forward_refused", host=host, port=port)
        return False

    def forward_closed(self) -> None:
        if self.live is not None:
            self.live.step_soon(ev.ForwardClosed(self.conn_id))

    async def open_nested(self, username: str) -> asyncssh.SSHClientConnection:
        """A connection to the helper's embedded server for engineer ``username``."""
        live = self.live
        assert live is not None and live.helper_host_key is not None
        return await self.links.open(live.helper_link, live.helper_host_key, username)

    # --- the end of the connection ---------------------------------------------------------

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
        """The control channel or the whole connection is gone (a control channel cut off
        for flooding leaves the connection up: it serves no purpose any more)."""
        self.links.close(lost=True)
        self.conn.close()
        # Let the worker finish what it is doing (recording a decline, an end), then stop.
        self._messages.put_nowait(None)
        live = self.live
        if live is None and self._resuming is not None:
            live = self.ctx.manager.find_id(self._resuming)
        if live is None or live.state is State.ENDED:
            return
        if live.core.helper == self.conn_id and live.forwarded:
            self._log.warning("helper_dropped", grace=self.ctx.settings.session_grace)
        # The core decides: a drop (the session waits for the helper), an end, or nothing
        # (a resumed connection replaced this one). Its own task: the end must be recorded.
        self.ctx.spawn(live.step(ev.HelperLost(self.conn_id)), None, self.log_context)
