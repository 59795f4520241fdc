"""The relay: terminates an engineer's session channel and carries it over the broker's own
connection to the customer's helper, byte for byte, with backpressure both ways.

Engineer -> helper: data, EOF (half-close), window-change, signals, break.
Helper -> engineer: data on stdout and stderr, EOF, exit status or exit signal.
Each side's ``pause_writing``/``resume_writing`` drives the other side's reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import asyncssh
import structlog

from assist_protocol.flow import ReadGate
from assist_protocol.safetext import visible
from assist_protocol.scope import ChannelRequest, split_env
from broker.errors import BrokerError, SinkFailed
from broker.events import ChannelClosed, ChannelOpened, ChannelRef, Input, Output, Resized
from broker.relay.files import FilesChannel, scp_mode
from broker.relay.ports import Engineer, Observer
from broker.relay.screen import ScreenTail
from broker.relay.upstream import Upstream

log = structlog.get_logger(__name__)

#: exit status the engineer's ssh sees when the broker, not the remote command, ended the channel
BROKER_EXIT = 255
#: engineer input held while the channel opens; beyond it the engineer's side is paused
PENDING_LIMIT = 256 * 1024
#: seconds a channel whose helper end was lost waits for the broker to notice a drop
UPSTREAM_LOST_WAIT = 2.0
UPSTREAM_LOST = (
    "The connection to the customer's computer was lost. Run the same command again; if it "
    "fails, the customer's helper may have stopped."
)


class RelaySession(asyncssh.SSHServerSession[bytes]):
    """The engineer's ``session`` channel (shell or exec), relayed to the helper."""

    def __init__(self, edge: Engineer) -> None:
        self.edge = edge
        self.dispatcher = edge.ctx.dispatcher
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.kind = "shell"
        self.command: str | None = None
        self.term_type: str | None = None
        self.term_size: tuple[int, int, int, int] | None = None
        self.term_modes: dict[int, int] = {}
        self.upstream: asyncssh.SSHClientChannel[bytes] | None = None
        #: set while the helper's end, gone with its connection, waits to learn of a drop
        self._lost_timer: asyncio.TimerHandle | None = None
        self.ref: ChannelRef | None = None
        self._pending: list[bytes] = []
        self._pending_eof = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str, str] | None = None
        self.reason: str | None = None
        self._finished = False
        self._started = False
        #: what the engineer reads of a refused request, said once the channel has started
        self.refused: str | None = None
        self._began = time.monotonic()
        #: pauses the helper's output while the engineer's side is full, and the reverse
        self.upstream_gate = ReadGate()
        self.engineer_gate = ReadGate()
        #: set for sftp and scp: asyncssh's SFTP/scp server then handles the channel
        self.files: FilesChannel | None = None
        #: the channel's number in its session, once admitted
        self.channel: int | None = None
        #: engineer input is activity: the session's idle timeout starts again
        self.activity: Callable[[], None] = lambda: None
        #: engineers watching this shell (``T-1+watch``), and its screen for those who join
        self.observers: set[Observer] = set()
        self.screen: ScreenTail | None = None

    @property
    def started(self) -> float:
        return self._began

    def replay(self) -> bytes:
        """What this shell's terminal shows now, for a watcher who joins (may be empty)."""
        return self.screen.replay() if self.screen is not None else b""

    # --- requests from the engineer --------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        self.engineer_gate.attach(chan)
        self.edge.relays.add(self)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self.term_type, self.term_size, self.term_modes = term_type, term_size, dict(term_modes)
        return True

    def shell_requested(self) -> bool:
        self.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.kind, self.command = "exec", command
        if scp_mode(command) is not None and self.chan is not None:
            self.kind = "scp"
            self.files = FilesChannel(self, self.chan)
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem == "sftp" and self.chan is not None:
            self.kind = "sftp"
            self.files = FilesChannel(self, self.chan)
            return True
        reason = f"the subsystem '{visible(subsystem, 100)}' is not available"
        # Taken, then ended with why: on a failed request stock ssh races its own generic
        # "subsystem request failed" against (and often drops) a line written before it.
        self.refused = reason
        self.edge.ctx.spawn(
            self.edge.refuse("subsystem", reason, subsystem=subsystem[:100]),
            None,
            self.edge.log_context,
        )
        return True

    async def _say_refused(self, reason: str) -> None:
        self.stop(await self.edge.refusal(reason))

    def session_started(self) -> None:
        self._started = True
        if self.refused is not None:
            self.reason = "refused"
            self.edge.ctx.spawn(
                self._say_refused(self.refused), "relay-refused", self.edge.log_context
            )
            return
        if self.files is not None:
            self.files.start()
            return
        for line in self.edge.untold():  # refusals with no text of their own (-R)
            self.notice(line)
        self.edge.ctx.spawn(self._open(), "relay-open", self.edge.log_context)

    def notice(self, text: str) -> bool:
        """A line from the broker on this shell's or command's stderr."""
        if self.chan is None or not self._started or self.files is not None:
            return False
        self.tell(text)
        return True

    async def _open(self) -> None:
        request = ChannelRequest(self.kind, pty=self.term_type is not None)
        detail: dict[str, Any] = {"pty": request.pty}
        if self.command is not None:
            detail["command"] = self.command
        if self.term_type is not None and self.term_size is not None:
            detail.update(term=self.term_type, width=self.term_size[0], height=self.term_size[1])
        env, refused_env = split_env(self.chan.get_environment() if self.chan else {})
        if refused_env:
            reason = "only TERM, LANG and LC_* may be passed on"
            await self.edge.refuse("env", reason, names=refused_env)
        try:
            what = "shell" if self.command is None else f"command: {self.command[:80]}"
            live, admitted = await self.edge.admit(self.kind, request, what, detail, self)
            self.channel = admitted.channel
            nested = await self.edge.nested(live)
            if admitted.reattach:  # the helper gives this engineer their shell back
                detail["reattach"] = True
            self.ref = self.edge.ref(live, self.kind)
            self.activity = live.touch
            detail["customer_host"] = admitted.customer_host
            watchable = live.granted is not None and "observe" in live.granted.items
            if watchable and request.pty and self.kind == "shell" and self.dispatcher.wants_data:
                self.screen = ScreenTail()  # fed only what the recorder was handed
            await self.dispatcher.emit(ChannelOpened(self.ref, detail))
            self.upstream, _ = await nested.create_session(
                lambda: Upstream(self),
                command=self.command,
                request_pty="force" if self.term_type is not None else False,
                term_type=self.term_type,
                term_size=self.term_size,
                term_modes=self.term_modes,
                env=dict[str | bytes, str | bytes](env.items()),
                encoding=None,
            )
        except BrokerError as exc:
            self.reason = exc.code
            self.stop(exc.message)
            if isinstance(exc, SinkFailed) and exc.__cause__ is not None:
                detail["why"] = str(exc.__cause__)[:300]  # e.g. too little free space
            await self.edge.audit_refusal(self.kind, exc, **detail)
            return
        except asyncssh.ChannelOpenError as exc:
            self.reason = "helper_refused"
            self.stop(f"The customer's helper refused the channel: {exc.reason}")
            return
        except (OSError, asyncssh.Error) as exc:
            log.warning("relay_open_failed", error=repr(exc))
            self.reason = "error"
            self.stop("The customer's computer could not be reached.")
            return
        if self.chan is None:  # the engineer left while we were opening
            self.upstream.close()
            return
        self.upstream_gate.attach(self.upstream)
        for chunk in self._pending:
            if self.dispatcher.wants_data:  # typed before the channel was open: record it now
                self.dispatcher.data(Input(self.ref, chunk))
            self.upstream.write(chunk)
        self._pending.clear()
        if self._pending_eof:
            self.upstream.write_eof()
        # Only now: resuming delivers what asyncssh held back (and a held EOF) straight upstream.
        self.engineer_gate.resume()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.activity()
        if self.files is not None:
            self.files.stream.data_received(data, datatype)
            return
        self.bytes_in += len(data)
        if self.ref is not None and self.dispatcher.wants_data:
            try:
                self.dispatcher.data(Input(self.ref, data))
            except SinkFailed as exc:
                self.end(exc.message, "sink_failed")
                return
        if self.upstream is not None:
            self.upstream.write(data)
        else:  # waiting for the customer's approval: hold, but not without bound
            self._pending.append(data)
            if sum(map(len, self._pending)) > PENDING_LIMIT:
                self.engineer_gate.pause()

    def eof_received(self) -> bool:
        if self.files is not None:
            return bool(self.files.stream.eof_received())
        if self.upstream is not None:
            self.upstream.write_eof()
        else:
            self._pending_eof = True
        return True  # stay half-open: output keeps flowing back

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.term_size = (width, height, pixwidth, pixheight)
        if self.ref is not None and self.dispatcher.wants_data:
            try:
                self.dispatcher.data(Resized(self.ref, width, height))
            except SinkFailed as exc:
                self.end(exc.message, "sink_failed")
                return
        if self.upstream is not None:
            self.upstream.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.upstream is not None:
            self.upstream.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.upstream is not None:
            self.upstream.send_break(msec)
        return True

    def pause_writing(self) -> None:
        if self.files is not None:
            self.files.stream.pause_writing()
        self.upstream_gate.pause()

    def resume_writing(self) -> None:
        if self.files is not None:
            self.files.stream.resume_writing()
        self.upstream_gate.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.files is not None:
            self.files.stream.connection_lost(exc)
            self.bytes_in, self.bytes_out = self.files.bytes_in, self.files.bytes_out
        self.chan = None
        self._cancel_lost_timer()
        self.engineer_gate.attach(None)
        if self.upstream is not None:
            self.upstream.close()
        self._finish(self.reason or "engineer")

    # --- from the helper -------------------------------------------------------------------

    def from_upstream(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bytes_out += len(data)
        if self.ref is not None and self.dispatcher.wants_data:
            stream = 2 if datatype == asyncssh.EXTENDED_DATA_STDERR else 1
            try:
                self.dispatcher.data(Output(self.ref, data, stream))
            except SinkFailed as exc:
                self.end(exc.message, "sink_failed")
                return
            if self.screen is not None:
                self.screen.feed(data)
        if self.chan is not None:
            self.chan.write(data, datatype)
        for observer in list(self.observers):
            observer.feed(data)

    def upstream_eof(self) -> None:
        if self.chan is not None:
            self.chan.write_eof()

    def upstream_closed(self, lost: bool = False) -> None:
        """The helper's end closed; ``lost`` when it went with its connection (a reverse link
        that broke) rather than being closed by the helper."""
        self.upstream = None
        for observer in list(self.observers):
            observer.driver_ended()
        self.upstream_gate.attach(None)
        if self.chan is None:
            return
        if lost and self.exit_status is None and self.exit_signal is None:
            # A killed or cut-off helper takes its own connection down at the same moment:
            # give the broker a moment to notice, so the engineer reads why (and how to
            # come back) from the session's drop rather than from a bare hang-up.
            loop = asyncio.get_running_loop()
            self._lost_timer = loop.call_later(UPSTREAM_LOST_WAIT, self._upstream_lost)
            return
        self.reason = self.reason or "exit"
        if self.exit_signal is not None:
            self.chan.exit_with_signal(*self.exit_signal)
        elif self.exit_status is not None:
            self.chan.exit(self.exit_status)
        else:
            self.chan.close()

    def _upstream_lost(self) -> None:
        self._lost_timer = None
        if self.chan is not None:  # no drop was noticed: the link alone broke
            self.reason = self.reason or "lost"
            self.stop(UPSTREAM_LOST)

    def _cancel_lost_timer(self) -> None:
        if self._lost_timer is not None:
            self._lost_timer.cancel()
            self._lost_timer = None

    # --- ending ----------------------------------------------------------------------------

    def end(self, message: str, reason: str) -> None:
        """The session ended under this channel: tell the engineer, exit non-zero."""
        self._cancel_lost_timer()
        self.reason = self.reason or reason
        self.stop(message)
        if self.upstream is not None:
            self.upstream.close()

    def tell(self, message: str) -> None:
        """A line for the engineer on standard error, the channel staying open (while it
        waits for the customer, say)."""
        if self.chan is None:
            return
        newline = "\r\n" if self.term_type is not None else "\n"
        with contextlib.suppress(BrokenPipeError):
            self.chan.write_stderr(f"{message}{newline}".encode())

    def stop(self, message: str) -> None:
        if self.chan is None:
            return
        newline = "\r\n" if self.term_type is not None else "\n"
        prefix = newline if self.term_type is not None else ""
        with contextlib.suppress(BrokenPipeError):  # the engineer's side is closing already
            self.chan.write_stderr(f"{prefix}{message}{newline}".encode())
            self.chan.exit(BROKER_EXIT)

    def _finish(self, reason: str) -> None:
        if self._finished:
            return
        self._finished = True
        self.edge.relay_closed(self)
        if self.ref is None:
            return
        status = self.exit_status
        signal = self.exit_signal[0] if self.exit_signal else None
        took = round((time.monotonic() - self._began) * 1000)
        event = ChannelClosed(self.ref, reason, self.bytes_in, self.bytes_out, status, signal, took)
        self.edge.ctx.spawn(self._emit_closed(event), "relay-closed", self.edge.log_context)

    async def _emit_closed(self, event: ChannelClosed) -> None:
        try:
            await self.dispatcher.emit(event)
        except BrokerError:
            log.error("channel_close_not_recorded", channel=event.channel.key)
