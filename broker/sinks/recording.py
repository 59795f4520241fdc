"""One recording file as the recorder keeps it: what it holds and hashes while it is written,
and how its entries become asciicast lines (:mod:`broker.sinks.recorder` decides what goes in)."""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: raw bytes encoded per write (JSON can be 6x larger for control bytes)
WRITE_BATCH = 256 * 1024
#: ``(seconds, code, chunks)``: the chunks of one burst are joined only when written
Entry = tuple[float, str, list[bytes]]


class RecordingUnavailable(Exception):
    """Recording stopped for a whole session; the text says why, in plain words."""


@dataclass(eq=False)
class SessionRecordings:
    """What the recordings of one session share while it lives."""

    id: str
    #: bytes kept by all of its recordings together (``session_cap``)
    kept: int = 0
    #: set once recording stopped for the session: none of its channels may carry data
    stopped: RecordingUnavailable | None = None


@dataclass
class Recording:
    path: Path
    relative: str
    fd: int
    started: float
    pty: bool
    session: SessionRecordings
    #: ``[seconds, code, chunks]``: chunks of one burst are joined only when written
    pending: list[Entry] = field(default_factory=list)
    kept: int = 0
    truncated: bool = False
    #: the settings that cut this recording short, and the streams ("o", "i") they cut
    truncated_by: set[str] = field(default_factory=set)
    cut: set[str] = field(default_factory=set)
    size: int = 0
    file_hash: Any = field(default_factory=hashlib.sha256)
    stream_hash: Any = field(default_factory=hashlib.sha256)
    stream_bytes: int = 0
    #: what the engineer sent, all of it (when input is recorded), and how much was kept
    input_hash: Any = field(default_factory=hashlib.sha256)
    input_bytes: int = 0
    kept_in: int = 0
    #: of the bytes kept (``kept`` + ``kept_in``), how many are in the file
    written: int = 0
    decoders: dict[str, Any] = field(default_factory=dict)
    #: raised at the next data event: recording stopped for the session
    failed: Exception | None = None
    #: the write that failed; nothing more is written to the file then
    broken: OSError | None = None
    #: held while detached entries are written in a worker thread
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def write(self, data: bytes) -> None:
        """Append ``data`` whole, or leave the file as it was: a write cut short (ENOSPC after
        the last free page) is undone, so the file still matches its size and hash."""
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, view[done:])
        except OSError:
            if done:
                try:
                    os.ftruncate(self.fd, self.size)  # shrinking needs no free space
                except OSError:  # the bytes stay: then the record says they are there
                    self.file_hash.update(view[:done])
                    self.size += done
            raise
        self.file_hash.update(data)
        self.size += len(data)

    def write_entries(self, entries: list[Entry]) -> None:
        """Encode ``entries`` taken off ``pending`` as asciicast lines and write them."""
        lines: list[str] = []
        batched = kept = 0
        for at, code, parts in entries:
            data = b"".join(parts)
            if code in ("r", "m"):
                text = data.decode()
            else:
                decoder = self.decoders.setdefault(
                    code, codecs.getincrementaldecoder("utf-8")("replace")
                )
                text = decoder.decode(data)
            lines.append(json.dumps([round(at, 6), code, text], ensure_ascii=False))
            batched += len(data)
            kept += 0 if code == "m" else len(data)
            if batched >= WRITE_BATCH:  # bounded memory: a burst is written in pieces
                self.write(("\n".join(lines) + "\n").encode())
                self.written += kept
                lines, batched, kept = [], 0, 0
        if lines:
            self.write(("\n".join(lines) + "\n").encode())
            self.written += kept


def batches(entries: list[Entry]) -> list[list[Entry]]:
    """Entries in groups of about WRITE_BATCH raw bytes (a long burst is split too)."""
    groups: list[list[Entry]] = [[]]
    size = 0
    for at, code, parts in entries:
        current: list[bytes] | None = None  # this entry's parts in the current batch
        for part in parts:
            if size >= WRITE_BATCH:
                groups.append([])
                size, current = 0, None
            if current is None:
                current = [part]
                groups[-1].append((at, code, current))
            else:
                current.append(part)
            size += len(part)
    return [group for group in groups if group]
