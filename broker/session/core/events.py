"""What happens to a session: the facts the runner reports to the core.

``conn`` names one helper connection, ``login`` one engineer login, ``request`` one question
that waits for a verdict (an :class:`~broker.session.core.commands.Admit` or ``Refuse``, an
``Accept`` or ``Reject``). The runner numbers them; the core only compares them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from assist_protocol.scope import ChannelRequest


class Event:
    """Base class of everything the core is told."""


# --- from the customer's helper ----------------------------------------------------------


@dataclass(frozen=True)
class ControlOpened(Event):
    """The helper's control channel is open (after a code, or after a resume)."""

    conn: int
    relay_key: str


@dataclass(frozen=True)
class Consented(Event):
    """The customer said yes, to ``scope`` (``None``: all that was asked)."""

    conn: int
    scope: str | None
    host_key: str
    host: dict[str, str] = field(default_factory=dict)
    link: str = "nested"


@dataclass(frozen=True)
class Declined(Event):
    conn: int


@dataclass(frozen=True)
class EndAsked(Event):
    """The customer ended the session."""

    conn: int


@dataclass(frozen=True)
class ForwardRequested(Event):
    """The helper asks for its one virtual forward: the way engineers reach it."""

    conn: int
    request: int
    host: str
    port: int


@dataclass(frozen=True)
class ForwardClosed(Event):
    conn: int


@dataclass(frozen=True)
class HelperLost(Event):
    """The helper's connection went away."""

    conn: int


@dataclass(frozen=True)
class ResumeTried(Event):
    """A new helper connection logged in with a resume token's secret."""

    conn: int
    request: int
    secret: str
    source: str


@dataclass(frozen=True)
class JoinAnswered(Event):
    conn: int
    question: int
    allow: bool
    always: bool


@dataclass(frozen=True)
class WhoAsked(Event):
    conn: int


@dataclass(frozen=True)
class RemoveAsked(Event):
    conn: int
    engineer: str


# --- from engineers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    name: str
    display: str


@dataclass(frozen=True)
class ChannelRequested(Event):
    """An engineer's login asks for a channel (``what`` tells the customer for what)."""

    request: int
    login: int
    engineer: Person
    channel: ChannelRequest
    what: str


@dataclass(frozen=True)
class ChannelClosed(Event):
    channel: int


@dataclass(frozen=True)
class LoginLeft(Event):
    login: int


# --- from the desk -----------------------------------------------------------------------


@dataclass(frozen=True)
class HandOver(Event):
    """Only ``to`` may continue, after the customer's fresh yes; the others are let go."""

    to: Person
    actor: str


@dataclass(frozen=True)
class EndRequested(Event):
    """The broker ends the session: ``admin``, ``shutdown``, ``sink_failed`` ..."""

    reason: str


# --- time --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick(Event):
    """Time has passed (the runner sends it when a :class:`~commands.Wake` is due)."""
