"""Shells that outlive a dropped connection.

When the connection to the broker drops, each engineer's PTY shell is parked here instead of
hung up: it keeps running, the customer's live view keeps showing it, and its last output is
kept. When the same engineer opens a shell again after the helper reconnected, they get the
parked one back (:meth:`ShellPark.take`). A parked shell that nobody takes within the grace
period, or that is still parked when the session ends, is hung up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent_client.compat import TIMEOUTS
from agent_client.pty import PtyProcess


@dataclass(eq=False)
class Parked:
    """Stands in for the lost channel: output goes to the customer's view only."""

    engineer: str
    process: PtyProcess
    mirror: Callable[[bytes], None] | None
    #: the lost channel's key in the customer's activity view
    key: int = 0
    since: float = field(default_factory=time.monotonic)

    def output(self, data: bytes, stderr: bool) -> None:
        if self.mirror is not None:
            self.mirror(data)

    def input_paused(self, paused: bool) -> None:
        """Nobody types into a parked shell."""


class ShellPark:
    def __init__(
        self, grace: float = 120.0, on_gone: Callable[[str, int], None] = lambda _e, _k: None
    ) -> None:
        self.grace = grace
        #: told (engineer, key) when a parked shell is hung up or exits while parked
        self.on_gone = on_gone
        self._parked: list[Parked] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._parked)

    def keep(
        self,
        engineer: str,
        process: PtyProcess,
        mirror: Callable[[bytes], None] | None,
        key: int = 0,
    ) -> None:
        entry = Parked(engineer, process, mirror, key)
        process.attach(entry)
        process.resume_output()  # the lost channel may have paused it: keep the shell moving
        self._parked.append(entry)
        task = asyncio.get_running_loop().create_task(self._watch(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def take(self, engineer: str) -> Parked | None:
        """The engineer's oldest parked shell that still runs."""
        for entry in self._parked:
            if entry.engineer == engineer and entry.process.running:
                self._parked.remove(entry)
                return entry
        return None

    def close_for(self, engineer: str) -> int:
        """The engineer was removed: hang up their parked shells."""
        theirs = [entry for entry in self._parked if entry.engineer == engineer]
        for entry in theirs:
            self._parked.remove(entry)
            entry.process.close()
            self.on_gone(entry.engineer, entry.key)
        return len(theirs)

    async def _watch(self, entry: Parked) -> None:
        """Hang up a shell nobody came back for; forget one that exited by itself."""
        try:
            await asyncio.wait_for(asyncio.shield(entry.process.wait()), self.grace)
        except TIMEOUTS:
            pass
        if entry in self._parked:
            self._parked.remove(entry)
            entry.process.close()
            self.on_gone(entry.engineer, entry.key)

    def close(self) -> None:
        """The session is over: hang up every parked shell."""
        for entry in self._parked:
            entry.process.close()
        self._parked.clear()
        for task in self._tasks:
            task.cancel()
