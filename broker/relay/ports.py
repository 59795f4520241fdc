"""What a relayed channel needs from the world around it, as interfaces.

Data flows one way, transport -> session -> relay -> sinks -> store: the SSH edge (broker.
transport) creates relays and hands them its engineer login; a relay only moves bytes and calls
back through these few methods. Declaring them here, instead of importing the edge's class,
keeps the relay package from depending on the transport package (that import made the one
cycle of the code base).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol, runtime_checkable

import asyncssh

from assist_protocol.scope import ChannelRequest
from broker.errors import BrokerError
from broker.events import ChannelRef
from broker.session.core.commands import Admit
from broker.session.live import LiveSession
from broker.sinks.dispatch import Dispatcher


class Relay(Protocol):
    """A relayed channel (shell, exec, file transfer, forward, watch) of an engineer login."""

    @property
    def channel(self) -> int | None:
        """The channel's number in its session, once admitted."""

    def end(self, message: str, reason: str) -> None:
        """The session ended under this channel (or the engineer was removed)."""


@runtime_checkable
class Notified(Protocol):
    """A relayed session channel that can show its engineer a line on standard error (a
    forward has nowhere to say it)."""

    def tell(self, message: str) -> None:
        """Show ``message`` now, while the channel waits to open (for the customer, say)."""

    def notice(self, text: str) -> bool:
        """Show ``text`` once the channel runs; False when it cannot (not started, closed)."""


class Observer(Protocol):
    def feed(self, data: bytes) -> None: ...

    def driver_ended(self) -> None: ...


@runtime_checkable
class Watched(Protocol):
    """An open shell that observers follow."""

    @property
    def ref(self) -> ChannelRef | None: ...

    @property
    def started(self) -> float: ...

    @property
    def observers(self) -> set[Observer]: ...

    def replay(self) -> bytes:
        """Bytes that draw the shell's screen as it is now (recorded output only)."""


class Context(Protocol):
    @property
    def dispatcher(self) -> Dispatcher: ...

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        name: str | None = None,
        log_context: Mapping[str, str] | None = None,
    ) -> asyncio.Task[Any]: ...


class Engineer(Protocol):
    """The engineer's login a relayed channel belongs to."""

    @property
    def ctx(self) -> Context: ...

    @property
    def ticket(self) -> str: ...

    @property
    def account_name(self) -> str | None: ...

    @property
    def log_context(self) -> dict[str, str]: ...

    @property
    def relays(self) -> set[Relay]: ...

    def relay_closed(self, relay: Relay) -> None: ...

    def ref(self, live: LiveSession | None, kind: str) -> ChannelRef: ...

    async def admit(
        self, kind: str, request: ChannelRequest, what: str, detail: dict[str, Any], relay: object
    ) -> tuple[LiveSession, Admit]:
        """The session lets this channel open, or the error the engineer reads is raised."""

    async def nested(self, live: LiveSession) -> asyncssh.SSHClientConnection: ...

    async def refuse(self, kind: str, reason: str, **detail: object) -> None: ...

    def refuse_soon(self, kind: str, reason: str, **detail: object) -> None: ...

    async def refusal(self, reason: str) -> str:
        """What the engineer reads of a refusal: the reason, and the granted scope if this
        account may work on the ticket."""

    def tell(self, text: str) -> None:
        """Show the engineer ``text`` on a session channel: one open now, or the next."""

    def untold(self) -> list[str]:
        """The lines :meth:`tell` could not show yet (taken: each is shown once)."""

    async def audit_refusal(self, kind: str, exc: BrokerError, **detail: object) -> None: ...
