"""The life of one session, without I/O: events in, commands out.

``pending`` (code redeemed, the customer has not answered) -> ``active`` (consented; the
helper's forward may come up) -> ``ended`` (once, with a reason). While active, the helper's
connection may drop: engineers are let go, the customer's shells keep running on their side,
and the session waits ``grace`` for the helper to come back with its resume token.

Everything here is decided from the events and ``now``: no asyncio, no sockets, no database.
The runner (:mod:`broker.session.live`) carries the commands out and reports what happens;
the unit tests drive this class alone, in milliseconds. Who may open which channel, and the
customer's say over who joins, live in :mod:`broker.session.core.door`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from assist_protocol import messages as msg
from assist_protocol.constants import FORWARD_HOST, FORWARD_PORT
from assist_protocol.safetext import visible
from assist_protocol.scope import Scope, ScopeError
from broker.session.core import commands as c
from broker.session.core import events as e
from broker.session.core.door import Door
from broker.session.core.facts import Policy, Redemption, State, dropped_message
from broker.session.core.lifetime import Lifetime
from broker.session.core.tokens import ResumeTokens


class SessionCore:
    """One session's state. :meth:`handle` is the only way in."""

    def __init__(
        self,
        facts: Redemption,
        policy: Policy,
        helper: int,
        tokens: ResumeTokens | None = None,
    ) -> None:
        self.facts = facts
        self.policy = policy
        self.state = State.PENDING
        #: the helper connection the session listens to (``None`` while it is away)
        self.helper: int | None = helper
        #: that connection came back with a resume token (it skips the consent)
        self.resumed = False
        self.tokens = tokens or ResumeTokens(facts.session_id)
        self.granted: Scope | None = None
        self.helper_host_key: str | None = None
        #: how the broker reaches the helper's server, as agreed at consent
        self.helper_link = "nested"
        #: what the helper told about the customer's computer (hostname, user, os)
        self.customer_host: dict[str, str] = {}
        #: the helper's forward is up: engineers can reach the customer
        self.forwarded = False
        #: when the helper's connection dropped, while it is away
        self.dropped_at: float | None = None
        self.lifetime: Lifetime | None = None
        self.end_reason: str | None = None
        #: "remove" requests of the current helper connection that removed nobody
        self.idle_removals = 0
        self.door = Door(self)
        self._ids = itertools.count(1)
        self._wake: float | None = None
        self._handlers: dict[type[e.Event], Callable[[Any, float], list[c.Command]]] = {
            e.ControlOpened: self._control_opened,
            e.Consented: self._consented,
            e.Declined: self._declined,
            e.EndAsked: self._end_asked,
            e.ForwardRequested: self._forward_requested,
            e.ForwardClosed: self._forward_closed,
            e.HelperLost: self._helper_lost,
            e.ResumeTried: self._resume_tried,
            e.JoinAnswered: self.door.answered,
            e.WhoAsked: self.door.who_asked,
            e.RemoveAsked: self.door.remove_asked,
            e.ChannelRequested: self.door.requested,
            e.ChannelClosed: self.door.closed,
            e.LoginLeft: self.door.left,
            e.HandOver: self.door.hand_over,
            e.EndRequested: lambda event, now: self.end(event.reason),
            e.Tick: self._tick,
        }

    @property
    def id(self) -> str:
        return self.facts.session_id

    @property
    def ticket_key(self) -> str:
        return self.facts.ticket_key

    def new_id(self) -> int:
        return next(self._ids)

    # --- the way in --------------------------------------------------------------------------

    def handle(self, event: e.Event, now: float) -> list[c.Command]:
        """What to do about ``event`` at ``now``; ends with a :class:`~commands.Wake` when
        the next moment that matters has moved."""
        commands = self._handlers[type(event)](event, now)
        wake = self.next_wake()
        if wake != self._wake or isinstance(event, e.Tick):  # a tick spends the last wake
            self._wake = wake
            commands.append(c.Wake(wake))
        return commands

    def touch(self, now: float) -> None:
        """Engineer activity (called for every chunk typed: the one way in besides
        :meth:`handle`, to keep the relays' hot path free of allocations)."""
        if self.lifetime is not None:
            self.lifetime.touch(now)

    def gap(self, now: float) -> float:
        """Seconds since the helper dropped (0 if connected)."""
        return 0.0 if self.dropped_at is None else now - self.dropped_at

    def send(self, message: msg.Message) -> list[c.Command]:
        """A message for the helper, if one is connected."""
        return [] if self.helper is None else [c.Send(self.helper, message)]

    def next_wake(self) -> float | None:
        """The next moment that matters (a deadline, a limit), if any."""
        if self.state is State.ENDED:
            return None
        moments = self.door.deadlines()
        if self.lifetime is not None:
            moments.append(self.lifetime.next_at())
        if self.dropped_at is not None:
            moments.append(self.dropped_at + self.policy.grace)
        return min(moments, default=None)

    def unexpected(self, conn: int, what: str) -> list[c.Command]:
        if conn != self.helper:
            return []
        return self.send(msg.Error(f"unexpected {what!r} in state {self.state}"))

    # --- the helper --------------------------------------------------------------------------

    def _control_opened(self, event: e.ControlOpened, now: float) -> list[c.Command]:
        if event.conn != self.helper or self.state is State.ENDED:
            return []
        facts = self.facts
        if self.resumed and self.granted is not None:
            resumed = msg.Resumed(
                session=self.id,
                scope=str(self.granted),
                relay_key=event.relay_key,
                gap_seconds=round(self.gap(now), 1),
                # the next way back; the token just used stays valid until the forward is up
                resume=self.tokens.issue(),
            )
            return self.send(resumed)
        hello = msg.Hello(
            session=self.id,
            ticket=msg.TicketFacts(facts.ticket_key, facts.ticket_title, facts.severity),
            engineer=msg.Person(facts.engineer_name, facts.engineer_display),
            scope=facts.scope,
            scope_text=Scope.parse(facts.scope).describe(),
            relay_key=event.relay_key,
            link=self.policy.helper_link,
        )
        return self.send(hello)

    def _consented(self, event: e.Consented, now: float) -> list[c.Command]:
        """The customer said yes, possibly to less than was asked. Never more."""
        if event.conn != self.helper or self.state is not State.PENDING:
            return self.unexpected(event.conn, "consent")
        requested = Scope.parse(self.facts.scope)
        try:
            granted = (
                requested if not event.scope else requested.narrowed_to(Scope.parse(event.scope))
            )
        except ScopeError as exc:
            return self.send(msg.Error(str(exc)))
        self.granted = granted
        self.helper_host_key = event.host_key
        # What the customer's computer says of itself is shown to admins and auditors.
        self.customer_host = {visible(k, 32): visible(v, 200) for k, v in event.host.items()}
        reverse = event.link == "reverse" == self.policy.helper_link
        self.helper_link = "reverse" if reverse else "nested"  # a helper says what it can
        self.state = State.ACTIVE
        self.door.consented()
        record = c.Record(
            "session.consented",
            "customer",
            {
                "requested_scope": self.facts.scope,
                "granted_scope": str(granted),
                "customer_host": self.customer_host,
                "helper_host_key": event.host_key,
                "helper_link": self.helper_link,
            },
            session={
                "state": State.ACTIVE.value,
                "granted_scope": str(granted),
                "customer_host": self.customer_host,
            },
            urgent=True,
        )
        consented = msg.Consented(
            scope=str(granted),
            scope_text=granted.describe(),
            # the helper's way back after a network drop (never the code again)
            resume=self.tokens.issue(),
            grace_seconds=self.policy.grace,
        )
        return [record, *self.send(consented)]

    def _declined(self, event: e.Declined, now: float) -> list[c.Command]:
        if event.conn != self.helper or self.state is not State.PENDING:
            return self.unexpected(event.conn, "decline")
        record = c.Record("session.declined", "customer", {"requested_scope": self.facts.scope})
        return [record, *self.end("declined")]

    def _end_asked(self, event: e.EndAsked, now: float) -> list[c.Command]:
        return self.end("customer") if event.conn == self.helper else []

    def _forward_requested(self, event: e.ForwardRequested, now: float) -> list[c.Command]:
        """Only the helper's own virtual forward, once per connection, after consent."""
        allowed = (
            event.conn == self.helper
            and self.state is State.ACTIVE
            and not self.forwarded
            and event.host == FORWARD_HOST
            and event.port == FORWARD_PORT
        )
        if not allowed:
            return [c.Reject(event.request, "forward_refused")]
        self.forwarded = True
        if self.dropped_at is not None:  # back after a drop
            gap = now - self.dropped_at
            self.dropped_at = None
            self.tokens.confirm()
            commands: list[c.Command] = [
                c.Record("session.resumed", "customer", {"gap_seconds": round(gap, 3)})
            ]
            if self.lifetime is None:  # it dropped after the consent, before it ever started
                commands += self._start(now)
            else:
                commands += self.send(self.lifetime.limits_message(now))
            commands += self.door.helper_back(now)
            return [*commands, c.Accept(event.request)]
        return [*self._start(now), c.Accept(event.request)]

    def _start(self, now: float) -> list[c.Command]:
        """Engineers can reach the customer from now on; the time limits start."""
        started = c.Record(
            "session.started",
            "customer",
            {"granted_scope": str(self.granted)},
            started=True,
            urgent=True,
        )
        self.lifetime = Lifetime(self.policy.limits, now)
        return [started, *self.send(self.lifetime.limits_message(now))]

    def _forward_closed(self, event: e.ForwardClosed, now: float) -> list[c.Command]:
        if event.conn == self.helper and self.state is State.ACTIVE:
            return self.end("customer")
        return []

    def _helper_lost(self, event: e.HelperLost, now: float) -> list[c.Command]:
        if event.conn != self.helper:
            return []  # a connection a resumed one replaced: the session moved on
        commands = self.door.unanswerable()
        self.helper = None
        if self.state is State.ENDED or self.dropped_at is not None:
            # (a resumed connection lost before its forward came up: the running grace decides)
            return commands
        if self.forwarded and self.tokens.any:
            return commands + self._drop(now)
        # The customer's connection went away without saying "end", before it started.
        return commands + self.end("network", goodbye=event.conn)

    def _drop(self, now: float) -> list[c.Command]:
        """The helper is gone while the session ran: engineers are told and let go, the
        customer's shells keep running on their side, and the grace period starts. A second
        drop before the helper is back keeps the first one's time."""
        commands = self.door.let_go_all("dropped", dropped_message(self.policy.grace))
        self.forwarded = False
        if self.dropped_at is None:
            self.dropped_at = now
            grace = self.policy.grace
            commands.append(c.Record("session.disconnected", "broker", {"grace_seconds": grace}))
        return commands

    def _resume_tried(self, event: e.ResumeTried, now: float) -> list[c.Command]:
        secret = event.secret[:128]
        if self.state is not State.ACTIVE or not self.tokens.valid(secret):
            return [c.Reject(event.request, "wrong_token")]
        self.tokens.used(secret)
        commands: list[c.Command] = []
        old = self.helper
        if old is not None:  # its connection is dead but not noticed yet
            commands += self.door.unanswerable()
            commands += self._drop(now)
            commands.append(c.HangUp(old))
        elif self.dropped_at is None:
            self.dropped_at = now
        self.forwarded = False
        self.helper, self.resumed, self.idle_removals = event.conn, True, 0
        details = {"source": event.source, "gap_seconds": round(self.gap(now), 3)}
        commands.append(c.Record("session.resume_accepted", "customer", details))
        return [*commands, c.Accept(event.request)]

    # --- time and the end --------------------------------------------------------------------

    def _tick(self, event: e.Tick, now: float) -> list[c.Command]:
        if self.state is State.ENDED:
            return []
        if self.lifetime is not None:
            due = self.lifetime.due(now)
            if due == "warn":
                text = Lifetime.warning_text(self.lifetime.seconds_left(now))
                return self.send(msg.Notice(text)) + self._tick(event, now)
            if due is not None:
                return self.end(due)
        if self.dropped_at is not None and now >= self.dropped_at + self.policy.grace:
            return self.end("network")
        return self.door.expire(now)

    def end(self, reason: str, *, goodbye: int | None = None) -> list[c.Command]:
        """End once (the first reason stands): everyone waiting is answered, engineers are
        let go, the helper is told."""
        if self.state is State.ENDED:
            return []
        goodbye = self.helper if goodbye is None else goodbye
        self.state = State.ENDED
        self.end_reason = reason
        self.tokens.revoke()
        commands = self.door.let_go_all(reason, None, ended=True)
        if goodbye is not None:
            commands.append(c.Goodbye(goodbye, reason))
        return [*commands, c.Ended(reason)]
