"""The customer's keyboard and screen: printing, questions, and (on a terminal) single keys.

One daemon thread reads standard input as it comes (an unanswered question never blocks the
helper from exiting). On a terminal, once the session runs, the keyboard switches to single keys
(``q`` ends, ``r`` removes one engineer) and the bottom line shows the status; elsewhere (pipes,
logs) the customer types whole lines (``end``, ``remove NAME``) and reads one line per event.
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import contextlib
import os
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from typing import TextIO

from agent_client.screen import StatusLine
from assist_protocol.safetext import visible


class Console:
    def __init__(self, out: TextIO = sys.stdout, inp: TextIO = sys.stdin) -> None:
        self.out = out
        self.inp = inp
        self._chunks: asyncio.Queue[tuple[float, str] | None] | None = None
        self._buffer = ""
        #: input read before this moment answers nothing (see :meth:`discard_input`)
        self._since = 0.0
        #: the status line, while the session runs on a terminal
        self.status: StatusLine | None = None
        #: single keys instead of lines (a terminal in cbreak mode)
        self.keyed = False

    @property
    def interactive(self) -> bool:
        try:
            return self.inp.isatty() and self.out.isatty()
        except ValueError:
            return False

    def say(self, text: str) -> None:
        """Print a message. Its lines are the helper's own; anything else in it that could
        drive the terminal is shown as an escape (the last wall: values from outside are made
        visible where they come in)."""
        print(visible(text, keep_newlines=True), file=self.out, flush=True)
        if self.status is not None:
            self.status.draw()

    # --- input -----------------------------------------------------------------------------

    def _start(self) -> asyncio.Queue[tuple[float, str] | None]:
        if self._chunks is None:
            loop = asyncio.get_running_loop()
            chunks: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()
            fd = self.inp.fileno()

            def read() -> None:
                decoder = codecs.getincrementaldecoder("utf-8")("replace")
                while True:
                    try:
                        data = os.read(fd, 1024)
                    except OSError:
                        data = b""
                    # stamped when read: a chunk read before a question was shown is
                    # dropped even if it reaches the loop after the question
                    chunk = (time.monotonic(), decoder.decode(data)) if data else None
                    loop.call_soon_threadsafe(chunks.put_nowait, chunk)
                    if not data:
                        return

            threading.Thread(target=read, name="customer-input", daemon=True).start()
            self._chunks = chunks
        return self._chunks

    async def _more(self) -> bool:
        chunks = self._start()
        chunk = await chunks.get()
        if chunk is None:
            chunks.put_nowait(None)  # input stays ended
            return False
        read_at, text = chunk
        if read_at >= self._since:
            self._buffer += text
        return True

    async def next_line(self) -> str | None:
        """The customer's next line, or ``None`` once input has ended."""
        while "\n" not in self._buffer:
            if not await self._more():
                line, self._buffer = self._buffer, ""
                return line or None
        line, _, self._buffer = self._buffer.partition("\n")
        return line + "\n"

    def discard_input(self) -> None:
        """Forget what was typed but not read yet: what waits in the terminal, in the reader
        thread's hands and here. Only keys pressed from now on count."""
        if self.keyed:
            with contextlib.suppress(termios.error, OSError):
                termios.tcflush(self.inp.fileno(), termios.TCIFLUSH)
        self._since = time.monotonic()
        self._buffer = ""
        if self._chunks is not None:
            while not self._chunks.empty():
                if self._chunks.get_nowait() is None:
                    self._chunks.put_nowait(None)  # end of input stays
                    break

    async def next_key(self) -> str | None:
        """The next key pressed (in single-key mode), or ``None`` once input has ended."""
        while not self._buffer:
            if not await self._more():
                return None
        key, self._buffer = self._buffer[0], self._buffer[1:]
        return key

    @contextlib.contextmanager
    def single_keys(self) -> Iterator[None]:
        """On a terminal: keys without Enter, not echoed; Ctrl-C still interrupts."""
        if not self.interactive:
            yield
            return
        fd = self.inp.fileno()
        saved = termios.tcgetattr(fd)

        def restore() -> None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)

        atexit.register(restore)  # also when the helper dies some other way
        tty.setcbreak(fd)
        self.keyed = True
        try:
            yield
        finally:
            self.keyed = False
            restore()
            atexit.unregister(restore)

    async def ask(self, question: str) -> str:
        """Ask and return the lower-cased answer ("" for end of input)."""
        self.out.write(visible(question, keep_newlines=True))
        self.out.flush()
        line = await self.next_line()
        if not (line and line.endswith("\n") and self.inp.isatty()):
            self.out.write("\n")  # the terminal echoed nothing (piped input, or end of input)
        return (line or "").strip().lower()

    async def ask_yes_no(self, question: str) -> bool:
        """Only "y" or "yes" is a yes; anything else, or end of input, is a no."""
        return await self.ask(question) in ("y", "yes")
