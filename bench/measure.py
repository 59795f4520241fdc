"""The measurements, each one run the same way against either path (a list of ssh arguments)."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import statistics
import subprocess
import time
import tty
from pathlib import Path


def bulk(ssh: list[str], data: Path) -> float:
    """Seconds to push ``data`` through ``ssh ... 'cat > /dev/null'``."""
    with data.open("rb") as source:
        start = time.perf_counter()
        subprocess.run([*ssh, "cat > /dev/null"], stdin=source, check=True)
        return time.perf_counter() - start


def sftp_upload(sftp: list[str], data: Path) -> float:
    """Seconds for ``sftp`` to put ``data`` to /dev/null on the far side."""
    batch = f"put {data} /dev/null\n".encode()
    start = time.perf_counter()
    subprocess.run(
        [*sftp[:1], "-b", "-", *sftp[1:]],
        input=batch,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def setup(ssh: list[str], times: int = 10) -> float:
    """Median seconds of ``ssh ... true`` (connect, authenticate, run, close)."""
    took = []
    for _ in range(times):
        start = time.perf_counter()
        subprocess.run([*ssh, "true"], check=True)
        took.append(time.perf_counter() - start)
    return statistics.median(took)


def _read_until(fd: int, wanted: bytes, timeout: float) -> None:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {wanted!r} in {seen[-200:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: ssh has exited and its terminal is gone
                chunk = b""
            if not chunk:
                raise EOFError(f"ssh ended before {wanted!r}; it printed {seen[-300:]!r}")
            seen += chunk


def pty_echo(ssh: list[str], count: int = 1000) -> list[float]:
    """Round trips of one keystroke through a remote PTY (the remote tty echoes it), in
    microseconds, typed from a local PTY as a person would."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        tty.setraw(0)  # no local echo: every echo seen comes from the far PTY
        os.execvp(ssh[0], [*ssh[:1], "-tt", *ssh[1:], "stty -icanon min 1; cat"])
    try:
        os.write(fd, b"R")
        _read_until(fd, b"R", 30)  # connected, the remote PTY echoes
        took = []
        for i in range(count):
            key = bytes([97 + i % 26])
            start = time.perf_counter()
            os.write(fd, key)
            _read_until(fd, key, 10)
            took.append((time.perf_counter() - start) * 1e6)
        return took
    finally:
        os.write(fd, b"\x03")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        os.close(fd)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]
