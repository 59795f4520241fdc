"""A playbook for the session core (after mitmproxy's layer tests): events in, the commands
expected out, in order, checked exactly.

    assert play >> Consented(...) << Record(...) << Send(...)

An expected command is a command (compared with ==), a command class (any instance), or a
function that takes the command and says whether it is the one. ``Wake`` commands are left
out unless the playbook is made with ``wake=True``. ``play.at(t)`` moves the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.session.core import commands as c
from broker.session.core import events as e
from broker.session.core.session import SessionCore

Expected = c.Command | type[c.Command] | Callable[[c.Command], bool]


class Playbook:
    def __init__(self, core: SessionCore, now: float = 1000.0, wake: bool = False) -> None:
        self.core = core
        self.now = now
        self.wake = wake
        self._steps: list[tuple[str, Any]] = []
        #: every command the core gave, in order (to read tokens, ids ...)
        self.log: list[c.Command] = []

    def at(self, now: float) -> Playbook:
        self._steps.append(("time", now))
        return self

    def __rshift__(self, event: e.Event) -> Playbook:
        self._steps.append(("in", event))
        return self

    def __lshift__(self, expected: Expected) -> Playbook:
        self._steps.append(("out", expected))
        return self

    def __bool__(self) -> bool:
        steps, self._steps = self._steps, []
        given: list[c.Command] = []
        wanted: list[Expected] = []
        for kind, value in steps:
            if kind == "time":
                self.now = value
            elif kind == "in":
                out = self.core.handle(value, self.now)
                self.log += out
                given += [cmd for cmd in out if self.wake or not isinstance(cmd, c.Wake)]
            else:
                wanted.append(value)
        problems = [
            f"#{i}: expected {want!r}, got {got!r}"
            for i, (want, got) in enumerate(zip(wanted, given, strict=False))
            if not _matches(want, got)
        ]
        if len(wanted) != len(given):
            problems.append(f"expected {len(wanted)} commands, got {len(given)}: {given!r}")
        if problems:
            raise AssertionError("\n".join(problems))
        return True

    def last(self, kind: type[c.Command]) -> Any:
        return next(cmd for cmd in reversed(self.log) if isinstance(cmd, kind))


def _matches(want: Expected, got: c.Command) -> bool:
    if isinstance(want, type):
        return isinstance(got, want)
    if isinstance(want, c.Command):
        return want == got
    return bool(want(got))
