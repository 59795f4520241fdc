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
    """A v2 checkpoint as signed (see broker.evidence.chain)."""

    seq: int
    hash: str
    prev: str
    digest: str
    message: str
    sshsig: str
    key_id: str

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"


class CheckpointLog:
    def __init__(self, path: Path) -> None:
        self.path = path

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

    def read(self) -> tuple[list[Signed], list[str]]:
        """The checkpoints in the file, and the problems of lines that are not checkpoints."""
        if not self.path.exists():
            return [], []
        points: list[Signed] = []
        problems: list[str] = []
        text = self.path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
                points.append(
                    Signed(
                        seq=int(fields["seq"]),
                        hash=str(fields["hash"]),
                        prev=str(fields["prev"]),
                        digest=str(fields["digest"]),
                        message=str(fields["message"]),
                        sshsig=str(fields["sshsig"]),
                        key_id=str(fields["key_id"]),
                    )
                )
            except (ValueError, KeyError, TypeError):
                problems.append(f"line {number} of {self.path.name} is not a checkpoint")
        return points, problems

    def last(self) -> Signed | None:
        points, _ = self.read()
        return max(points, key=lambda p: p.seq, default=None)
