"""Typed events that flow one way: relay -> dispatcher -> sinks. Sinks never call back up.

Every event is a frozen dataclass; ``Event.name`` derives a dotted name from the class name
(``ChannelOpened`` -> ``channel.opened``) for logs and the audit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar


def _dotted(name: str) -> str:
    return ".".join(part.lower() for part in re.findall(r"[A-Z][a-z]*", name))


@dataclass(frozen=True)
class ChannelRef:
    """Identifies one engineer channel across events. ``key`` is unique within the process."""

    key: str
    session_id: str
    ticket_id: int
    ticket_key: str
    engineer_id: int
    engineer_name: str
    kind: str  # shell | exec | sftp | forward


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = "event"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = _dotted(cls.__name__)


@dataclass(frozen=True)
class ChannelOpened(Event):
    """A channel was allowed and is about to open towards the customer."""

    channel: ChannelRef
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelRefused(Event):
    """An engineer asked for a channel that the consent or policy does not allow."""

    channel: ChannelRef
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Output(Event):
    """Bytes from the customer's side to the engineer (``stream`` 1 = stdout, 2 = stderr)."""

    channel: ChannelRef
    data: bytes
    stream: int = 1


@dataclass(frozen=True)
class Input(Event):
    """Bytes from the engineer to the customer's side."""

    channel: ChannelRef
    data: bytes


@dataclass(frozen=True)
class Resized(Event):
    channel: ChannelRef
    width: int
    height: int


@dataclass(frozen=True)
class ChannelClosed(Event):
    """The channel ended. ``reason``: exit, engineer, customer, shutdown, error ..."""

    channel: ChannelRef
    reason: str
    bytes_in: int
    bytes_out: int
    exit_status: int | None = None
    exit_signal: str | None = None
    duration_ms: int | None = None


@dataclass(frozen=True)
class FileOperation(Event):
    """One SFTP/scp operation on the customer's files; ``action`` is e.g. ``sftp.open``."""

    channel: ChannelRef
    action: str
    detail: dict[str, Any] = field(default_factory=dict)
