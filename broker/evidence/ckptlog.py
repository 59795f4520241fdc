"""The checkpoint log: every checkpoint this broker signs, also kept outside the database.

``audit_checkpoints.log`` in the data dir (mode 0600), one JSON object per line, only ever
appended to (``O_APPEND``, fsync'ed, under an exclusive ``flock`` so that the broker and a
command line writing at the same moment do not interleave). Someone who can write the database
but not the data dir cannot make a checkpoint disappear: ``audit verify`` and the broker, before
it signs again, require every checkpoint in this file to be in the database and to match the
chain. The broker writes a line after the database has committed the checkpoint, so a crash
between the two leaves a checkpoint in the database that the log lacks (harmless: it is
signed), never the reverse.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

LOG_FILE = "audit_checkpoints.log"


@dataclass(frozen=True)
class Signed:
    """A v2 checkpoint as signed (see broker.store.chain)."""

    seq: int
    hash: str
    prev: str
    digest: str
    message: str
    sshsig: str
    key_id: str

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"


#: bytes read from the end of the file to find its newest checkpoint (many lines' worth)
TAIL = 64 * 1024


def _parse(line: str) -> Signed | None:
    try:
        fields = json.loads(line)
        return Signed(
            seq=int(fields["seq"]),
            hash=str(fields["hash"]),
            prev=str(fields["prev"]),
            digest=str(fields["digest"]),
            message=str(fields["message"]),
            sshsig=str(fields["sshsig"]),
            key_id=str(fields["key_id"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


class CheckpointLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        #: (file size, newest checkpoint) when last looked at
        self._last: tuple[int, Signed | None] | None = None

    @classmethod
    def of(cls, data_dir: Path) -> CheckpointLog:
        return cls(data_dir / LOG_FILE)

    def append(self, point: Signed) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = point.line().encode()
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock

    def read(self, offset: int = 0) -> tuple[list[Signed], list[str]]:
        """The checkpoints in the file (from byte ``offset``), and the problems of lines that
        are not checkpoints."""
        points, problems, _ = self.read_from(offset)
        return points, problems

    def entries(self, offset: int) -> list[tuple[Signed | None, int]]:
        """Each complete line from byte ``offset`` on: its checkpoint (``None`` if the line is
        not one) and the offset just after it. A line still being written is left out."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        found: list[tuple[Signed | None, int]] = []
        at = 0
        while (end := data.find(b"\n", at)) >= 0:
            line = data[at:end].decode("utf-8", "replace")
            if line.strip():
                found.append((_parse(line), offset + end + 1))
            at = end + 1
        return found

    def read_from(self, offset: int) -> tuple[list[Signed], list[str], int]:
        """The checkpoints from byte ``offset`` on, the problems of lines that are not
        checkpoints, and the offset after the last complete line."""
        entries = self.entries(offset)
        points = [p for p, _ in entries if p is not None]
        problems = [
            f"a line of {self.path.name} is not a checkpoint" for p, _ in entries if p is None
        ]
        return points, problems, entries[-1][1] if entries else offset

    def last(self) -> Signed | None:
        """The newest checkpoint (highest seq) among the file's last lines: read from the end,
        not the whole file, which grows by a line every few seconds for as long as the broker
        runs (checked before every signature, with the store's write lock held)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return None
        if self._last is not None and self._last[0] == size:
            return self._last[1]
        tail = TAIL
        while True:
            start = max(0, size - tail)
            points, _, _ = self.read_from(start)
            if start > 0:
                points = points[1:]  # the first line read may be cut
            if points or start == 0:
                break
            tail *= 4
        newest = max(points, key=lambda p: p.seq, default=None)
        self._last = (size, newest)
        return newest
