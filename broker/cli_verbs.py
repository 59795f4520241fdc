"""The commands the HTTP API had first: a ticket's status, the consent codes issued and
withdrawing one, one session in full. Each goes through the same operation as the API
(broker.ops), audited the same way."""

from __future__ import annotations

import argparse
from typing import Any

from broker import ops
from broker.config import Settings
from broker.keys import load_code_key
from broker.ops import COMMAND_LINE, shapes
from broker.session.consent import CodeHasher, ConsentCodes
from broker.store.db import Store


async def cmd_ticket_status(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    status = "closed" if args.action == "close" else args.status
    ticket = await ops.tickets.set_status(store, COMMAND_LINE, args.ticket, status)
    return shapes.ticket(ticket)


async def cmd_code_list(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    return await ops.codes.listed(store, COMMAND_LINE, args.ticket)


async def cmd_code_revoke(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    codes = ConsentCodes(store, CodeHasher(load_code_key(settings.data_dir)))
    code = await ops.codes.revoke(store, COMMAND_LINE, codes, args.id)
    return {"id": code.id, "state": code.state}


async def cmd_session_show(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    return await ops.sessions.show(store, COMMAND_LINE, args.session)


HANDLERS = {
    ("ticket", "status"): cmd_ticket_status,
    ("ticket", "close"): cmd_ticket_status,
    ("code", "list"): cmd_code_list,
    ("code", "revoke"): cmd_code_revoke,
    ("session", "show"): cmd_session_show,
}
