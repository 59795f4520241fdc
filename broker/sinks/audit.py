"""The audit sink (required): one channel row per channel and one audit row per lifecycle event."""

from __future__ import annotations

from broker.events import ChannelClosed, ChannelOpened, ChannelRefused, Event, FileOperation
from broker.sinks.dispatch import DataEvent
from broker.store import queries as q
from broker.store.db import Store


class AuditSink:
    name = "audit"
    required = True
    wants_data = False

    def __init__(self, store: Store) -> None:
        self.store = store
        self._rows: dict[str, int] = {}

    async def handle(self, event: Event) -> None:
        if isinstance(event, ChannelOpened):
            await self._opened(event)
        elif isinstance(event, ChannelRefused):
            await self._refused(event)
        elif isinstance(event, ChannelClosed):
            await self._closed(event)
        elif isinstance(event, FileOperation):
            await self._file_operation(event)

    def data(self, event: DataEvent) -> None:  # pragma: no cover - wants_data is False
        raise AssertionError("the audit sink takes no data events")

    async def _opened(self, event: ChannelOpened) -> None:
        ref = event.channel
        async with self.store.begin() as db:
            row = await q.open_channel(
                db,
                session_id=ref.session_id,
                engineer_id=ref.engineer_id,
                kind=ref.kind,
                detail=event.detail,
                ref=ref.key,
            )
            await q.append_audit(
                db,
                action=event.name,
                actor=ref.engineer_name,
                ticket_id=ref.ticket_id,
                session_id=ref.session_id,
                details={"channel_id": row.id, "kind": ref.kind, **event.detail},
            )
        self._rows[ref.key] = row.id

    async def _file_operation(self, event: FileOperation) -> None:
        ref = event.channel
        async with self.store.begin() as db:
            await q.append_audit(
                db,
                action=event.action,
                actor=ref.engineer_name,
                ticket_id=ref.ticket_id,
                session_id=ref.session_id,
                details={"channel_id": self._rows.get(ref.key), **event.detail},
            )

    async def _refused(self, event: ChannelRefused) -> None:
        ref = event.channel
        async with self.store.begin() as db:
            await q.append_audit(
                db,
                action=event.name,
                actor=ref.engineer_name,
                ticket_id=ref.ticket_id or None,
                session_id=ref.session_id or None,
                details={"kind": ref.kind, "reason": event.reason, **event.detail},
            )

    async def _closed(self, event: ChannelClosed) -> None:
        ref = event.channel
        row_id = self._rows.pop(ref.key, None)
        if row_id is None:
            return  # never opened (the open itself failed): nothing to close
        async with self.store.begin() as db:
            await q.close_channel(
                db,
                row_id,
                bytes_in=event.bytes_in,
                bytes_out=event.bytes_out,
                exit_status=event.exit_status,
                exit_signal=event.exit_signal,
                close_reason=event.reason,
            )
            await q.append_audit(
                db,
                action=event.name,
                actor=ref.engineer_name,
                ticket_id=ref.ticket_id,
                session_id=ref.session_id,
                details={
                    "channel_id": row_id,
                    "kind": ref.kind,
                    "reason": event.reason,
                    "bytes_in": event.bytes_in,
                    "bytes_out": event.bytes_out,
                    "exit_status": event.exit_status,
                    "exit_signal": event.exit_signal,
                    "duration_ms": event.duration_ms,
                },
            )
