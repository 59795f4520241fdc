"""The helper's end of a relayed session channel: what it says goes back to the engineer's
end (:class:`broker.relay.pump.RelaySession`), which this module knows only as an interface."""

from __future__ import annotations

from typing import Protocol

import asyncssh

from assist_protocol.flow import ReadGate


class Downstream(Protocol):
    """The engineer's end of the channel, as the helper's end reports to it."""

    exit_status: int | None
    exit_signal: tuple[str, bool, str, str] | None

    @property
    def engineer_gate(self) -> ReadGate: ...

    def from_upstream(self, data: bytes, datatype: asyncssh.DataType) -> None: ...

    def upstream_eof(self) -> None: ...

    def upstream_closed(self, lost: bool = False) -> None: ...


class Upstream(asyncssh.SSHClientSession[bytes]):
    """The helper's end of a relayed channel, reporting to its :class:`Downstream`."""

    def __init__(self, relay: Downstream) -> None:
        self.relay = relay

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.relay.from_upstream(data, datatype)

    def eof_received(self) -> bool:
        self.relay.upstream_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.relay.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.relay.exit_signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        self.relay.engineer_gate.pause()

    def resume_writing(self) -> None:
        self.relay.engineer_gate.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.upstream_closed(lost=exc is not None)
