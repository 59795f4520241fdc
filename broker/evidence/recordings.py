"""Where a channel's recording is, as the audit chain says, and only inside the recordings folder.

The channel table's ``recording_path`` is a convenience column outside the chain: someone who can
write the database could point it at the broker's private key and read that through the
recordings API. So every reader (the API, ``recording play/export``, bundles, retention) asks
:func:`recording_of`, which takes the path from the channel's chained ``recording.closed`` event
(whose own hash must still match) and :func:`resolve`, which serves a file only if it resolves,
symbolic links followed, to a ``.cast`` file inside the recordings folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.errors import NotFound
from broker.store import chain
from broker.store.models import AuditEvent, Channel


@dataclass(frozen=True)
class RecordingRef:
    channel_id: int
    session_id: str
    ticket_id: int | None
    path: str
    sha256: str | None
    size: int | None


def resolve(data_dir: Path, root: Path, relative: str) -> Path | None:
    """The recording's file if it lies inside ``root`` (the recordings folder), else ``None``."""
    if not relative or "\x00" in relative:
        return None
    candidate = (data_dir / relative).resolve()
    if candidate.suffix != ".cast" or not candidate.is_relative_to(root.resolve()):
        return None
    return candidate


def _intact(event: AuditEvent) -> bool:
    """The event still matches its own hash (a rewrite that fixed up the chain as well is
    caught by ``audit verify``; this stops the cheap one here)."""
    return chain.link(event.prev_hash, event.ticket_id, chain.row_digest(event)) == event.hash


async def recording_of(db: AsyncSession, channel_id: int) -> RecordingRef:
    """The channel's recording as the chain records it; :class:`NotFound` if it has none (or
    it was pruned, or its event no longer matches its hash)."""
    channel = await db.get(Channel, channel_id)
    if channel is None:
        raise NotFound(f"Channel {channel_id} has no recording.")
    events = (
        await db.execute(
            select(AuditEvent)
            .where(
                AuditEvent.session_id == channel.session_id,
                AuditEvent.action.in_(("recording.closed", "recording.pruned")),
            )
            .order_by(AuditEvent.seq)
        )
    ).scalars()
    found: AuditEvent | None = None
    for event in events:
        if event.details.get("channel_id") != channel_id:
            continue
        found = event if event.action == "recording.closed" else None
    if found is None or not found.details.get("path"):
        raise NotFound(f"Channel {channel_id} has no recording.")
    if not _intact(found):
        raise NotFound(
            f"The record of channel {channel_id}'s recording was changed; run audit verify."
        )
    size = found.details.get("size")
    return RecordingRef(
        channel_id=channel_id,
        session_id=channel.session_id,
        ticket_id=found.ticket_id,
        path=str(found.details["path"]),
        sha256=found.details.get("sha256"),
        size=int(size) if isinstance(size, int) else None,
    )


def recording_file(data_dir: Path, root: Path, ref: RecordingRef) -> Path:
    """The file to read for ``ref``; :class:`NotFound` when it is missing or outside ``root``."""
    path = resolve(data_dir, root, ref.path)
    if path is None:
        raise NotFound(
            f"The recording of channel {ref.channel_id} lies outside the recordings folder; "
            "it is not served (run audit verify)."
        )
    if not path.is_file():
        raise NotFound(f"The recording of channel {ref.channel_id} is missing on the broker.")
    return path
