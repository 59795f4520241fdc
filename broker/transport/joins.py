"""Who is with the customer: per-join approval, the list of connected engineers, removals.

Each new engineer connection asks the customer over the control channel ("Bob Jones from support
wants to join: shell"), unless the customer allowed that engineer for the rest of the session
(the engineer who issued the code is allowed by the consent itself).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Protocol

import structlog

from assist_protocol import messages as msg
from broker.errors import Denied
from broker.relay.ports import Relay
from broker.session.manager import SessionManager
from broker.session.model import LiveSession


class Member(Protocol):
    """An engineer's login as the customer's attendance list sees it."""

    @property
    def account_name(self) -> str | None: ...

    @property
    def account_display(self) -> str | None: ...

    @property
    def relays(self) -> set[Relay]: ...

    def open_shells(self) -> int: ...

    def session_ended(self, reason: str, message: str | None = None) -> None: ...


log = structlog.get_logger(__name__)

#: how long an engineer waits for the customer's answer
JOIN_TIMEOUT = 120.0


class Attendance:
    def __init__(
        self,
        live: LiveSession,
        manager: SessionManager,
        send: Callable[[msg.Message], None],
        *,
        join_timeout: float = JOIN_TIMEOUT,
    ) -> None:
        self.live = live
        self.manager = manager
        self.send = send
        self.join_timeout = join_timeout
        self.engineers: set[Member] = set()
        #: open questions; ``None`` as the answer: the customer can no longer answer
        self._questions: dict[int, asyncio.Future[tuple[bool, bool] | None]] = {}
        self._ids = itertools.count(1)

    async def admit(self, edge: Member, what: str) -> None:
        """Let ``edge`` in, asking the customer if needed; :class:`Denied` if not."""
        name, display = edge.account_name or "?", edge.account_display or "?"
        refusal = self.live.join_refusal(name)
        if refusal:
            raise Denied(refusal)
        if self.live.needs_approval(name):
            answer = await self._ask(name, display, what)
            if answer is None:
                await self.manager.record(
                    self.live,
                    "session.join_unanswered",
                    "broker",
                    {"engineer": name, "what": what, "why": "the customer's connection dropped"},
                )
                raise Denied(
                    "The connection to the customer dropped before they answered. Try again "
                    "once they are reconnected."
                )
            allowed, always = answer
            refusal = self.live.join_refusal(name)  # a handoff while the customer answered
            if refusal:
                raise Denied(refusal)
            action = "session.join_allowed" if allowed else "session.join_declined"
            await self.manager.record(
                self.live, action, "customer", {"engineer": name, "what": what, "always": always}
            )
            if not allowed:
                raise Denied(f"The customer did not let you join {self.live.ticket_key} ({what}).")
            if always:
                self.live.approved.add(name)
        self.engineers.add(edge)

    async def _ask(self, name: str, display: str, what: str) -> tuple[bool, bool] | None:
        question_id = next(self._ids)
        answer: asyncio.Future[tuple[bool, bool] | None]
        answer = asyncio.get_running_loop().create_future()
        self._questions[question_id] = answer
        self.send(msg.Join(id=question_id, engineer=msg.Person(name, display), what=what))
        try:
            return await asyncio.wait_for(answer, self.join_timeout)
        except TimeoutError:
            return False, False
        finally:
            self._questions.pop(question_id, None)

    def answered(self, message: msg.JoinAnswer) -> None:
        answer = self._questions.get(message.id)
        if answer is not None and not answer.done():
            answer.set_result((message.allow, message.always))

    def left(self, edge: Member) -> None:
        self.engineers.discard(edge)

    def who(self) -> list[msg.Person]:
        seen = {(e.account_name, e.account_display) for e in self.engineers if e.account_name}
        return [msg.Person(n or "?", d or "?") for n, d in sorted(seen)]

    async def remove(self, name: str, reason: str = "removed") -> int:
        """Disconnect every connection of engineer ``name``; they must ask again to return."""
        self.live.approved.discard(name)
        self.send(msg.Removed(name))  # the helper hangs up their shells
        removed = [e for e in self.engineers if e.account_name == name]
        for edge in removed:
            self.engineers.discard(edge)
            edge.session_ended(reason)
        return len(removed)

    def unanswerable(self) -> None:
        """The customer's connection is gone: nobody can answer the open questions."""
        for answer in self._questions.values():
            if not answer.done():
                answer.set_result(None)
