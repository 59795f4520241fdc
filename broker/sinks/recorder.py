"""The recorder sink (required): every shell and exec channel in asciicast v2.

A header line (size, time, TERM, a title naming ticket, engineer and customer host), then
``[seconds, "o"|"i"|"r", text]`` lines. Chunks are only appended to a list on the hot path; once a
second (and at the end) they are coalesced and JSON-encoded in bulk, written, and hashed as
written. A crash loses at most the last second. On close the file is fsync'ed and its SHA-256 and
size go into the channel row and the audit chain (``recording.closed``).

Non-PTY streams are kept up to ``cap`` bytes of output and ``input_cap`` bytes of input; beyond
that they are only counted and hashed (``output_sha256``, ``input_sha256`` in the audit).
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from broker.events import ChannelClosed, ChannelOpened, Event, Input, Output, Resized
from broker.relay.dispatch import DataEvent
from broker.store import queries as q
from broker.store.db import Store

log = structlog.get_logger(__name__)

RECORDED_KINDS = ("shell", "exec")
FLUSH_INTERVAL = 1.0
#: raw bytes encoded per write (JSON can be 6x larger for control bytes)
WRITE_BATCH = 256 * 1024
#: asciicast markers ("m" events) for the gap of a network drop
MARK_DROPPED = "the connection to the customer dropped"
MARK_REATTACHED = "re-attached to the shell after the customer's connection dropped"


@dataclass
class Recording:
    path: Path
    relative: str
    fd: int
    started: float
    pty: bool
    #: ``[seconds, code, chunks]``: chunks of one burst are joined only when written
    pending: list[tuple[float, str, list[bytes]]] = field(default_factory=list)
    kept: int = 0
    truncated: bool = False
    size: int = 0
    file_hash: Any = field(default_factory=hashlib.sha256)
    stream_hash: Any = field(default_factory=hashlib.sha256)
    stream_bytes: int = 0
    #: what the engineer sent, all of it (when input is recorded), and how much was kept
    input_hash: Any = field(default_factory=hashlib.sha256)
    input_bytes: int = 0
    kept_in: int = 0
    decoders: dict[str, Any] = field(default_factory=dict)
    failed: Exception | None = None
    #: held while detached entries are written in a worker thread
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.file_hash.update(data)
        self.size += len(data)


def _batches(
    entries: list[tuple[float, str, list[bytes]]],
) -> list[list[tuple[float, str, list[bytes]]]]:
    """Entries in groups of about WRITE_BATCH raw bytes (a long burst is split too)."""
    batches: list[list[tuple[float, str, list[bytes]]]] = [[]]
    size = 0
    for at, code, parts in entries:
        for part in parts:
            if size >= WRITE_BATCH:
                batches.append([])
                size = 0
            last = batches[-1]
            if last and last[-1][0] == at and last[-1][1] == code:
                last[-1][2].append(part)
            else:
                last.append((at, code, [part]))
            size += len(part)
    return [batch for batch in batches if batch]


class RecorderSink:
    name = "recorder"
    required = True
    wants_data = True

    def __init__(
        self,
        store: Store,
        root: Path,
        data_dir: Path,
        *,
        record_input: bool,
        cap: int,
        input_cap: int | None = None,
    ) -> None:
        self.store = store
        self.root = root
        self.data_dir = data_dir
        self.record_input = record_input
        self.cap = cap
        #: bytes of a non-PTY input stream kept (all of it is hashed)
        self.input_cap = cap if input_cap is None else input_cap
        self.open: dict[str, Recording] = {}
        self._flusher: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        if isinstance(event, ChannelOpened) and event.channel.kind in RECORDED_KINDS:
            self._start(event)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        elif isinstance(event, ChannelClosed) and event.channel.key in self.open:
            await self._finish(event)

    def _start(self, event: ChannelOpened) -> None:
        ref, detail = event.channel, event.detail
        folder = self.root / ref.session_id
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{ref.key}.cast"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            relative = str(path.relative_to(self.data_dir))
        except ValueError:
            relative = str(path)
        recording = Recording(path, relative, fd, time.monotonic(), bool(detail.get("pty")))
        what = "shell" if ref.kind == "shell" else f"command: {detail.get('command', '')}"
        header = {
            "version": 2,
            "width": int(detail.get("width") or 80),
            "height": int(detail.get("height") or 24),
            "timestamp": int(time.time()),
            "env": {"TERM": str(detail.get("term") or ""), "SHELL": ""},
            "title": (
                f"{ref.ticket_key}: {ref.engineer_name} on "
                f"{detail.get('customer_host', 'the customer')} ({what})"
            ),
            "assist": {
                "session": ref.session_id,
                "channel": ref.key,
                "record_input": self.record_input,
            },
        }
        try:
            recording.write(json.dumps(header, ensure_ascii=False).encode() + b"\n")
        except OSError:
            os.close(fd)
            raise
        if detail.get("reattach"):
            recording.pending.append((0.0, "m", [MARK_REATTACHED.encode()]))
        self.open[ref.key] = recording

    # --- the hot path ----------------------------------------------------------------------

    def data(self, event: DataEvent) -> None:
        recording = self.open.get(event.channel.key)
        if recording is None:
            return
        if recording.failed is not None:
            raise recording.failed
        now = time.monotonic() - recording.started
        if isinstance(event, Resized):
            recording.pending.append((now, "r", [f"{event.width}x{event.height}".encode()]))
            return
        if isinstance(event, Input):
            if self.record_input:
                recording.input_hash.update(event.data)
                recording.input_bytes += len(event.data)
                self._keep(recording, now, "i", event.data)
            return
        assert isinstance(event, Output)
        recording.stream_hash.update(event.data)
        recording.stream_bytes += len(event.data)
        self._keep(recording, now, "o", event.data)

    def _keep(self, recording: Recording, now: float, code: str, data: bytes) -> None:
        if not recording.pty:
            # A bulk upload's bytes say little to an auditor once hashed: input keeps less.
            kept = recording.kept_in if code == "i" else recording.kept
            room = (self.input_cap if code == "i" else self.cap) - kept
            if room <= 0:
                recording.truncated = True
                return
            if len(data) > room:
                data, recording.truncated = data[:room], True
            if code == "i":
                recording.kept_in += len(data)
            else:
                recording.kept += len(data)
        pending = recording.pending
        if pending and pending[-1][1] == code and now - pending[-1][0] < 0.01:
            pending[-1][2].append(data)  # coalesce a burst into one event
        else:
            pending.append((now, code, [data]))

    # --- writing ---------------------------------------------------------------------------

    def _flush(self, recording: Recording) -> None:
        if not recording.pending:
            return
        entries, recording.pending = recording.pending, []
        self._write_entries(recording, entries)

    @staticmethod
    def _write_entries(recording: Recording, entries: list[tuple[float, str, list[bytes]]]) -> None:
        """Encode and write entries taken off ``pending``."""
        lines: list[str] = []
        batched = 0
        for at, code, parts in entries:
            data = b"".join(parts)
            if code in ("r", "m"):
                text = data.decode()
            else:
                decoder = recording.decoders.setdefault(
                    code, codecs.getincrementaldecoder("utf-8")("replace")
                )
                text = decoder.decode(data)
            lines.append(json.dumps([round(at, 6), code, text], ensure_ascii=False))
            batched += len(data)
            if batched >= WRITE_BATCH:  # bounded memory: a burst is written in pieces
                recording.write(("\n".join(lines) + "\n").encode())
                lines, batched = [], 0
        if lines:
            recording.write(("\n".join(lines) + "\n").encode())

    async def _flush_loop(self) -> None:
        while self.open:
            await asyncio.sleep(FLUSH_INTERVAL)
            for recording in list(self.open.values()):
                if recording.failed is not None or not recording.pending:
                    continue
                # Detach here, in the loop's thread; the loop appends to the new list only.
                entries, recording.pending = recording.pending, []
                async with recording.lock:
                    try:
                        for batch in _batches(entries):
                            self._write_entries(recording, batch)
                            await asyncio.sleep(0)  # the relay goes on between batches
                    except OSError as exc:
                        log.error(
                            "recording_write_failed", path=str(recording.path), error=str(exc)
                        )
                        recording.failed = exc

    async def _finish(self, event: ChannelClosed) -> None:
        recording = self.open.pop(event.channel.key)
        if event.reason == "dropped":
            at = time.monotonic() - recording.started
            recording.pending.append((at, "m", [MARK_DROPPED.encode()]))
        async with recording.lock:  # a write in a worker thread finishes first
            try:
                if recording.failed is None:
                    self._flush(recording)
                    os.fsync(recording.fd)
            finally:
                os.close(recording.fd)
        ref = event.channel
        sha256 = recording.file_hash.hexdigest()
        details = {
            "path": recording.relative,
            "sha256": sha256,
            "size": recording.size,
            "record_input": self.record_input,
            "truncated": recording.truncated,
            "output_bytes": recording.stream_bytes,
            "output_sha256": recording.stream_hash.hexdigest(),
        }
        if self.record_input:
            details.update(
                input_bytes=recording.input_bytes, input_sha256=recording.input_hash.hexdigest()
            )
        async with self.store.begin() as db:
            row = await q.channel_by_ref(db, ref.key)
            if row is not None:
                row.recording_path = recording.relative
                row.recording_sha256 = sha256
                row.recording_size = recording.size
            await q.append_audit(
                db,
                action="recording.closed",
                actor="broker",
                ticket_id=ref.ticket_id,
                session_id=ref.session_id,
                details={"channel_id": row.id if row else None, **details},
            )
        if recording.failed is not None:
            raise recording.failed
