"""Calls the sinks in order, with an explicit failure policy.

A *required* sink (audit, recorder) that fails raises :class:`SinkFailed`: the relay then refuses
the channel or ends it (fail closed). An optional sink (the log line) is logged and skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

from broker.errors import SinkFailed
from broker.events import Event, Input, Output, Resized

log = structlog.get_logger(__name__)

DataEvent = Output | Input | Resized


class Sink(Protocol):
    name: str
    required: bool
    #: ``True`` if the sink wants every chunk (``data``); lifecycle events always go to ``handle``
    wants_data: bool

    async def handle(self, event: Event) -> None:
        """Lifecycle events: opened, refused, closed. May do I/O."""

    def data(self, event: DataEvent) -> None:
        """Hot path: called for every chunk. Must not block; buffer and flush elsewhere."""


class Dispatcher:
    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self._data_sinks = [s for s in self.sinks if s.wants_data]

    @property
    def wants_data(self) -> bool:
        return bool(self._data_sinks)

    async def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                await sink.handle(event)
            except Exception as exc:
                self._failed(sink, event, exc)

    def data(self, event: DataEvent) -> None:
        for sink in self._data_sinks:
            try:
                sink.data(event)
            except Exception as exc:
                self._failed(sink, event, exc)

    @staticmethod
    def _failed(sink: Sink, event: Event, exc: Exception) -> None:
        log.error("sink_failed", sink=sink.name, on=event.name, error=repr(exc))
        if sink.required:
            raise SinkFailed(
                "Recording is unavailable; the session was stopped to protect the customer.",
                code=f"{sink.name}_failed",
            ) from exc
