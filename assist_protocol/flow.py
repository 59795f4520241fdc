"""Backpressure that stays bounded with asyncssh's channel windows.

asyncssh sends a window adjust whenever it *delivers* data and the window is below half, even
while earlier data still waits in the channel's receive buffer. Pausing a channel in the middle
of a delivery burst (which ``pause_writing`` on the other side does) therefore lets the peer send
one more window each pause/resume cycle, and the receive buffer grows without bound (measured:
170 MB for a 200 MB stream to a slow reader). Deferring the pause to the next loop turn lets each
burst drain completely, so at most one window is buffered on each side.

Standard library and asyncssh only: the helper uses it too.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Readable(Protocol):
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class ReadGate:
    """Pauses and resumes reading on a channel, pausing only between delivery bursts."""

    __slots__ = ("_applied", "_chan", "_scheduled", "_wanted")

    def __init__(self, chan: Readable | None = None) -> None:
        self._chan = chan
        self._wanted = False
        self._applied = False
        self._scheduled = False

    def attach(self, chan: Readable | None) -> None:
        self._chan = chan
        if chan is not None and self._wanted and not self._scheduled:
            self._apply()

    def pause(self) -> None:
        self._wanted = True
        if not self._scheduled and not self._applied:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._apply)

    def resume(self) -> None:
        self._wanted = False
        if self._applied:
            self._applied = False
            if self._chan is not None:
                self._chan.resume_reading()

    def _apply(self) -> None:
        self._scheduled = False
        if self._wanted and not self._applied and self._chan is not None:
            self._applied = True
            self._chan.pause_reading()
