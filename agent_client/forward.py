"""A port forward on the customer's side: one TCP connection to the destination, relayed to the
broker's direct-tcpip channel.

asyncssh's own forwarder (``conn.forward_connection``) ends only when the destination's EOF
comes *after* the channel's: its socket side then returns False from ``eof_received`` and
asyncio closes the socket, which closes the channel. In the other order, the destination
answering and closing first and the engineer's EOF following (what ``ssh -W`` does: it sends
its EOF once it has seen the server's), both EOFs were passed on and nobody closed anything, so
``ssh`` never exited. Here a forward ends when both directions have ended, in either order, or
when either side closes.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import asyncssh

from assist_protocol.flow import ReadGate


async def open_target(host: str, port: int, on_closed: Callable[[], None]) -> TargetForward:
    """Connect to the destination; a refusal becomes the channel's open failure."""
    forward = TargetForward(on_closed)
    try:
        await asyncio.get_running_loop().create_connection(lambda: _Target(forward), host, port)
    except OSError as exc:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
    return forward


class TargetForward(asyncssh.SSHTCPSession[bytes]):
    """The channel's session, and the one place that decides when the forward is over."""

    def __init__(self, on_closed: Callable[[], None]) -> None:
        self.on_closed = on_closed
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.sock: asyncio.Transport | None = None
        #: pauses the channel while the destination's socket cannot take more
        self.chan_gate = ReadGate()
        self.chan_eof = False
        self.target_eof = False
        self.target_gone = False
        self.chan_gone = False
        # from the destination before the channel was connected
        self._early: list[bytes] = []

    # --- the broker's channel ----------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        self.chan_gate.attach(chan)
        for data in self._early:
            chan.write(data)
        self._early.clear()
        if self.target_eof:
            chan.write_eof()
        if self.target_gone:
            chan.close()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.sock is not None:
            self.sock.write(data)

    def eof_received(self) -> bool:
        self.chan_eof = True
        if self.sock is not None:
            try:
                self.sock.write_eof()
            except OSError:
                pass  # the destination reset: its connection_lost ends the forward
        self._both_ended()
        return True

    def pause_writing(self) -> None:
        if self.sock is not None and not self.target_eof:
            self.sock.pause_reading()

    def resume_writing(self) -> None:
        if self.sock is not None:
            self.sock.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.chan_gone:
            return
        self.chan_gone = True
        self.chan = None
        self.chan_gate.attach(None)
        if self.sock is not None:
            self.sock.close()  # what the engineer sent still reaches the destination first
        self.on_closed()

    # --- the destination ---------------------------------------------------------------------

    def from_target(self, data: bytes) -> None:
        if self.chan is not None:
            self.chan.write(data)
        elif not self.chan_gone:
            self._early.append(data)

    def target_ended(self) -> None:
        if self.target_eof:
            return  # asyncio reports EOF again when reading is resumed after it
        self.target_eof = True
        if self.chan is not None:
            self.chan.write_eof()
        self._both_ended()

    def target_closed(self) -> None:
        self.target_gone = True
        self.sock = None
        if self.chan is not None:
            self.chan.close()  # what was written is sent before the close

    def _both_ended(self) -> None:
        """Both directions are over: nothing more can pass, so close both ends."""
        if not (self.chan_eof and self.target_eof):
            return
        if self.sock is not None:
            self.sock.close()
        if self.chan is not None:
            self.chan.close()


class _Target(asyncio.Protocol):
    """The socket to the destination; it only reports to its forward."""

    def __init__(self, forward: TargetForward) -> None:
        self.forward = forward

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.forward.sock = transport

    def data_received(self, data: bytes) -> None:
        self.forward.from_target(data)

    def eof_received(self) -> bool:
        self.forward.target_ended()
        return True  # keep sending: the engineer's side may not be done

    def pause_writing(self) -> None:
        self.forward.chan_gate.pause()

    def resume_writing(self) -> None:
        self.forward.chan_gate.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.forward.target_closed()
