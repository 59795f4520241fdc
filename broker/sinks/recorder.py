"""The recorder sink (required): every shell and exec channel in asciicast v2.

A header line (size, time, TERM, a title naming ticket, engineer and customer host), then
``[seconds, "o"|"i"|"r"|"m", text]`` lines. Chunks are only appended to a list on the hot path;
once a second (and at the end) they are coalesced and JSON-encoded in bulk, written, and hashed
as written. A crash loses at most the last second. On close the file is fsync'ed and its SHA-256
and size go into the channel row and the audit chain (``recording.closed``).

**Bounded.** A channel keeps up to ``cap`` bytes of output, and of input ``cap`` on a PTY (what
is typed) or ``input_cap`` otherwise (an upload piped through a command); all the recordings of a
session keep up to ``session_cap`` bytes together. The caps count raw bytes: JSON escapes a
control byte as six, so a file can be up to about six times what it kept. Beyond a cap the
bytes are only counted and hashed (``output_bytes``/``output_sha256``, ``input_bytes``/
``input_sha256`` in ``recording.closed``, with ``truncated``), and an ``"m"`` marker says where
and why recording stopped.

**Fail closed.** Recording stops for a whole session, and the sink asks the session layer to end
it (``end_session``, a callback: the sink never imports upwards), when

- a write fails (a full disk, an I/O error): the file is cut back to its last whole line, so it
  still matches what ``recording.closed`` says of it;
- free space in the recordings folder falls under ``min_free`` (checked before each flush, once
  a second, and before a channel opens, which is then refused): the session stops while its
  recording can still be written whole, with a marker saying why;
- a new channel's recording cannot be created.

From that moment every data event of the session's channels raises, so the relay hands no
further byte to the engineer (nor to the customer), and the session ends without waiting for
more traffic. What can have reached the engineer without being in the file: only when a write
itself fails, what the failed flush held and what was relayed while it ran, i.e. about one
``FLUSH_INTERVAL`` (1 s) of the channel's traffic before the failure. Those bytes are still
counted and hashed (``output_bytes``/``output_sha256``), and ``recording.closed`` says how many
of them the file lacks (``unwritten_bytes``, with ``write_failed``). The free-space check makes
that case rare for a full disk: one that fills more slowly than ``min_free`` per second stops
sessions before any write fails, with nothing lost. It cannot foresee an I/O error, a quota or a
read-only remount.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from broker.events import ChannelClosed, ChannelOpened, Event, Input, Output, Resized
from broker.sinks.dispatch import DataEvent
from broker.sinks.recording import (
    Recording,
    RecordingUnavailable,
    SessionRecordings,
    batches,
)
from broker.store import queries as q
from broker.store.db import Store

log = structlog.get_logger(__name__)

RECORDED_KINDS = ("shell", "exec")
#: the event codes whose bursts are joined into one event (output and input, never resizes)
STREAMS = ("o", "i")
FLUSH_INTERVAL = 1.0
#: asciicast markers ("m" events) for the gap of a network drop
MARK_DROPPED = "the connection to the customer dropped"
MARK_REATTACHED = "re-attached to the shell after the customer's connection dropped"


def _size(count: int) -> str:
    """Bytes in words for a marker or a message: ``16 MiB``, ``2.5 GiB``, ``900 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the recordings folder is made on first use)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


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
        session_cap: int | None = None,
        min_free: int = 0,
    ) -> None:
        self.store = store
        self.root = root
        self.data_dir = data_dir
        self.record_input = record_input
        self.cap = cap
        #: bytes of a non-PTY input stream kept (all of it is hashed)
        self.input_cap = cap if input_cap is None else input_cap
        self.session_cap = sys.maxsize if session_cap is None else session_cap
        #: bytes that must stay free in the recordings folder (0: not checked)
        self.min_free = min_free
        #: asks the session layer to end a session whose recording stopped (by its id)
        self.end_session: Callable[[str], None] = lambda _session_id: None
        self.open: dict[str, Recording] = {}
        self.sessions: dict[str, SessionRecordings] = {}
        self._flusher: asyncio.Task[None] | None = None

    def forget(self, session_id: str) -> None:
        """The session ended: its shared state goes (its open recordings keep their own)."""
        self.sessions.pop(session_id, None)

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
        session = self.sessions.get(ref.session_id)
        if session is None:
            session = self.sessions[ref.session_id] = SessionRecordings(ref.session_id)
        if session.stopped is not None:
            raise RecordingUnavailable(str(session.stopped))
        low = self._low_space()
        if low is not None:
            self._stop(session, low)
            raise low
        try:
            fd, path, relative = self._create(ref.session_id, ref.key)
        except OSError as exc:
            self._stop(session, RecordingUnavailable(f"a recording could not be created: {exc}"))
            raise
        recording = Recording(
            path, relative, fd, time.monotonic(), bool(detail.get("pty")), session
        )
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
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            self._stop(session, RecordingUnavailable(f"a recording could not be written: {exc}"))
            raise
        if detail.get("reattach"):
            recording.pending.append((0.0, "m", [MARK_REATTACHED.encode()]))
        self.open[ref.key] = recording

    def _create(self, session_id: str, key: str) -> tuple[int, Path, str]:
        folder = self.root / session_id
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{key}.cast"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            relative = str(path.relative_to(self.data_dir))
        except ValueError:
            relative = str(path)
        return fd, path, relative

    def _low_space(self) -> RecordingUnavailable | None:
        """Why recording must stop for lack of free space, or ``None`` (one ``statvfs``)."""
        if not self.min_free:
            return None
        try:
            free = shutil.disk_usage(_existing(self.root)).free
        except OSError as exc:
            return RecordingUnavailable(f"free space in the recordings folder is unknown: {exc}")
        if free >= self.min_free:
            return None
        return RecordingUnavailable(
            f"free space in the recordings folder ({_size(free)}) is under "
            f"recordings_min_free ({_size(self.min_free)})"
        )

    def _stop(self, session: SessionRecordings, why: RecordingUnavailable) -> None:
        """Stop recording ``session``: its channels carry no further byte (the next data event
        raises), what they recorded is still written whole where the disk allows, with a
        marker saying why, and the session layer is asked to end the session."""
        if session.stopped is not None:
            return
        session.stopped = why
        marker = f"recording stopped and the session was ended: {why}".encode()
        for recording in self.open.values():
            if recording.session is session:
                recording.failed = why
                if recording.broken is None:
                    at = time.monotonic() - recording.started
                    recording.pending.append((at, "m", [marker]))
        log.error("recording_stopped", session=session.id, why=str(why))
        self.end_session(session.id)

    # --- the hot path ----------------------------------------------------------------------

    def data(self, event: DataEvent) -> None:
        recording = self.open.get(event.channel.key)
        if recording is None:
            return
        if recording.failed is not None:
            raise RecordingUnavailable(str(recording.failed))
        now = time.monotonic() - recording.started
        if isinstance(event, Resized):
            self._keep(recording, now, "r", f"{event.width}x{event.height}".encode())
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
        """Keep ``data`` in the recording as far as the caps allow (resizes count as output).
        The hot path: under the caps, a few additions and an append."""
        size, session = len(data), recording.session
        if code == "i":
            kept, cap = recording.kept_in, (self.cap if recording.pty else self.input_cap)
        else:
            kept, cap = recording.kept, self.cap
        if kept + size > cap or session.kept + size > self.session_cap:
            self._keep_part(recording, now, code, data, cap - kept)
            return
        if code == "i":
            recording.kept_in = kept + size
        else:
            recording.kept = kept + size
        session.kept += size
        pending = recording.pending
        if code in STREAMS and pending and pending[-1][1] == code and now - pending[-1][0] < 0.01:
            pending[-1][2].append(data)  # coalesce a burst into one event (never two resizes)
        else:
            pending.append((now, code, [data]))

    def _keep_part(
        self, recording: Recording, now: float, code: str, data: bytes, room: int
    ) -> None:
        """At a cap: keep what still fits, then mark the place."""
        stream = "i" if code == "i" else "o"
        session_room = self.session_cap - recording.session.kept
        cut_by = "recording_session_cap" if session_room < room else "recording_cap"
        if stream == "i" and cut_by == "recording_cap" and not recording.pty:
            cut_by = "recording_input_cap"
        fits = max(0, min(room, session_room))
        if fits:
            self._keep(recording, now, code, data[:fits])
        self._cut(recording, now, stream, cut_by)

    def _cut(self, recording: Recording, now: float, stream: str, setting: str) -> None:
        """The first time a stream hits a cap: mark the place (later chunks are only hashed)."""
        recording.truncated = True
        if stream in recording.cut:
            return
        recording.cut.add(stream)
        recording.truncated_by.add(setting)
        what = "input" if stream == "i" else "output"
        if setting == "recording_session_cap":
            reached = f"the session's recordings reached {setting} ({_size(self.session_cap)})"
        else:
            cap = self.input_cap if setting == "recording_input_cap" else self.cap
            reached = f"it reached {setting} ({_size(cap)})"
        text = (
            f"the recording of the {what} stops here: {reached}; the rest of the {what} is "
            "only counted and hashed (see recording.closed)"
        )
        recording.pending.append((now, "m", [text.encode()]))

    # --- writing ---------------------------------------------------------------------------

    def _flush(self, recording: Recording) -> None:
        if not recording.pending:
            return
        entries, recording.pending = recording.pending, []
        recording.write_entries(entries)

    async def _flush_loop(self) -> None:
        while self.open:
            await asyncio.sleep(FLUSH_INTERVAL)
            low = self._low_space()
            if low is not None:  # before writing, while the disk can still take it whole
                for session in {recording.session for recording in self.open.values()}:
                    self._stop(session, low)
            for recording in list(self.open.values()):
                if recording.broken is not None or not recording.pending:
                    continue
                # Detach here, in the loop's thread; the loop appends to the new list only.
                entries, recording.pending = recording.pending, []
                async with recording.lock:
                    try:
                        for batch in batches(entries):
                            recording.write_entries(batch)
                            await asyncio.sleep(0)  # the relay goes on between batches
                    except OSError as exc:
                        self._broken(recording, exc)

    def _broken(self, recording: Recording, exc: OSError) -> None:
        log.error("recording_write_failed", path=str(recording.path), error=str(exc))
        recording.broken = exc
        why = f"a recording of this session could not be written ({exc.strerror or exc})"
        self._stop(recording.session, RecordingUnavailable(why))

    async def _finish(self, event: ChannelClosed) -> None:
        """Close the file and record what it holds, also after a failed write (the failure was
        reported when it happened; ``write_failed`` in ``recording.closed`` says it)."""
        recording = self.open.pop(event.channel.key)
        if event.reason == "dropped":
            at = time.monotonic() - recording.started
            recording.pending.append((at, "m", [MARK_DROPPED.encode()]))
        async with recording.lock:  # a write in a worker thread finishes first
            try:
                if recording.broken is None:
                    self._flush(recording)
                    os.fsync(recording.fd)
            except OSError as exc:
                self._broken(recording, exc)
            finally:
                os.close(recording.fd)
        ref = event.channel
        sha256 = recording.file_hash.hexdigest()
        details: dict[str, Any] = {
            "path": recording.relative,
            "sha256": sha256,
            "size": recording.size,
            "record_input": self.record_input,
            "truncated": recording.truncated,
            "output_bytes": recording.stream_bytes,
            "output_sha256": recording.stream_hash.hexdigest(),
        }
        if recording.truncated_by:
            details["truncated_by"] = sorted(recording.truncated_by)
        if self.record_input:
            details.update(
                input_bytes=recording.input_bytes, input_sha256=recording.input_hash.hexdigest()
            )
        if recording.broken is not None:
            details["write_failed"] = str(recording.broken)
            # relayed (and counted in the hashes above) but lost with the failed write
            details["unwritten_bytes"] = recording.kept + recording.kept_in - recording.written
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
