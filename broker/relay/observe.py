"""Observers: ``ssh -t T-1+watch@broker`` shows a live, read-only copy of an open PTY shell on
the ticket's session (``observe`` must be in the consent). A watcher first gets the shell's
screen as it is now (:mod:`broker.relay.screen`), then its output as it comes. Keys are
discarded, except Ctrl-D and Ctrl-C, which leave; the shell's size follows its driver. An
observer that cannot keep up is dropped rather than slowing the driver.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

import asyncssh
import structlog

from assist_protocol.scope import ChannelRequest
from broker.errors import BrokerError, Denied, NotFound
from broker.events import ChannelClosed, ChannelOpened, ChannelRef
from broker.relay.ports import Engineer, Watched

log = structlog.get_logger(__name__)

#: an observer further behind than this is dropped
MAX_BEHIND = 1024 * 1024
#: the keys that leave a watch: Ctrl-C, Ctrl-D (and ssh's own ``~.``)
LEAVE_KEYS = frozenset(b"\x03\x04")


class ObserverSession(asyncssh.SSHServerSession[bytes]):
    def __init__(self, edge: Engineer) -> None:
        self.edge = edge
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.driver: Watched | None = None
        self.ref: ChannelRef | None = None
        #: the channel's number in its session, once admitted
        self.channel: int | None = None
        self.bytes_out = 0
        self.reason = "engineer"
        self._began = time.monotonic()
        self._finished = False
        #: what the engineer reads of a refused request, said once the channel has started
        self.refused: str | None = None
        #: admission under way (the customer may be asked); Ctrl-D / Ctrl-C leave meanwhile
        self.waiting = False
        self.left = False

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        self.edge.relays.add(self)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True  # refused with a message once started

    def subsystem_requested(self, subsystem: str) -> bool:
        reason = "a watch connection only watches a shell"
        self.edge.refuse_soon("subsystem", reason, subsystem=subsystem[:100])
        self.refused = reason  # said once started (see relay.pump)
        return True

    async def _say_refused(self, reason: str) -> None:
        self.stop(await self.edge.refusal(reason))

    def session_started(self) -> None:
        if self.refused is not None:
            self.reason = "refused"
            self.edge.ctx.spawn(
                self._say_refused(self.refused), "observe-refused", self.edge.log_context
            )
            return
        self.edge.ctx.spawn(self._attach(), "observe", self.edge.log_context)

    async def _attach(self) -> None:
        edge = self.edge
        try:
            if self.chan is not None and self.chan.get_command() is not None:
                raise Denied("A watch connection only shows the open shell; it runs nothing.")
            self.waiting = True
            try:
                live, admitted = await edge.admit(
                    "observe", ChannelRequest("observe"), "", {}, self
                )
            finally:
                self.waiting = False
            self.channel = admitted.channel
            watched = live.channel(admitted.watched) if admitted.watched is not None else None
            if not isinstance(watched, Watched) or watched.ref is None:
                raise NotFound(f"No shell is open on {edge.ticket} to watch yet.")
            driver, driving = watched, watched.ref
            self.ref = edge.ref(live, "observe")
            detail = {"driver": driving.engineer_name, "driver_channel": driving.key}
            await edge.ctx.dispatcher.emit(ChannelOpened(self.ref, detail))
        except BrokerError as exc:
            self.reason = exc.code
            self.stop(exc.message)
            await edge.audit_refusal("observe", exc)
            return
        if self.chan is None or self.left:
            return
        self.driver = driver
        self.chan.write(driver.replay())  # the screen now, then what comes (no await between)
        driver.observers.add(self)
        self.chan.write_stderr(
            f"\r\n[Watching {driving.engineer_name}'s shell on {edge.ticket}, read-only. "
            "Ctrl-D or Ctrl-C leaves.]\r\n".encode()
        )
        for line in edge.untold():
            self.notice(line)

    def notice(self, text: str) -> bool:
        """A line from the broker on this watch's stderr."""
        if self.chan is None or self.driver is None:
            return False
        self.chan.write_stderr(f"\r\n{text}\r\n".encode())
        return True

    def feed(self, data: bytes) -> None:
        """Output of the watched shell."""
        if self.chan is None:
            return
        if self.chan.get_write_buffer_size() > MAX_BEHIND:
            self.reason = "behind"
            self.stop("You fell behind the shell you were watching; reconnect to watch again.")
            return
        self.bytes_out += len(data)
        self.chan.write(data)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Observers cannot type: input is discarded; Ctrl-D or Ctrl-C leaves."""
        # also while the customer is still asked: the watcher may give up waiting
        if (self.driver is not None or self.waiting) and not LEAVE_KEYS.isdisjoint(data):
            self.reason, self.waiting, self.left = "left", False, True
            self.stop("You stopped watching.", status=0)

    def eof_received(self) -> bool:
        return True  # the end of an observer's input changes nothing

    def driver_ended(self) -> None:
        self.reason = "driver_ended"
        self.stop("The shell you were watching has ended.", status=0)

    def end(self, message: str, reason: str) -> None:
        self.reason = reason
        self.stop(message)

    def tell(self, message: str) -> None:
        """A line for the watcher while the customer is asked."""
        if self.chan is not None:
            with contextlib.suppress(BrokenPipeError):
                self.chan.write_stderr(f"{message}\r\n".encode())

    def stop(self, message: str, status: int = 255) -> None:
        if self.driver is not None:
            self.driver.observers.discard(self)
            self.driver = None
        if self.chan is not None:
            try:
                self.chan.write_stderr(f"\r\n{message}\r\n".encode())
            except BrokenPipeError:
                pass  # the observer is already gone
            self.chan.exit(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.chan = None
        if self.driver is not None:
            self.driver.observers.discard(self)
        if self._finished:
            return
        self._finished = True
        self.edge.relay_closed(self)
        if self.ref is not None:
            took = round((time.monotonic() - self._began) * 1000)
            event = ChannelClosed(self.ref, self.reason, 0, self.bytes_out, duration_ms=took)
            self.edge.ctx.spawn(self._emit(event), "observe-closed", self.edge.log_context)

    async def _emit(self, event: ChannelClosed) -> None:
        try:
            await self.edge.ctx.dispatcher.emit(event)
        except BrokerError:
            log.error("channel_close_not_recorded", channel=event.channel.key)
