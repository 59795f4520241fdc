"""What the engineers are doing on this computer right now, for the customer.

The helper's embedded server reports events (a login, a shell opened, a file opened, a port
connected ...); :class:`Activity` keeps the current picture and renders it as the status line
(on a terminal) or as one plain line per event (logs, pipes). No I/O here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from assist_protocol.safetext import visible

KINDS = {"shell": "a shell", "sftp": "a file transfer", "exec": "a command"}


def printable(text: object, limit: int = 200) -> str:
    """What an engineer chose (a path, a command), safe on the customer's terminal: control
    characters (escape sequences, newlines) are shown as escapes (``\\x1b``, ``\\n``)."""
    return visible(text, limit)


@dataclass
class Channel:
    engineer: str
    kind: str  # shell | exec | sftp | forward
    detail: str = ""


@dataclass
class Activity:
    ticket: str = "?"
    #: engineer account name -> display name (shared with the control loop)
    names: dict[str, str] = field(default_factory=dict)
    logins: Counter[str] = field(default_factory=Counter)
    channels: dict[int, Channel] = field(default_factory=dict)
    #: monotonic time the session's time limit is reached, once the broker told it
    deadline: float | None = None
    reconnecting: bool = False
    clock: Callable[[], float] = time.monotonic

    def who(self, name: str) -> str:
        return printable(self.names.get(name, name), 64)

    def set_time_left(self, seconds: float) -> None:
        self.deadline = self.clock() + seconds

    def event(self, kind: str, detail: dict[str, Any]) -> str | None:
        """Take an event from the embedded server; the line to print for it, if any."""
        name = str(detail.get("engineer", "?"))
        who = self.who(name)
        key = int(detail.get("channel") or 0)
        if kind == "login":
            self.logins[name] += 1
            return None
        if kind == "logout":
            self.logins[name] -= 1
            if self.logins[name] <= 0:
                del self.logins[name]
            return None
        if kind == "opened":
            what = str(detail.get("kind"))
            command_text = printable(detail.get("command") or "")
            self.channels[key] = Channel(name, what, command_text)
            if detail.get("reattached"):
                return f"{who} is back in their shell."
            command = f": {command_text}" if command_text else ""
            return f"{who} opened {KINDS.get(what, 'a command')}{command}"
        if kind == "parked":  # still running, and still shown, until the engineer is back
            self.channels[key] = Channel(name, "parked")
            return f"{who}'s shell keeps running until the connection is back."
        if kind == "closed":
            channel = self.channels.pop(key, None)
            what = {"shell": "shell", "sftp": "file transfer", "parked": "shell"}.get(
                channel.kind if channel else str(detail.get("kind")), "command"
            )
            return f"{who}'s {what} ended."
        if kind == "file":
            channel = self.channels.get(key)
            path = printable(detail.get("path", ""))
            if channel is not None:
                channel.detail = path
            verb = "writing" if detail.get("write") else "reading"
            return f"{who} is {verb} {path}"
        if kind == "forward":
            host, port = printable(detail["host"], 100), int(detail["port"])
            self.channels[key] = Channel(name, "forward", f"{host}:{port}")
            return f"{who} connected to port {port} on {host}."
        if kind in ("forward_closed", "unparked"):
            self.channels.pop(key, None)
            return None
        if kind == "refused":
            return f"Refused for {who}: {printable(detail.get('what'))}."
        return None

    def status(self) -> str:
        """One line: ticket, who is connected and with what, time left, the keys."""
        parts = [f"assist {self.ticket}"]
        if self.reconnecting:
            parts.append("connection lost, reconnecting...")
        else:
            names = sorted(set(self.logins) | {c.engineer for c in self.channels.values()})
            for name in names:
                parts.append(f"{self.who(name)}: {self._doing(name)}")
            if not names:
                parts.append("no engineer connected")
        if self.deadline is not None:
            left = max(0, round(self.deadline - self.clock()))
            parts.append(f"{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d} left")
        parts.append("q end, r remove one, w who")
        return " | ".join(parts)

    def _doing(self, name: str) -> str:
        shown = []
        for channel in self.channels.values():
            if channel.engineer != name:
                continue
            if channel.kind == "sftp":
                shown.append(f"files {channel.detail}".rstrip())
            elif channel.kind == "forward":
                shown.append(f"port {channel.detail}")
            elif channel.kind == "parked":
                shown.append("shell (kept while away)")
            elif channel.kind == "exec":
                shown.append(f"command {channel.detail[:30]}".rstrip())
            else:
                shown.append("shell")
        return ", ".join(shown) or "connected"
