"""Drive a program on a pseudo-terminal from a test: type, read until a pattern, resize."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import signal
import struct
import termios
from collections.abc import Sequence
from typing import Any


def _ctty() -> None:  # runs in the child
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyDriver:
    def __init__(self) -> None:
        self.master = -1
        self.proc: asyncio.subprocess.Process | None = None
        self.output = bytearray()
        self._changed = asyncio.Event()
        self._eof = False

    async def start(
        self, argv: Sequence[str], cols: int = 80, rows: int = 24, **popen: Any
    ) -> None:
        """Run ``argv`` on the terminal (``popen``: more of subprocess's arguments, such as
        ``env``, ``cwd`` or ``user``)."""
        master, slave = pty.openpty()
        self.master = master
        self.resize(cols, rows, signal_child=False)
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=_ctty, **popen
        )
        os.close(slave)
        os.set_blocking(master, False)
        asyncio.get_running_loop().add_reader(master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:
            data = b""
        if not data:
            self._eof = True
            asyncio.get_running_loop().remove_reader(self.master)
        self.output += data
        self._changed.set()

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def resize(self, cols: int, rows: int, signal_child: bool = True) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if signal_child and self.proc is not None:
            os.kill(self.proc.pid, signal.SIGWINCH)

    async def expect(
        self, pattern: bytes, timeout: float = 15.0, start: int = 0
    ) -> re.Match[bytes]:
        """Wait until the output from ``start`` on matches ``pattern``."""
        regex = re.compile(pattern)

        async def wait() -> re.Match[bytes]:
            while True:
                match = regex.search(self.output, start)
                if match:
                    return match
                if self._eof:
                    raise AssertionError(f"EOF before {pattern!r}: {bytes(self.output)!r}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} in {bytes(self.output)!r}") from None

    async def wait(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
        try:
            asyncio.get_running_loop().remove_reader(self.master)
        except (ValueError, OSError):
            pass
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
