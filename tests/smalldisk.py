"""A small tmpfs mounted for one test: a real file system that really fills up.

A full disk cannot be faked convincingly (a mock would decide which call fails and how); a
tmpfs of a few MiB returns ENOSPC from the kernel, with its page-sized slack, partial writes and
``statvfs`` figures. Mounting needs root (or CAP_SYS_ADMIN); without it the test is skipped,
saying why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes at ``where`` (created), unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def free_bytes(where: Path) -> int:
    stat = os.statvfs(where)
    return stat.f_bavail * stat.f_frsize


def fill(where: Path, leave: int = 0) -> None:
    """Fill the file system of ``where`` until at most ``leave`` bytes are free (0: full, the
    kernel said ENOSPC)."""
    fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        chunk = b"\0" * 65536
        while (room := free_bytes(where) - leave) > 0:
            try:
                os.write(fd, chunk[: min(len(chunk), room)] if leave else chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    finally:
        os.close(fd)
    assert free_bytes(where) <= leave
