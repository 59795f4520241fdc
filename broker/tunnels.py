"""The live connections on this node: helper tunnels keyed by session id, and engineers' logins
by account (so that disabling an account ends its connections at once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.session.model import LiveSession
    from broker.transport.agent_ssh import AgentEdge
    from broker.transport.engineer_ssh import EngineerEdge

DISABLED_MESSAGE = "Your account was disabled by an administrator; you were disconnected."


class TunnelRegistry:
    def __init__(self) -> None:
        self._agents: dict[str, AgentEdge] = {}

    def add(self, session_id: str, agent: AgentEdge) -> None:
        self._agents[session_id] = agent

    def remove(self, session_id: str, agent: AgentEdge) -> None:
        if self._agents.get(session_id) is agent:
            del self._agents[session_id]

    def find(self, live: LiveSession) -> AgentEdge | None:
        return self._agents.get(live.id)

    def __len__(self) -> int:
        return len(self._agents)


class EngineerLogins:
    """Engineers logged in over SSH on this node."""

    def __init__(self) -> None:
        self._edges: set[EngineerEdge] = set()

    def add(self, edge: EngineerEdge) -> None:
        self._edges.add(edge)

    def discard(self, edge: EngineerEdge) -> None:
        self._edges.discard(edge)

    def end_account(self, account: str, message: str = DISABLED_MESSAGE) -> int:
        """Disconnect every login of ``account`` (they read ``message``); return how many."""
        ended = [edge for edge in self._edges if edge.account_name == account]
        for edge in ended:
            self._edges.discard(edge)
            edge.session_ended("account_disabled", message)
        return len(ended)

    def __len__(self) -> int:
        return len(self._edges)
