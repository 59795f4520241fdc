"""A session's lifetime: a maximum duration by policy (longer for Severity 1 and 2 tickets) and
an idle timeout, with a warning to the customer before the limit. Time comes in as ``now``."""

from __future__ import annotations

from dataclasses import dataclass

from assist_protocol import messages as msg


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


@dataclass
class Lifetime:
    """``touch(now)`` on engineer activity; ``due(now)`` says what is due and when next."""

    limits: Limits
    started: float
    last_activity: float = 0.0
    warned: bool = False

    def __post_init__(self) -> None:
        self.last_activity = self.started

    def touch(self, now: float) -> None:
        self.last_activity = now

    @property
    def deadline(self) -> float:
        return self.started + self.limits.max_duration

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.deadline - now)

    def due(self, now: float) -> str | None:
        """What is due at ``now``: "timeout", "idle", "warn" (once) or ``None``."""
        if now >= self.deadline:
            return "timeout"
        if now >= self.last_activity + self.limits.idle:
            return "idle"
        if not self.warned and now >= self.deadline - self.limits.warn_before:
            self.warned = True
            return "warn"
        return None

    def next_at(self) -> float:
        """The next moment something may be due."""
        upcoming = [self.deadline, self.last_activity + self.limits.idle]
        if not self.warned:
            upcoming.append(self.deadline - self.limits.warn_before)
        return min(upcoming)

    def limits_message(self, now: float) -> msg.Limits:
        """What the helper is told (again after a reconnect): the limits and the time left."""
        return msg.Limits(
            seconds=round(self.limits.max_duration),
            seconds_left=round(self.seconds_left(now)),
            idle_seconds=round(self.limits.idle),
        )

    @staticmethod
    def warning_text(seconds_left: float) -> str:
        minutes = max(1, round(seconds_left / 60))
        unit = "minute" if minutes == 1 else "minutes"
        return f"The session will end in {minutes} {unit} (its time limit)."
