"""The customer's receipt: who did what during a session, built from its audit events.

Times are ISO 8601 in UTC here; the helper writes them in the customer's own zone
(:func:`assist_protocol.receipt.receipt_text`). Engineers appear by the name the customer knows
(their display name), with their login.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from assist_protocol.receipt import receipt_text
from broker.session.core.facts import end_message
from broker.store.db import Store
from broker.store.models import Account, AuditEvent, Session, Ticket, utcnow

__all__ = ["build_receipt", "receipt_text"]

#: the SFTP (and scp) changes the customer is told of, by audit action
CHANGES = {
    "sftp.remove": "remove",
    "sftp.rename": "rename",
    "sftp.mkdir": "mkdir",
    "sftp.rmdir": "rmdir",
    "sftp.setstat": "setstat",
    "sftp.symlink": "symlink",
    "sftp.link": "link",
}
_ATTRIBUTES = ("mode", "size", "uid", "gid", "atime", "mtime")


def _iso(value: dt.datetime) -> str:
    """UTC, with its offset (SQLite hands back times without one)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


async def build_receipt(store: Store, session_id: str, reason: str | None = None) -> dict[str, Any]:
    """The receipt of a session; ``reason`` is why it ended, for a receipt built before the end
    is recorded (the helper is told at once)."""
    async with store.read() as db:
        session = await db.get(Session, session_id)
        events = (
            (
                await db.execute(
                    select(AuditEvent)
                    .where(AuditEvent.session_id == session_id)
                    .order_by(AuditEvent.seq)
                )
            )
            .scalars()
            .all()
        )
        ticket = await db.get(Ticket, session.ticket_id) if session else None
        logins = {event.actor for event in events if event.action == "channel.opened"}
        accounts = (await db.execute(select(Account).where(Account.name.in_(logins)))).scalars()
        names = {account.name: account.display_name for account in accounts}
    book = _Book(names)
    for event in events:
        book.add(event)
    started = session.started_at if session else None
    ended = (session.ended_at if session else None) or utcnow()
    end_reason = (session.end_reason if session else None) or reason
    return {
        "session": session_id,
        "ticket": ticket.key if ticket else None,
        "title": ticket.title if ticket else None,
        "engineers": [{"name": n, "display": names.get(n, n)} for n in sorted(book.engineers)],
        "started": _iso(started) if started else None,
        "ended": _iso(ended),
        "duration_seconds": round((_utc(ended) - _utc(started)).total_seconds()) if started else 0,
        "end_reason": end_reason,
        "end_message": end_message(end_reason) if end_reason else None,
        "channels": book.channels,
        "files": book.files,
        "changes": book.changes,
    }


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


class _Book:
    """The receipt's lists, event by event."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.engineers: set[str] = set()
        self.channels: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []
        self.changes: list[dict[str, Any]] = []
        #: channel id -> its entry (a re-attached shell shares the entry of the one cut)
        self._by_id: dict[int, dict[str, Any]] = {}

    def _who(self, login: str) -> dict[str, Any]:
        return {"engineer": self.names.get(login, login), "login": login}

    def add(self, event: AuditEvent) -> None:
        details = event.details
        if event.action == "channel.opened":
            self._opened(event)
        elif event.action == "channel.closed" and details.get("channel_id") in self._by_id:
            entry = self._by_id[int(details["channel_id"])]
            for key in ("bytes_in", "bytes_out"):
                entry[key] = (entry.get(key) or 0) + (details.get(key) or 0)
            entry.update(exit_status=details.get("exit_status"), closed=_iso(event.time))
        elif event.action == "sftp.close" and (
            details.get("bytes_written") or details.get("bytes_read")
        ):
            written = bool(details.get("bytes_written"))
            self.files.append(
                {
                    **self._who(event.actor),
                    "path": details.get("path"),
                    "direction": "to this computer" if written else "from this computer",
                    "bytes": details.get("bytes_written") or details.get("bytes_read"),
                    "sha256": details.get("sha256"),
                }
            )
        elif event.action in CHANGES:
            change = {**self._who(event.actor), "op": CHANGES[event.action]}
            for key in ("path", "from", "to", "target"):
                if key in details:
                    change[key] = details[key]
            attributes = [name for name in _ATTRIBUTES if name in details]
            if attributes:
                change["attributes"] = attributes
            self.changes.append(change)
        elif event.action == "sftp.failed":
            self._failed(event)

    def _opened(self, event: AuditEvent) -> None:
        details = event.details
        self.engineers.add(event.actor)
        if details.get("reattach"):
            cut = self._cut_shell(event.actor)
            if cut is not None:  # the same shell, back after a drop: one entry
                cut["reattached"] = cut.get("reattached", 0) + 1
                self._by_id[int(details["channel_id"])] = cut
                return
        entry = {**self._who(event.actor), "kind": details.get("kind"), "opened": _iso(event.time)}
        for key in ("command", "host", "port"):
            if key in details:
                entry[key] = details[key]
        if details.get("pty"):
            entry["pty"] = True
        self.channels.append(entry)
        self._by_id[int(details["channel_id"])] = entry

    def _cut_shell(self, login: str) -> dict[str, Any] | None:
        shells = [
            entry
            for entry in self.channels
            if entry["login"] == login and entry.get("kind") == "shell" and entry.get("pty")
        ]
        return shells[-1] if shells else None

    def _failed(self, event: AuditEvent) -> None:
        """A change the customer's side refused: the receipt says it was tried, and failed."""
        details = event.details
        op = CHANGES.get(str(details.get("op")))
        for change in reversed(self.changes):
            if change["login"] == event.actor and change["op"] == op:
                if change.get("path", change.get("from")) == details.get(
                    "path", details.get("from")
                ):
                    change["failed"] = details.get("error") or "failed"
                    return
