"""The customer's receipt in words, from its JSON form (broker.session.receipt builds that).

Standard library only: the broker puts it in the receipt e-mail, and the customer's helper
writes it on the customer's terminal itself, so that every value in it (a ticket title, an
engineer's command, a file name) is shown with its control characters made visible and no
value can add a line of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from assist_protocol.safetext import visible


def receipt_text(receipt: Mapping[str, Any]) -> str:
    def v(value: object) -> str:
        return visible(value, 500)

    engineers = ", ".join(v(e) for e in receipt.get("engineers") or []) or "nobody"
    lines = [
        f"Remote support session on ticket {v(receipt.get('ticket'))}: {v(receipt.get('title'))}",
        "",
        f"Engineers: {engineers}",
        f"From {v(receipt.get('started'))} to {v(receipt.get('ended'))} "
        f"({v(receipt.get('duration_seconds'))} seconds); ended: {v(receipt.get('end_reason'))}",
        "",
    ]
    for channel in receipt.get("channels", []):
        what = v(channel.get("command") or channel.get("kind"))
        if channel.get("kind") == "forward":
            what = f"connection to port {v(channel.get('port'))} on {v(channel.get('host'))}"
        lines.append(f"- {v(channel.get('engineer'))}: {what}")
    for item in receipt.get("files", []):
        lines.append(
            f"- file {v(item.get('direction'))}: {v(item.get('path'))} ({v(item.get('bytes'))} "
            f"bytes, SHA-256 {v(item.get('sha256') or 'partial transfer')})"
        )
    lines += ["", "The full record is kept by the support desk and can be verified."]
    return "\n".join(lines) + "\n"
