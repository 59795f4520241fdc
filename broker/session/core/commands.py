"""What the core asks the runner to do. Carried out in order; a failed ``Record`` stops the
rest, and the verdicts left behind fail with its error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from assist_protocol import messages as msg


class Command:
    """Base class of everything the core asks for."""


@dataclass(frozen=True)
class Send(Command):
    """A control message to the helper connection ``conn``."""

    conn: int
    message: msg.Message


@dataclass(frozen=True)
class Record(Command):
    """An audit event about the session; ``session`` updates its row in the same transaction
    (``started``: its start time, now)."""

    action: str
    actor: str
    details: Mapping[str, Any]
    session: Mapping[str, Any] | None = None
    started: bool = False
    urgent: bool = False


@dataclass(frozen=True)
class Disconnect(Command):
    """Tell engineer login ``login`` why (``message``, else the reason's words) and hang up."""

    login: int
    reason: str
    message: str | None = None


@dataclass(frozen=True)
class Hold(Command):
    """Request ``request`` waits for the customer's answer: tell the engineer who asked
    (``message``) while they wait, so they do not stare at a blank screen."""

    request: int
    message: str


@dataclass(frozen=True)
class HangUp(Command):
    """Close helper connection ``conn`` (a resumed connection replaced it)."""

    conn: int


@dataclass(frozen=True)
class Goodbye(Command):
    """Tell helper connection ``conn`` the session ended (with its receipt), then hang up."""

    conn: int
    reason: str


@dataclass(frozen=True)
class Ended(Command):
    """The session ended for ``reason``: record it, let go of what was kept for it."""

    reason: str


@dataclass(frozen=True)
class Wake(Command):
    """Send a :class:`~broker.session.core.events.Tick` at ``at`` (``None``: never)."""

    at: float | None


# --- verdicts ----------------------------------------------------------------------------


class Verdict(Command):
    request: int


@dataclass(frozen=True)
class Admit(Verdict):
    """Channel request ``request`` may open, as channel ``channel``."""

    request: int
    channel: int
    #: the customer's computer, as ``user@hostname`` (for the audit)
    customer_host: str
    #: a PTY shell that gives this engineer back one a drop cut
    reattach: bool = False
    #: for a watch: the channel watched, and whose it is
    watched: int | None = None
    watched_engineer: str | None = None


@dataclass(frozen=True)
class Refuse(Verdict):
    """Channel request ``request`` may not open. ``error``: ``denied``, ``not_found`` or
    ``refused`` (outside the scope; ``reason`` says why, for the audit)."""

    request: int
    message: str
    error: str = "denied"
    reason: str | None = None


@dataclass(frozen=True)
class Accept(Verdict):
    """A helper's request (its forward, a resume) is granted."""

    request: int


@dataclass(frozen=True)
class Reject(Verdict):
    request: int
    reason: str = field(default="refused")
