"""What a session starts from, and the policy it runs under: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from broker.session.core.lifetime import Limits


class State(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(frozen=True)
class Redemption:
    """What a successful redemption created: the session and the facts the customer is shown."""

    session_id: str
    code_id: int
    ticket_id: int
    ticket_key: str
    ticket_title: str
    severity: int
    engineer_id: int
    engineer_name: str
    engineer_display: str
    scope: str


@dataclass(frozen=True)
class Policy:
    """The settings one session runs under (the broker's settings, for its ticket's severity)."""

    limits: Limits = field(default_factory=lambda: Limits(2 * 3600.0, 30 * 60.0, 5 * 60.0))
    #: how long the session waits for its helper after a network drop
    grace: float = 120.0
    #: how the broker prefers to reach the helper's server: "reverse" or "nested"
    helper_link: str = "reverse"
    #: how long an engineer waits for the customer's answer to a join
    join_timeout: float = 120.0
    #: how long a new channel waits for a dropped helper to come back
    reconnect_wait: float = 30.0
    #: "remove" requests that removed nobody, audited per helper connection
    idle_removals_audited: int = 10


END_MESSAGES = {
    "customer": "The customer ended the session.",
    "declined": "The customer declined the session.",
    "network": "The connection to the customer was lost; the session has ended.",
    "shutdown": "The broker is shutting down; the session has ended.",
    "admin": "An administrator ended the session.",
    "sink_failed": "Recording is unavailable; the session was stopped to protect the customer.",
    "store_unavailable": (
        "Recording is unavailable; the session was stopped to protect the customer."
    ),
    "error": "The session ended because of an internal error.",
    "removed": "The customer removed you from the session.",
    "timeout": "The session reached its time limit and has ended.",
    "idle": "The session was idle for too long and has ended.",
    "handoff": "The session was handed over to another engineer.",
}

#: what engineers read when the customer's connection drops (the session may still resume)
DROPPED_MESSAGE = (
    "The connection to the customer dropped. Their shell keeps running for up to {grace}: "
    "run the same ssh command again to get back to it once they are reconnected."
)


def end_message(reason: str) -> str:
    return END_MESSAGES.get(reason, END_MESSAGES["error"])


def dropped_message(grace: float) -> str:
    """What engineers read when the helper drops, with the grace period in words."""
    if grace >= 120 and grace % 60 == 0:
        return DROPPED_MESSAGE.format(grace=f"{round(grace / 60)} minutes")
    return DROPPED_MESSAGE.format(grace=f"{round(grace)} seconds")
