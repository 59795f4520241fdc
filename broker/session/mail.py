"""E-mailing the receipt to the ticket's customer address, when ``[smtp]`` is configured::

    [smtp]
    host = "mail.example.com"
    port = 587
    from = "support@example.com"
    starttls = true          # optional
    username = "..."         # optional, with password
    password = "..."

The standard library's smtplib runs in a thread; a failure is logged and audited, never fatal.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import structlog

from broker.session.live import LiveSession
from broker.session.manager import SessionManager
from broker.session.receipt import receipt_text
from broker.store import queries as q
from broker.store.db import Store

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> SmtpSettings | None:
        table = extra.get("smtp")
        if not table or not table.get("host"):
            return None
        return cls(
            host=str(table["host"]),
            port=int(table.get("port", 25)),
            sender=str(table.get("from", "assist-broker@localhost")),
            starttls=bool(table.get("starttls", False)),
            username=table.get("username"),
            password=table.get("password"),
        )


def _send(settings: SmtpSettings, to: str, receipt: Mapping[str, Any]) -> None:
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = to
    message["Subject"] = f"Receipt: remote support on ticket {receipt.get('ticket')}"
    message.set_content(receipt_text(receipt))
    message.add_attachment(
        json.dumps(receipt, indent=2).encode(),
        maintype="application",
        subtype="json",
        filename="receipt.json",
    )
    with smtplib.SMTP(settings.host, settings.port, timeout=20) as smtp:
        if settings.starttls:
            smtp.starttls()
        if settings.username and settings.password:
            smtp.login(settings.username, settings.password)
        smtp.send_message(message)


async def send_receipt(settings: SmtpSettings, to: str, receipt: Mapping[str, Any]) -> None:
    await asyncio.to_thread(_send, settings, to, receipt)


async def mail_receipt(
    store: Store,
    manager: SessionManager,
    extra: Mapping[str, Any],
    live: LiveSession,
    receipt: dict[str, Any],
) -> None:
    """E-mail ``receipt`` to the ticket's customer when SMTP is configured; audited as
    ``receipt.mailed`` (sent or why not)."""
    smtp = SmtpSettings.from_extra(extra)
    if smtp is None:
        return
    async with store.read() as db:
        ticket = await q.find_ticket(db, live.ticket_key)
    if ticket is None or not ticket.customer_email:
        return
    details: dict[str, Any] = {"to": ticket.customer_email}
    try:
        await send_receipt(smtp, ticket.customer_email, receipt)
        details["sent"] = True
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("receipt_mail_failed", session=live.id, error=str(exc))
        details.update(sent=False, error=str(exc)[:200])
    await manager.record(live, "receipt.mailed", "broker", details)
