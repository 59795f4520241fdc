"""Port forwards (``ssh -L`` and ``-W``): a direct-tcpip channel from the engineer, relayed to a
direct-tcpip channel on the nested connection, so the helper connects on the customer's side.

Only destinations in the granted scope are opened (the helper checks again); each forwarded
connection is audited with its destination, bytes each way and duration.

A forward ends when either channel closes, or once both directions have ended (EOF each way),
in whichever order: the broker then closes both channels itself, as sshd does, rather than
wait for the helper to close (an older helper never did when the destination's EOF came
first, and ``ssh -W`` hung).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncssh
import structlog

from assist_protocol.flow import ReadGate
from assist_protocol.scope import ChannelRequest
from broker.errors import BrokerError
from broker.events import ChannelClosed, ChannelOpened, ChannelRef
from broker.relay.ports import Engineer

log = structlog.get_logger(__name__)


def _refused(message: str) -> asyncssh.ChannelOpenError:
    return asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, message)


async def open_forward(
    edge: Engineer, host: str, port: int, orig_host: str, orig_port: int
) -> TcpRelay:
    """Check the scope, open the customer's side, then accept the engineer's channel."""
    detail: dict[str, object] = {"host": host[:255], "port": port}
    request = ChannelRequest("forward", host=host, port=port)
    relay = TcpRelay(edge)
    try:
        live, admitted = await edge.admit(
            "forward", request, f"port {port} on {host}", detail, relay
        )
        relay.channel = admitted.channel
        nested = await edge.nested(live)
        relay.ref = edge.ref(live, "forward")
        relay.activity = live.touch
        await edge.ctx.dispatcher.emit(ChannelOpened(relay.ref, detail))
    except BrokerError as exc:
        edge.relay_closed(relay)  # (if the session had let it open)
        await edge.audit_refusal("forward", exc, **detail)
        raise _refused(exc.message) from None
    edge.relays.add(relay)
    try:
        relay.upstream, _ = await nested.create_connection(
            lambda: TcpUpstream(relay), host, port, orig_host, orig_port
        )
    except asyncssh.ChannelOpenError as exc:
        relay.finish("connect_failed", error=exc.reason)
        raise asyncssh.ChannelOpenError(exc.code, f"On the customer's side: {exc.reason}") from None
    except (BrokerError, OSError, asyncssh.Error) as exc:
        relay.finish("connect_failed", error=str(exc))
        raise _refused("The customer's computer could not be reached.") from None
    relay.upstream_gate.attach(relay.upstream)
    return relay


class TcpRelay(asyncssh.SSHTCPSession[bytes]):
    """The engineer's end of one forwarded connection."""

    def __init__(self, edge: Engineer) -> None:
        self.edge = edge
        self.ref: ChannelRef | None = None
        #: the channel's number in its session, once admitted
        self.channel: int | None = None
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.upstream: asyncssh.SSHTCPChannel[bytes] | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_gate = ReadGate()
        self.engineer_gate = ReadGate()
        self._early: list[bytes] = []
        self._engineer_ended = False
        self._upstream_ended = False
        self._upstream_gone = False
        self._began = time.monotonic()
        self._finished = False
        #: engineer traffic is activity: the session's idle timeout starts again
        self.activity: Callable[[], None] = lambda: None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        self.engineer_gate.attach(chan)
        for data in self._early:
            chan.write(data)
        self._early.clear()
        if self._upstream_ended:
            chan.write_eof()
        if self._upstream_gone or self._finished:
            chan.close()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.activity()
        self.bytes_in += len(data)
        if self.upstream is not None:
            self.upstream.write(data)

    def eof_received(self) -> bool:
        self._engineer_ended = True
        if self.upstream is not None:
            self.upstream.write_eof()
        self._both_ended()
        return True

    def pause_writing(self) -> None:
        self.upstream_gate.pause()

    def resume_writing(self) -> None:
        self.upstream_gate.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.chan = None
        self.engineer_gate.attach(None)
        if self.upstream is not None:
            self.upstream.close()
        self.finish("engineer")

    # --- from the customer's side ----------------------------------------------------------

    def from_upstream(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.chan is not None:
            self.chan.write(data)
        elif not self._finished:
            self._early.append(data)  # the engineer's channel is not connected yet

    def upstream_eof(self) -> None:
        self._upstream_ended = True
        if self.chan is not None:
            self.chan.write_eof()
        self._both_ended()

    def upstream_closed(self) -> None:
        self.upstream = None
        self._upstream_gone = True
        self.upstream_gate.attach(None)
        if self.chan is not None:
            self.chan.close()  # what was written is sent before the close
        self.finish("closed")

    def _both_ended(self) -> None:
        """Both directions are over: nothing more can pass, so close both channels."""
        if not (self._engineer_ended and self._upstream_ended):
            return
        if self.upstream is not None:
            self.upstream.close()
        if self.chan is not None:
            self.chan.close()
        self.finish("closed")

    def end(self, message: str, reason: str) -> None:
        """The session ended under this forward."""
        if self.upstream is not None:
            self.upstream.close()
        if self.chan is not None:
            self.chan.close()
        self.finish(reason)

    def finish(self, reason: str, error: str | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        self.edge.relay_closed(self)
        if self.ref is None:
            return
        took = round((time.monotonic() - self._began) * 1000)
        event = ChannelClosed(self.ref, reason, self.bytes_in, self.bytes_out, duration_ms=took)
        self.edge.ctx.spawn(self._emit(event), "forward-closed", self.edge.log_context)
        if error:
            log.info("forward_failed", error=error)

    async def _emit(self, event: ChannelClosed) -> None:
        try:
            await self.edge.ctx.dispatcher.emit(event)
        except BrokerError:
            log.error("channel_close_not_recorded", channel=event.channel.key)


class TcpUpstream(asyncssh.SSHTCPSession[bytes]):
    def __init__(self, relay: TcpRelay) -> None:
        self.relay = relay

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.relay.from_upstream(data)

    def eof_received(self) -> bool:
        self.relay.upstream_eof()
        return True

    def pause_writing(self) -> None:
        self.relay.engineer_gate.pause()

    def resume_writing(self) -> None:
        self.relay.engineer_gate.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.upstream_closed()
