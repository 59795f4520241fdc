"""The log-line sink (optional): one structured line per channel end. Never logs payload bytes."""

from __future__ import annotations

import structlog

from broker.events import ChannelClosed, ChannelRefused, Event
from broker.sinks.dispatch import DataEvent

log = structlog.get_logger("broker.channel")


class LogLineSink:
    name = "logline"
    required = False
    wants_data = False

    async def handle(self, event: Event) -> None:
        if isinstance(event, ChannelClosed):
            ref = event.channel
            log.info(
                "channel_closed",
                ticket=ref.ticket_key,
                session=ref.session_id,
                engineer=ref.engineer_name,
                kind=ref.kind,
                reason=event.reason,
                bytes_in=event.bytes_in,
                bytes_out=event.bytes_out,
                exit_status=event.exit_status,
            )
        elif isinstance(event, ChannelRefused):
            ref = event.channel
            log.warning(
                "channel_refused",
                ticket=ref.ticket_key,
                engineer=ref.engineer_name,
                kind=ref.kind,
                reason=event.reason,
            )

    def data(self, event: DataEvent) -> None:  # pragma: no cover - wants_data is False
        raise AssertionError("the log-line sink takes no data events")
