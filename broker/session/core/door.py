"""Who may come in, and through which channel: admission against the scope, the customer's say
over each engineer who joins, removals and handoffs. Part of the session core: no I/O.

Every channel an engineer asks for (shell, exec, file transfer, forward, watch) comes here as
one :class:`~events.ChannelRequested` and leaves as one verdict, ``Admit`` or ``Refuse``,
possibly later: after the customer answered a join, or after a dropped helper came back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from assist_protocol import messages as msg
from assist_protocol.scope import Scope, decide
from broker.session.core import commands as c
from broker.session.core import events as e
from broker.session.core.facts import Policy, Redemption, State

#: what an engineer reads while the customer is asked about their join
WAITING = "Waiting for the customer to approve..."


class Session(Protocol):
    """What the door reads of its session (:class:`~broker.session.core.session.SessionCore`)."""

    facts: Redemption
    policy: Policy
    state: State
    helper: int | None
    granted: Scope | None
    forwarded: bool
    dropped_at: float | None
    customer_host: dict[str, str]
    idle_removals: int

    @property
    def ticket_key(self) -> str: ...

    def new_id(self) -> int: ...

    def send(self, message: msg.Message) -> list[c.Command]: ...

    def unexpected(self, conn: int, what: str) -> list[c.Command]: ...


@dataclass
class Question:
    """A join the customer was asked about; ``requests`` wait for the answer."""

    login: int
    engineer: e.Person
    what: str
    deadline: float
    requests: list[e.ChannelRequested] = field(default_factory=list)


@dataclass(frozen=True)
class Channel:
    login: int
    engineer: str
    kind: str
    pty: bool
    opened: float

    @property
    def shell(self) -> bool:
        return self.kind == "shell" and self.pty


class Door:
    def __init__(self, core: Session) -> None:
        self.core = core
        #: engineers the customer let in for the rest of the session (the issuer, by consenting)
        self.approved: set[str] = set()
        #: after a handoff, the only engineer who may continue
        self.handed_to: str | None = None
        #: logins that asked for something, and who they are
        self.present: dict[int, e.Person] = {}
        #: logins let in (by an approval, or because their engineer was approved)
        self.joined: set[int] = set()
        #: logins let go (removed, dropped, handed over): they must log in again
        self.gone: set[int] = set()
        self.channels: dict[int, Channel] = {}
        #: engineers whose PTY shells a drop cut, and how many (their next shells re-attach)
        self.cut_shells: Counter[str] = Counter()
        self.questions: dict[int, Question] = {}
        #: requests that came while the helper was away, and until when they wait for it
        self.waiting: dict[int, tuple[e.ChannelRequested, float]] = {}

    @property
    def ticket(self) -> str:
        return self.core.ticket_key

    def consented(self) -> None:
        self.approved = {self.core.facts.engineer_name}

    def deadlines(self) -> list[float]:
        return [q.deadline for q in self.questions.values()] + [
            until for _, until in self.waiting.values()
        ]

    # --- a channel request -------------------------------------------------------------------

    def requested(self, event: e.ChannelRequested, now: float) -> list[c.Command]:
        core = self.core
        if event.login not in self.gone:
            self.present.setdefault(event.login, event.engineer)
        if core.state is State.ENDED:
            return [self._not_connected(event)]
        if core.dropped_at is not None:  # the helper may come back: wait a little for it
            self.waiting[event.request] = (event, now + core.policy.reconnect_wait)
            return []
        if core.state is State.PENDING or not core.forwarded or core.granted is None:
            message = (
                f"The customer for {self.ticket} has not given consent yet. Try again shortly."
            )
            return [c.Refuse(event.request, message)]
        decision = decide(core.granted, event.channel)
        if not decision:
            return [
                c.Refuse(event.request, f"Refused: {decision.reason}.", "refused", decision.reason)
            ]
        if event.login in self.gone:
            message = f"You are no longer part of the session on {self.ticket}."
            return [c.Refuse(event.request, message)]
        what = event.what
        if event.channel.kind == "observe":
            watched = self._newest_shell()
            if watched is None:
                message = f"No shell is open on {self.ticket} to watch yet."
                return [c.Refuse(event.request, message, "not_found")]
            what = f"watch {self.channels[watched].engineer}'s shell"
        if event.login in self.joined:
            return [self._admit(event, now)]
        if core.helper is None:
            return [self._not_connected(event)]
        name = event.engineer.name
        refusal = self._join_refusal(name)
        if refusal:
            return [c.Refuse(event.request, refusal)]
        if name in self.approved:
            self.joined.add(event.login)
            return [self._admit(event, now)]
        hold = c.Hold(event.request, WAITING)
        for question in self.questions.values():
            if question.login == event.login:  # asked already: the same answer goes for this
                question.requests.append(event)
                return [hold]
        question_id = core.new_id()
        question = Question(event.login, event.engineer, what, now + core.policy.join_timeout)
        question.requests.append(event)
        self.questions[question_id] = question
        person = msg.Person(name, event.engineer.display)
        return [*core.send(msg.Join(id=question_id, engineer=person, what=what)), hold]

    def _admit(self, event: e.ChannelRequested, now: float) -> c.Admit:
        name = event.engineer.name
        channel = Channel(event.login, name, event.channel.kind, event.channel.pty, now)
        reattach = channel.shell and self.cut_shells[name] > 0
        if reattach:
            self.cut_shells[name] -= 1  # the helper gives this engineer their shell back
        watched = self._newest_shell() if event.channel.kind == "observe" else None
        channel_id = self.core.new_id()
        self.channels[channel_id] = channel
        host = self.core.customer_host
        return c.Admit(
            event.request,
            channel_id,
            f"{host.get('user', '?')}@{host.get('hostname', '?')}",
            reattach=reattach,
            watched=watched,
            watched_engineer=self.channels[watched].engineer if watched is not None else None,
        )

    def _newest_shell(self) -> int | None:
        """The most recent open PTY shell of an engineer still in the session."""
        shells = [
            (channel.opened, channel_id)
            for channel_id, channel in self.channels.items()
            if channel.shell and channel.login in self.joined
        ]
        return max(shells)[1] if shells else None

    def _not_connected(self, event: e.ChannelRequested) -> c.Refuse:
        message = f"No customer is connected for {self.ticket}."
        return c.Refuse(event.request, message, "not_found")

    def _join_refusal(self, engineer: str) -> str | None:
        if self.handed_to is not None and engineer != self.handed_to:
            return (
                f"The session on {self.ticket} was handed over to {self.handed_to}; "
                "only they may continue."
            )
        return None

    def closed(self, event: e.ChannelClosed, now: float) -> list[c.Command]:
        self.channels.pop(event.channel, None)
        return []

    def left(self, event: e.LoginLeft, now: float) -> list[c.Command]:
        """An engineer's login is gone; its questions may still be answered (and audited)."""
        self.present.pop(event.login, None)
        self.joined.discard(event.login)
        self.gone.discard(event.login)
        commands: list[c.Command] = []
        for request, (waiting, _) in list(self.waiting.items()):
            if waiting.login == event.login:
                del self.waiting[request]
                commands.append(c.Refuse(request, "You left."))
        return commands

    # --- the customer's answers --------------------------------------------------------------

    def answered(self, event: e.JoinAnswered, now: float) -> list[c.Command]:
        if event.conn != self.core.helper:
            return []
        question = self.questions.pop(event.question, None)
        if question is None:
            return []
        return self._settle(question, event.allow, event.always, now)

    def _settle(self, question: Question, allow: bool, always: bool, now: float) -> list[c.Command]:
        name = question.engineer.name
        refusal = self._join_refusal(name)  # a handoff while the customer answered
        if refusal:
            return [c.Refuse(r.request, refusal) for r in question.requests]
        action = "session.join_allowed" if allow else "session.join_declined"
        details = {"engineer": name, "what": question.what, "always": always}
        commands: list[c.Command] = [c.Record(action, "customer", details)]
        if not allow:
            message = f"The customer did not let you join {self.ticket} ({question.what})."
            return commands + [c.Refuse(r.request, message) for r in question.requests]
        if always:
            self.approved.add(name)
        if question.login in self.present:
            self.joined.add(question.login)
            commands += [self._admit(r, now) for r in question.requests]
        else:
            commands += [c.Refuse(r.request, "You left.") for r in question.requests]
        return commands

    def unanswerable(self) -> list[c.Command]:
        """The customer's connection is gone: nobody can answer the open questions."""
        commands: list[c.Command] = []
        why = "the customer's connection dropped"
        message = (
            "The connection to the customer dropped before they answered. Try again once they "
            "are reconnected."
        )
        for question in self.questions.values():
            details = {"engineer": question.engineer.name, "what": question.what, "why": why}
            commands.append(c.Record("session.join_unanswered", "broker", details))
            commands += [c.Refuse(r.request, message) for r in question.requests]
        self.questions.clear()
        return commands

    def expire(self, now: float) -> list[c.Command]:
        """Questions nobody answered in time count as a no; requests that waited for a
        dropped helper too long are refused."""
        commands: list[c.Command] = []
        for question_id, question in list(self.questions.items()):
            if now >= question.deadline:
                del self.questions[question_id]
                commands += self._settle(question, False, False, now)
        for request, (_, until) in list(self.waiting.items()):
            if now >= until:
                del self.waiting[request]
                message = (
                    f"The connection to the customer for {self.ticket} dropped and is not back "
                    "yet. Try again in a moment."
                )
                commands.append(c.Refuse(request, message))
        return commands

    def helper_back(self, now: float) -> list[c.Command]:
        """The helper's forward is up again: the requests that waited for it go on."""
        waiting = [request for request, _ in self.waiting.values()]
        self.waiting.clear()
        return [command for request in waiting for command in self.requested(request, now)]

    # --- who is with the customer ------------------------------------------------------------

    def who(self) -> list[msg.Person]:
        seen = {(self.present[login].name, self.present[login].display) for login in self.joined}
        return [msg.Person(name, display) for name, display in sorted(seen)]

    def who_asked(self, event: e.WhoAsked, now: float) -> list[c.Command]:
        if event.conn != self.core.helper or self.core.granted is None:
            return self.core.unexpected(event.conn, "who")
        return self.core.send(msg.Engineers(self.who()))

    def let_go(self, name: str, reason: str) -> list[c.Command]:
        """Every login of engineer ``name`` is let go; they must ask again to return."""
        self.approved.discard(name)
        commands = self.core.send(msg.Removed(name))  # the helper hangs up their shells
        for login in sorted(self.joined):
            if self.present[login].name == name:
                self.joined.discard(login)
                self.gone.add(login)
                commands.append(c.Disconnect(login, reason))
        return commands

    def let_go_all(self, reason: str, message: str | None, ended: bool = False) -> list[c.Command]:
        """Everyone leaves (a drop, the end). A drop counts the PTY shells it cuts: the
        customer's side keeps them, and each engineer's next shell re-attaches."""
        commands: list[c.Command] = []
        if ended:
            for request, _ in self.waiting.values():
                commands.append(self._not_connected(request))
            ended_message = f"The session on {self.ticket} has ended."
            for question in self.questions.values():
                why = "the session ended"
                details = {"engineer": question.engineer.name, "what": question.what, "why": why}
                commands.append(c.Record("session.join_unanswered", "broker", details))
                commands += [c.Refuse(r.request, ended_message) for r in question.requests]
            self.waiting.clear()
            self.questions.clear()
        else:
            for channel in self.channels.values():
                if channel.shell and channel.login in self.joined:
                    self.cut_shells[channel.engineer] += 1
        for login in sorted(self.joined):
            commands.append(c.Disconnect(login, reason, message))
            self.gone.add(login)
        self.joined.clear()
        return commands

    def remove_asked(self, event: e.RemoveAsked, now: float) -> list[c.Command]:
        """The customer removes an engineer. A removal is audited; asking to remove nobody
        is, a few times (a helper that repeats it endlessly does not write a row each time)."""
        core = self.core
        if event.conn != core.helper or core.granted is None:
            return core.unexpected(event.conn, "remove")
        typed = event.engineer[:64]
        matches = self._called(typed)
        if len(matches) > 1:
            names = ", ".join(person.name for person in matches)
            text = (
                f"Two or more engineers are called {typed.strip()}: remove one by login name "
                f"({names})."
            )
            return core.send(msg.Notice(text))
        name = matches[0].name if matches else typed
        count = sum(1 for login in self.joined if self.present[login].name == name)
        commands = self.let_go(name, "removed")
        core.idle_removals += not count
        if count or core.idle_removals <= core.policy.idle_removals_audited:
            details = {"engineer": name, "connections": count}
            commands.append(c.Record("session.engineer_removed", "customer", details))
        text = f"Removed {matches[0].display}." if count else f"{typed} is not connected."
        return commands + core.send(msg.Notice(text))

    def _called(self, typed: str) -> list[e.Person]:
        """The engineers present whom the customer means: by login name exactly, else by the
        display name they read (any case and spacing)."""
        people = {person.name: person for person in self.present.values()}
        if typed in people:
            return [people[typed]]
        wanted = " ".join(typed.split()).casefold()
        return [
            person
            for _, person in sorted(people.items())
            if " ".join(person.display.split()).casefold() == wanted
        ]

    def hand_over(self, event: e.HandOver, now: float) -> list[c.Command]:
        """Only ``to`` may continue, after a fresh approval by the customer."""
        to = event.to
        previous = sorted(self.approved | {self.core.facts.engineer_name})
        self.handed_to = to.name
        self.approved = set()
        others = sorted({self.present[login].name for login in self.joined} - {to.name})
        commands: list[c.Command] = []
        for name in others:
            commands += self.let_go(name, "handoff")
        if self.core.granted is not None:
            text = f"The session was handed over to {to.display}; they will ask you before joining."
            commands += self.core.send(msg.Notice(text))
        details = {"to": to.name, "previous": previous, "disconnected": others}
        return [*commands, c.Record("session.handoff", event.actor, details)]
