"""The status line at the bottom of the customer's terminal, kept there with a scroll region:
everything else (messages, the engineer's mirrored shell) scrolls above it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import TextIO

from assist_protocol.safetext import visible

SAVE, RESTORE = "\0337", "\0338"


class StatusLine:
    def __init__(self, out: TextIO, render: Callable[[], str]) -> None:
        self.out = out
        self.render = render
        self.rows, self.cols = 24, 80
        self._ticker: asyncio.Task[None] | None = None

    def _measure(self) -> None:
        try:
            size = os.get_terminal_size(self.out.fileno())
        except (OSError, ValueError):
            return
        self.rows, self.cols = max(size.lines, 3), max(size.columns, 20)

    def start(self) -> None:
        self._measure()
        # Free the bottom row (scroll once, step back up), then keep scrolling above it.
        self.out.write("\n\033[1A")
        self.draw()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
            loop.add_signal_handler(signal.SIGWINCH, self._resized)
        self._ticker = loop.create_task(self._tick())

    def _resized(self) -> None:
        self._measure()
        self.draw()

    async def _tick(self) -> None:
        """Redraw once a second: the time left changes, and the engineer's screen may have
        painted over the line."""
        while True:
            await asyncio.sleep(1.0)
            self.draw()

    def draw(self) -> None:
        text = visible(self.render())[: self.cols - 1]
        self.out.write(
            f"{SAVE}\033[1;{self.rows - 1}r{RESTORE}"  # the scroll region: all but the bottom
            f"{SAVE}\033[{self.rows};1H\033[2K\033[7m {text}\033[0m{RESTORE}"
        )
        self.out.flush()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        with contextlib.suppress(ValueError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGWINCH)
        self.out.write(f"{SAVE}\033[r\033[{self.rows};1H\033[2K{RESTORE}")
        self.out.flush()
