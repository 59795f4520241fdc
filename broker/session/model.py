"""A live session's state, without I/O: the transport asks it questions and reports facts.

``pending`` (code redeemed, the customer has not answered) -> ``active`` (consented; the helper's
forward may come up) -> ``ended`` (with a reason). Ending runs the registered callbacks once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from assist_protocol.constants import FORWARD_HOST, FORWARD_PORT
from assist_protocol.scope import Scope
from broker.session.consent import Redemption
from broker.session.lifetime import Lifetime

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


def dropped_message(grace: float) -> str:
    """What engineers read when the helper drops, with the grace period in words."""
    if grace >= 120 and grace % 60 == 0:
        return DROPPED_MESSAGE.format(grace=f"{round(grace / 60)} minutes")
    return DROPPED_MESSAGE.format(grace=f"{round(grace)} seconds")


class State(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    ENDED = "ended"


class StateError(Exception):
    """A step was asked for in the wrong state (a protocol violation by the peer)."""


@dataclass(eq=False)
class LiveSession:
    redemption: Redemption
    state: State = State.PENDING
    granted: Scope | None = None
    helper_host_key: str | None = None
    #: how the broker reaches the helper's server, as agreed at consent: "reverse" or "nested"
    helper_link: str = "nested"
    forwarded: bool = False
    #: engineers the customer let in for the rest of the session (the issuer, by consenting)
    approved: set[str] = field(default_factory=set)
    #: after a handoff, the only engineer who may continue
    handed_to: str | None = None
    #: set when the session starts: its time limit and idle timeout (see lifetime.py)
    lifetime: Lifetime | None = None
    #: what the helper told about the customer's computer (hostname, user, os)
    customer_host: dict[str, str] = field(default_factory=dict)
    #: SHA-256 of the valid resume tokens (the helper's way back after a network drop)
    resume_digests: list[bytes] = field(default_factory=list)
    #: set while the helper is connected with its forward up; clear during a drop
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    #: monotonic time of the current drop, if the helper is away
    dropped_at: float | None = None
    #: set while the broker waits out the grace period of a drop
    in_grace: bool = False
    #: engineers whose PTY shells a drop cut, and how many (their next shells re-attach)
    cut_shells: Counter[str] = field(default_factory=Counter)
    #: a line for the customer's screen (set by the helper's current connection)
    tell: Callable[[str], None] = lambda _text: None
    end_reason: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _on_end: list[Callable[[str], None]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.redemption.session_id

    @property
    def ticket_key(self) -> str:
        return self.redemption.ticket_key

    @property
    def requested(self) -> Scope:
        return Scope.parse(self.redemption.scope)

    def consent(self, granted_text: str | None, host_key: str) -> Scope:
        """The customer said yes, possibly to less than was asked. Never more."""
        if self.state is not State.PENDING:
            raise StateError(f"consent in state {self.state}")
        requested = self.requested
        self.granted = (
            requested if not granted_text else requested.narrowed_to(Scope.parse(granted_text))
        )
        self.helper_host_key = host_key
        self.state = State.ACTIVE
        self.approved = {self.redemption.engineer_name}
        return self.granted

    def join_refusal(self, engineer: str) -> str | None:
        """Why ``engineer`` may not join at all (before asking the customer), or ``None``."""
        if self.handed_to is not None and engineer != self.handed_to:
            return (
                f"The session on {self.ticket_key} was handed over to {self.handed_to}; "
                "only they may continue."
            )
        return None

    def needs_approval(self, engineer: str) -> bool:
        return engineer not in self.approved

    def hand_over(self, engineer: str) -> None:
        """Only ``engineer`` may continue, after a fresh approval by the customer."""
        self.handed_to = engineer
        self.approved = set()

    def may_forward(self, host: str, port: int) -> bool:
        """Only the helper's own virtual forward, once, after consent."""
        return (
            self.state is State.ACTIVE
            and not self.forwarded
            and host == FORWARD_HOST
            and port == FORWARD_PORT
        )

    def new_resume_token(self) -> str:
        """A fresh token (``SESSION.SECRET``); only its digest is kept. Until the helper's
        forward is up again (:meth:`confirm_token`), the token it logged in with stays valid
        too: the helper may not have read the new one when the connection drops again."""
        secret = secrets.token_urlsafe(32)
        self.resume_digests = [*self.resume_digests[:1], hashlib.sha256(secret.encode()).digest()]
        return f"{self.id}.{secret}"

    def confirm_token(self) -> None:
        """The helper is back with its forward (it asks for it only after reading the new
        token): only the newest token stays valid."""
        self.resume_digests = self.resume_digests[-1:]

    def resume_allowed(self, secret: str) -> bool:
        """The secret matches a valid token (constant time) and the session still runs."""
        return self._valid(secret) is not None

    def resumed_with(self, secret: str) -> None:
        """A resume logged in with ``secret``: the helper holds that token and no other it
        was sent, so only it stays valid until the next one (:meth:`new_resume_token`). Were
        the token it was never seen to read kept instead, a second drop before the forward is
        up would lock the helper out with the only token it has."""
        valid = self._valid(secret)
        if valid is not None:
            self.resume_digests = [valid]

    def _valid(self, secret: str) -> bytes | None:
        if self.state is not State.ACTIVE:
            return None
        digest = hashlib.sha256(secret.encode()).digest()
        matches = [hmac.compare_digest(digest, valid) for valid in self.resume_digests]
        return digest if any(matches) else None

    @property
    def resumable(self) -> bool:
        return bool(self.resume_digests)

    def drop(self) -> None:
        """The helper's connection went away; the forward must come up again. A second drop
        before the helper is back keeps the first one's time."""
        if self.dropped_at is None:
            self.dropped_at = time.monotonic()
        self.forwarded = False
        self.connected.clear()

    async def back_or_over(self, timeout: float) -> bool:
        """Wait until the helper is connected again or the session ended; ``False`` if
        neither happened within ``timeout`` seconds."""
        back = asyncio.ensure_future(self.connected.wait())
        over = asyncio.ensure_future(self.ended.wait())
        try:
            done, _ = await asyncio.wait(
                {back, over}, timeout=timeout, return_when="FIRST_COMPLETED"
            )
        finally:
            back.cancel()
            over.cancel()
        return bool(done)

    def gap(self) -> float:
        """Seconds since the drop (0 if connected)."""
        return 0.0 if self.dropped_at is None else time.monotonic() - self.dropped_at

    def on_end(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(reason)`` when the session ends; returns a function that unregisters."""
        if self.state is State.ENDED:
            callback(self.end_reason or "error")
            return lambda: None
        self._on_end.append(callback)
        return lambda: self._on_end.remove(callback) if callback in self._on_end else None

    def end(self, reason: str) -> bool:
        """End once. ``False`` if it had ended already (the first reason stands)."""
        if self.state is State.ENDED:
            return False
        self.state = State.ENDED
        self.end_reason = reason
        self.ended.set()
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback(reason)
        return True
