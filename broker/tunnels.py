"""The live helper tunnels on this node: a cache of connections, keyed by session id."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.session.model import LiveSession
    from broker.transport.agent_ssh import AgentEdge


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
