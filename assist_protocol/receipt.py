"""The customer's receipt in words, from its JSON form (broker.session.receipt builds that).

Standard library only: the broker puts it in the receipt e-mail, and the customer's helper
writes it on the customer's terminal itself, so that every value in it (a ticket title, an
engineer's command, a file name) is shown with its control characters made visible and no
value can add a line of its own. Times are written in the local zone of whoever renders it:
the customer's, on the helper.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from assist_protocol.safetext import visible

#: what each SFTP change says, with the path (``{path}``) and a rename's new name (``{to}``)
CHANGE_WORDS = {
    "remove": "deleted {path}",
    "rename": "renamed {path} to {to}",
    "mkdir": "made the folder {path}",
    "rmdir": "deleted the folder {path}",
    "symlink": "made the link {path} to {target}",
    "link": "made the link {path} to {target}",
}
TRIED_WORDS = {
    "remove": "tried to delete {path}",
    "rename": "tried to rename {path} to {to}",
    "mkdir": "tried to make the folder {path}",
    "rmdir": "tried to delete the folder {path}",
    "setstat": "tried to change {path}",
    "symlink": "tried to make the link {path}",
    "link": "tried to make the link {path}",
}


def v(value: object) -> str:
    return visible(value, 500)


def local_time(value: object) -> str:
    """An ISO time as the reader's local time, with its zone: ``2026-12-02 08:30:00 CET``."""
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return v(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)  # the broker writes UTC (dt.UTC: 3.11)
    when = when.astimezone()
    return f"{when:%Y-%m-%d %H:%M:%S} {v(when.tzname() or when.strftime('%z'))}"


def span(seconds: object) -> str:
    """``125`` -> ``2 minutes 5 seconds``."""
    try:
        total = int(str(seconds))
    except ValueError:
        return v(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "hour"), (minutes, "minute"), (secs, "second")]
    words = [f"{n} {unit}" + ("s" if n != 1 else "") for n, unit in parts if n]
    return " ".join(words) or "0 seconds"


def _engineer(entry: object) -> str:
    if isinstance(entry, Mapping):  # {"name": login, "display": the name people know}
        display, login = entry.get("display"), entry.get("name")
        return f"{v(display)} ({v(login)})" if display and display != login else v(login)
    return v(entry)  # an older broker's receipt: the login alone


def _channel(channel: Mapping[str, Any]) -> str:
    what = v(channel.get("command") or channel.get("kind"))
    if channel.get("kind") == "forward":
        what = f"connection to port {v(channel.get('port'))} on {v(channel.get('host'))}"
    again = channel.get("reattached")
    if again:
        count = "a reconnect" if again == 1 else f"{v(again)} reconnects"
        what += f" (back after {count})"
    return f"- {v(channel.get('engineer'))}: {what}"


def _file(item: Mapping[str, Any]) -> str:
    digest = item.get("sha256")
    proof = f"SHA-256 {v(digest)}" if digest else "partial transfer, no SHA-256"
    return (
        f"- {v(item.get('engineer'))} copied {v(item.get('direction'))}: {v(item.get('path'))} "
        f"({v(item.get('bytes'))} bytes, {proof})"
    )


def _change(item: Mapping[str, Any]) -> str:
    op = str(item.get("op"))
    values = {key: v(item.get(key)) for key in ("path", "to", "target")}
    if op == "rename":
        values["path"] = v(item.get("from"))
    if item.get("failed"):
        words = TRIED_WORDS.get(op, "tried to change {path}").format(**values)
        return f"- {v(item.get('engineer'))} {words} (it failed: {v(item.get('failed'))})"
    if op == "setstat":
        attributes = list(item.get("attributes") or [])
        if attributes == ["mode"]:
            words = "changed the permissions of {path}".format(**values)
        else:
            names = ", ".join(v(a) for a in attributes) or "attributes"
            words = f"changed the {names} of {values['path']}"
    else:
        words = CHANGE_WORDS.get(op, "changed {path}").format(**values)
    return f"- {v(item.get('engineer'))} {words}"


def receipt_text(receipt: Mapping[str, Any]) -> str:
    engineers = ", ".join(_engineer(e) for e in receipt.get("engineers") or []) or "nobody"
    how = receipt.get("end_message") or receipt.get("end_reason") or "unknown"
    lines = [
        f"Remote support session on ticket {v(receipt.get('ticket'))}: {v(receipt.get('title'))}",
        "",
        f"Engineers: {engineers}",
        f"When: {local_time(receipt.get('started'))} to {local_time(receipt.get('ended'))} "
        f"({span(receipt.get('duration_seconds'))})",
        f"Ended: {v(how)}",
        "",
    ]
    lines += [_channel(channel) for channel in receipt.get("channels", [])]
    lines += [_file(item) for item in receipt.get("files", [])]
    lines += [_change(item) for item in receipt.get("changes", [])]
    lines += ["", "The full record is kept by the support desk and can be verified."]
    return "\n".join(lines) + "\n"
