"""The live connections on this node: helper tunnels keyed by session id, and engineers' logins
by account (so that disabling an account ends its connections at once)."""

from __future__ import annotations

from collections.abc import Set
from typing import Generic, Protocol, TypeVar

from broker.session.live import LiveSession

A = TypeVar("A")

DISABLED_MESSAGE = "Your account was disabled by an administrator; you were disconnected."


class TunnelRegistry(Generic[A]):
    """Each live session's helper connection (``A``: the edge that holds it)."""

    def __init__(self) -> None:
        self._agents: dict[str, A] = {}

    def add(self, session_id: str, agent: A) -> None:
        self._agents[session_id] = agent

    def remove(self, session_id: str, agent: A) -> None:
        if self._agents.get(session_id) is agent:
            del self._agents[session_id]

    def find(self, live: LiveSession) -> A | None:
        return self._agents.get(live.id)

    def __len__(self) -> int:
        return len(self._agents)


class Login(Protocol):
    @property
    def account_name(self) -> str | None: ...

    def session_ended(self, reason: str, message: str | None = None) -> None: ...

    @property
    def relays(self) -> Set[object]: ...


class EngineerLogins:
    """Engineers logged in over SSH on this node."""

    def __init__(self) -> None:
        self._edges: set[Login] = set()

    def add(self, edge: Login) -> None:
        self._edges.add(edge)

    def discard(self, edge: Login) -> None:
        self._edges.discard(edge)

    def end_account(self, account: str, message: str = DISABLED_MESSAGE) -> int:
        """Disconnect every login of ``account`` (they read ``message``); return how many."""
        ended = [edge for edge in self._edges if edge.account_name == account]
        for edge in ended:
            self._edges.discard(edge)
            edge.session_ended("account_disabled", message)
        return len(ended)

    def relaying(self) -> int:
        """Channels still open on these logins (a session's end closes them a moment later)."""
        return sum(len(edge.relays) for edge in self._edges)

    def __len__(self) -> int:
        return len(self._edges)
