"""The broker's end of the control channel: a ``session`` channel running the control
subsystem, one message per line each way (the messages: assist_protocol.messages)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import asyncssh
import structlog

from assist_protocol import messages as msg
from assist_protocol.constants import CONTROL_MAX_LINE as MAX_LINE
from assist_protocol.constants import CONTROL_SUBSYSTEM

#: control messages a helper may send in one second (people type a few a minute)
MAX_RATE = 20

log = structlog.get_logger(__name__)


class ControlSession(asyncssh.SSHServerSession[bytes]):
    """Accepts only the control subsystem; no shell, no exec, no PTY for helpers."""

    def __init__(
        self,
        on_open: Callable[[ControlSession], None],
        on_message: Callable[[msg.Message], None],
        on_close: Callable[[], None],
    ) -> None:
        self._on_open = on_open
        self._on_message = on_message
        self._on_close = on_close
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._buffer = b""
        self._window_start = 0.0
        self._count = 0

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: Any, term_modes: Any) -> bool:
        return False

    def shell_requested(self) -> bool:
        return False

    def exec_requested(self, command: str) -> bool:
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == CONTROL_SUBSYSTEM

    def session_started(self) -> None:
        self._on_open(self)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if len(line) > MAX_LINE or not self._allowed_now():
                log.warning("control_abuse", line_bytes=len(line))
                self.close()
                return
            self._dispatch(line)
        if len(self._buffer) > MAX_LINE:
            log.warning("control_line_too_long")
            self.close()

    def _allowed_now(self) -> bool:
        """At most ``MAX_RATE`` messages a second: a helper that floods is cut off."""
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._count = now, 0
        self._count += 1
        return self._count <= MAX_RATE

    def _dispatch(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = msg.decode(line)
        except msg.ProtocolError as exc:
            log.warning("control_message_refused", error=str(exc))
            self.send(msg.Error(f"not understood: {exc}"))
            return
        if not isinstance(message, msg.HELPER_TO_BROKER):
            log.warning("control_message_refused", type=message.TYPE)
            self.send(msg.Error(f"a helper does not send {message.TYPE!r}"))
            return
        self._on_message(message)

    def send(self, message: msg.Message) -> None:
        if self._chan is not None:
            try:
                self._chan.write(msg.encode(message))
            except BrokenPipeError:
                pass  # the helper is gone; its connection_lost tells the rest

    def close(self) -> None:
        if self._chan is not None:
            self._chan.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._chan = None
        self._on_close()
