"""A session's lifetime: a maximum duration by policy (longer for Severity 1 and 2 tickets) and
an idle timeout, with a warning to the customer before the limit. No I/O of its own: ``run``
sleeps until the next moment that matters and calls back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from assist_protocol import messages as msg
from broker.config import Settings


@dataclass(frozen=True)
class Limits:
    max_duration: float
    idle: float
    warn_before: float

    @classmethod
    def for_severity(
        cls, severity: int, *, normal: float, severe: float, idle: float, warn_before: float
    ) -> Limits:
        return cls(severe if severity <= 2 else normal, idle, warn_before)

    @classmethod
    def of(cls, severity: int, settings: Settings) -> Limits:
        """The limits the settings give a ticket of ``severity``."""
        return cls.for_severity(
            severity,
            normal=settings.session_max,
            severe=settings.session_max_severe,
            idle=settings.session_idle,
            warn_before=settings.session_warn_before,
        )


@dataclass
class Lifetime:
    """``touch()`` on activity; ``run()`` until the session ends or a limit is reached."""

    limits: Limits
    clock: Callable[[], float] = time.monotonic
    started: float = 0.0
    last_activity: float = 0.0
    warned: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.started = self.last_activity = self.clock()

    def touch(self) -> None:
        self.last_activity = self.clock()

    def disarm(self) -> None:
        self.ended.set()

    @property
    def deadline(self) -> float:
        return self.started + self.limits.max_duration

    def seconds_left(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def due(self) -> tuple[str | None, float]:
        """What is due now ("timeout", "idle", "warn" or None) and how long until the next."""
        now = self.clock()
        idle_at = self.last_activity + self.limits.idle
        if now >= self.deadline:
            return "timeout", 0.0
        if now >= idle_at:
            return "idle", 0.0
        warn_at = self.deadline - self.limits.warn_before
        if not self.warned and now >= warn_at:
            self.warned = True
            return "warn", 0.0
        upcoming = [self.deadline, idle_at] + ([] if self.warned else [warn_at])
        return None, max(0.01, min(upcoming) - now)

    def limits_message(self) -> msg.Limits:
        """What the helper is told (again after a reconnect): the limits and the time left."""
        return msg.Limits(
            seconds=round(self.limits.max_duration),
            seconds_left=round(self.seconds_left()),
            idle_seconds=round(self.limits.idle),
        )

    @staticmethod
    def warning_text(seconds_left: float) -> str:
        minutes = max(1, round(seconds_left / 60))
        unit = "minute" if minutes == 1 else "minutes"
        return f"The session will end in {minutes} {unit} (its time limit)."

    async def run(
        self, warn: Callable[[float], None], expire: Callable[[str], Awaitable[None]]
    ) -> None:
        while not self.ended.is_set():
            what, wait = self.due()
            if what == "warn":
                warn(self.seconds_left())
            elif what is not None:
                await expire(what)
                return
            try:
                await asyncio.wait_for(self.ended.wait(), wait)
            except TimeoutError:
                pass
