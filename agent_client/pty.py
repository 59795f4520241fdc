"""Processes the helper runs for an engineer: a shell on its own PTY, or a command on pipes.

The helper owns each process apart from the channel that asked for it (a ``Sink`` attaches to
it), so that later a shell can outlive a dropped connection and be watched by the customer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pty
import signal
import struct
import termios
from collections.abc import Sequence
from typing import Protocol

CHUNK = 64 * 1024
#: output a shell keeps for a re-attach after a network drop (about a screen or two)
SCROLLBACK = 8 * 1024
#: stop reading from the engineer when this much input waits for the process
INPUT_HIGH_WATER = 1024 * 1024

SIGNALS = {
    name: getattr(signal, "SIG" + name)
    for name in (
        "ABRT",
        "ALRM",
        "FPE",
        "HUP",
        "ILL",
        "INT",
        "KILL",
        "PIPE",
        "QUIT",
        "SEGV",
        "TERM",
        "USR1",
        "USR2",
        "WINCH",
    )
}


class Sink(Protocol):
    """Where a process's output goes (the SSH channel)."""

    def output(self, data: bytes, stderr: bool) -> None: ...

    def input_paused(self, paused: bool) -> None: ...


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def set_winsize(fd: int, cols: int, rows: int, xpixel: int = 0, ypixel: int = 0) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xpixel, ypixel))


class PtyProcess:
    """A process on a fresh PTY, as the user running the helper."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.master = -1
        self.proc: asyncio.subprocess.Process | None = None
        self._loop = asyncio.get_running_loop()
        self._outbuf = bytearray()
        self._reading = False
        self._paused = False
        self._input_paused = False
        self._closed = False
        #: the last output, re-sent when an engineer re-attaches after a drop
        self._recent = bytearray()

    def attach(self, sink: Sink) -> None:
        """Send output to ``sink`` from now on (a new channel, or the park during a drop)."""
        self.sink = sink
        if self._input_paused:
            self._input_paused = False
            sink.input_paused(False)

    def scrollback(self) -> bytes:
        """The last output, from a line start where possible."""
        tail = bytes(self._recent[-SCROLLBACK:])
        cut = tail.find(b"\n")
        return tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail

    @property
    def running(self) -> bool:
        return not self._closed and self.proc is not None and self.proc.returncode is None

    def redraw(self) -> None:
        """Ask the program on the terminal to redraw its screen (as after a window resize)."""
        self.send_signal("WINCH")

    async def start(
        self, argv: Sequence[str], env: dict[str, str], cwd: str, size: tuple[int, int]
    ) -> None:
        master, slave = pty.openpty()
        self.master = master
        try:
            set_winsize(slave, max(size[0], 1), max(size[1], 1))
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                cwd=cwd,
                preexec_fn=_child_setup,  # setsid + controlling tty; the helper runs no threads
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._start_reading()

    # --- output ----------------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self._closed and not self._paused:
            self._loop.add_reader(self.master, self._read_ready)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.master)
            self._reading = False

    def _read_ready(self) -> None:
        try:
            data = os.read(self.master, CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: every slave side is closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._stop_reading()
            return
        self._recent += data
        if len(self._recent) > 2 * SCROLLBACK:
            del self._recent[:-SCROLLBACK]
        self.sink.output(data, False)

    def pause_output(self) -> None:
        self._paused = True
        self._stop_reading()

    def resume_output(self) -> None:
        self._paused = False
        self._start_reading()

    def drain_output(self) -> None:
        """After the process exited: pass on what is still in the PTY."""
        while not self._closed:
            try:
                data = os.read(self.master, CHUNK)
            except OSError:
                return
            if not data:
                return
            self.sink.output(data, False)

    # --- input -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        if not self._outbuf:
            try:
                written = os.write(self.master, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return
            data = data[written:]
            if not data:
                return
            self._loop.add_writer(self.master, self._write_ready)
        self._outbuf += data
        if len(self._outbuf) > INPUT_HIGH_WATER and not self._input_paused:
            self._input_paused = True
            self.sink.input_paused(True)

    def _write_ready(self) -> None:
        try:
            written = os.write(self.master, self._outbuf)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._outbuf)
        del self._outbuf[:written]
        if not self._outbuf:
            self._loop.remove_writer(self.master)
        if self._input_paused and len(self._outbuf) < INPUT_HIGH_WATER // 2:
            self._input_paused = False
            self.sink.input_paused(False)

    def write_eof(self) -> None:
        """A PTY has no half-close; like sshd, keep the shell running."""

    def resize(self, cols: int, rows: int, xpixel: int = 0, ypixel: int = 0) -> None:
        if not self._closed:
            set_winsize(self.master, max(cols, 1), max(rows, 1), xpixel, ypixel)

    def send_signal(self, name: str) -> None:
        """Signal the foreground process group of the terminal (like a key would)."""
        signum = SIGNALS.get(name.upper())
        if signum is None or self.proc is None or self.proc.returncode is not None:
            return
        try:
            pgid = os.tcgetpgrp(self.master)
        except OSError:
            pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    def close(self) -> None:
        """Hang up: the shell gets SIGHUP like after a closed terminal window."""
        if self._closed:
            return
        self._stop_reading()
        if self._outbuf:
            self._loop.remove_writer(self.master)
        self._closed = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGHUP)
        os.close(self.master)


class PipeProcess:
    """A command without a PTY: stdin, stdout and stderr kept apart."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.proc: asyncio.subprocess.Process | None = None
        self._resume = asyncio.Event()
        self._resume.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._input: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._input_paused = False

    async def start(self, argv: Sequence[str], env: dict[str, str], cwd: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._tasks = [
            asyncio.create_task(self._pump(self.proc.stdout, False)),
            asyncio.create_task(self._pump(self.proc.stderr, True)),
            asyncio.create_task(self._feed()),
        ]

    async def _pump(self, stream: asyncio.StreamReader, stderr: bool) -> None:
        while data := await stream.read(CHUNK):
            await self._resume.wait()
            self.sink.output(data, stderr)

    async def _feed(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        stdin = self.proc.stdin
        try:
            while (data := await self._input.get()) is not None:
                stdin.write(data)
                await stdin.drain()
                self._queued -= len(data)
                if self._input_paused and self._queued < INPUT_HIGH_WATER // 2:
                    self._input_paused = False
                    self.sink.input_paused(False)
            stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the command stopped reading; its exit status tells the rest

    def write(self, data: bytes) -> None:
        self._queued += len(data)
        self._input.put_nowait(data)
        if self._queued > INPUT_HIGH_WATER and not self._input_paused:
            self._input_paused = True
            self.sink.input_paused(True)

    def write_eof(self) -> None:
        self._input.put_nowait(None)

    def pause_output(self) -> None:
        self._resume.clear()

    def resume_output(self) -> None:
        self._resume.set()

    def send_signal(self, name: str) -> None:
        signum = SIGNALS.get(name.upper())
        if signum is not None and self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self.proc.send_signal(signum)

    async def wait(self) -> int:
        assert self.proc is not None
        status = await self.proc.wait()
        await asyncio.gather(*self._tasks[:2], return_exceptions=True)  # all output passed on
        return status

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGHUP)
