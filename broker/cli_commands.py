"""The commands' work: each turns its arguments into an operation (broker.ops) or a read of
the store, and returns a plain result (text in broker.render, JSON with ``--json``). Loaded by
broker.cli only once a command runs: this is where the database and SSH libraries come in."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from broker import listening, ops, render
from broker.config import Settings, parse_duration
from broker.errors import Invalid, NotFound
from broker.keys import ensure_data_dir, host_public_key, load_code_key, load_seal_key
from broker.ops import COMMAND_LINE, shapes
from broker.ops.control import ViaBroker
from broker.session.consent import CodeHasher, ConsentCodes
from broker.store import queries as q
from broker.store.db import Store

Handler = Callable[[argparse.Namespace, Settings, Store], Awaitable[Any]]


# --- handlers ------------------------------------------------------------------------------


async def cmd_db_upgrade(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    return {"database": render.safe_url(settings.db_url), "status": "up to date"}


async def cmd_ticket_create(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    ticket = await ops.tickets.create(
        store,
        COMMAND_LINE,
        title=args.title,
        severity=args.severity,
        customer_email=args.customer_email,
        customer_name=args.customer_name,
        key=args.key,
    )
    return shapes.ticket(ticket)


async def cmd_ticket_list(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    async with store.read() as db:
        return [shapes.ticket(t) for t in await q.list_tickets(db)]


async def cmd_ticket_assign(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    return await ops.tickets.assign(store, COMMAND_LINE, args.ticket, list(args.engineers))


async def cmd_ticket_show(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    return await ops.tickets.show(store, COMMAND_LINE, args.ticket)


async def cmd_account_add(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    lines: list[str] = []
    for path in args.ssh_key:
        try:
            text = Path(path).read_text()  # noqa: ASYNC240 - a small local file, read once
        except OSError as exc:
            raise Invalid(f"cannot read the key file {path}: {exc.strerror}") from None
        lines += text.splitlines()
        ops.accounts.public_keys(text.splitlines(), where=path)  # name the file that is wrong
    if args.role == "engineer" and not args.ssh_key:
        raise Invalid("an engineer needs at least one --ssh-key to log in")
    account, keys = await ops.accounts.add(
        store,
        COMMAND_LINE,
        name=args.name,
        role=args.role,
        display_name=args.display_name,
        ssh_keys=lines,
    )
    return {**shapes.account(account, len(keys)), "keys": keys}


async def cmd_account_list(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    async with store.read() as db:
        return [shapes.account(a, n) for a, n in await q.list_accounts(db)]


async def cmd_code_issue(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    ttl = parse_duration(args.ttl, what="--ttl") if args.ttl else settings.code_ttl
    codes = ConsentCodes(store, CodeHasher(load_code_key(settings.data_dir)))
    try:
        code, row, scope = await ops.codes.issue(
            store,
            COMMAND_LINE,
            codes,
            args.ticket,
            engineer=args.engineer,
            scope=args.scope or settings.default_scope,
            ttl=ttl,
        )
    except Invalid as exc:  # name the flag the scope came from
        raise Invalid(exc.message.replace("scope: ", "--scope: ", 1)) from None
    return {
        "code": code,
        "ticket": args.ticket.upper(),
        "scope": str(scope),
        "scope_text": scope.describe(),
        "expires_at": row.expires_at.isoformat(timespec="seconds"),
        "consent_id": row.id,
    }


async def cmd_session_list(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    async with store.read() as db:
        ticket = await q.get_ticket(db, args.ticket) if args.ticket else None
        names = await q.names_by_id(db)
        tickets = {t.id: t.key for t in await q.list_tickets(db)}
        return [
            shapes.session(s, tickets[s.ticket_id], names.get(s.engineer_id))
            for s in await q.list_sessions(db, ticket)
        ]


async def cmd_session_end(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    return await ops.sessions.end(store, COMMAND_LINE, ViaBroker(store), args.session)


async def cmd_session_handoff(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    return await ops.sessions.handoff(store, COMMAND_LINE, ViaBroker(store), args.session, args.to)


async def cmd_audit_show(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    async with store.read() as db:
        ticket = await q.get_ticket(db, args.ticket) if args.ticket else None
        tickets = {t.id: t.key for t in await q.list_tickets(db)}
        return [
            shapes.event(e, tickets.get(e.ticket_id) if e.ticket_id else None)
            for e in await q.list_audit(db, ticket)
        ]


async def cmd_ssh_config(args: argparse.Namespace, settings: Settings, store: Store) -> Any:
    async with store.read() as db:
        ticket = await q.get_ticket(db, args.ticket)
    running = listening.read(settings.data_dir)
    host, port = (
        (running.host, running.port) if running else (settings.advertised_host, settings.ssh_port)
    )
    if port == 0:
        raise NotFound(
            "No broker is running with this data dir, and the settings leave its SSH port to "
            "chance (port 0): start `assist-broker serve` first."
        )
    host_key = host_public_key(settings.data_dir)
    if host_key is None:
        raise NotFound(
            f"{settings.data_dir} holds no host key yet: start `assist-broker serve` once first."
        )
    line = render.known_hosts_line(host_key)
    known_hosts = args.known_hosts or DEFAULT_KNOWN_HOSTS
    if args.known_hosts:
        _add_known_host(Path(args.known_hosts).expanduser(), line)  # noqa: ASYNC240 - small
    return {
        "ticket": ticket.key,
        "host": host,
        "port": port,
        "known_hosts_file": known_hosts,
        "known_hosts_written": bool(args.known_hosts),
        "known_hosts_line": line,
        "config": render.ssh_config(ticket.key, host, port, args.identity, known_hosts),
    }


def _add_known_host(path: Path, line: str) -> None:
    """Add the broker's line to a known-hosts file, keeping what it holds (it may be the
    engineer's own ``~/.ssh/known_hosts``); once is enough."""
    held = path.read_text().splitlines() if path.exists() else []
    if line in held:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as out:
        if held and not path.read_text().endswith("\n"):
            out.write("\n")
        out.write(line + "\n")


#: where the block looks for the broker's host key when --known-hosts names no file
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts.assist-broker"


HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("db", "upgrade"): cmd_db_upgrade,
    ("ticket", "create"): cmd_ticket_create,
    ("ticket", "list"): cmd_ticket_list,
    ("ticket", "show"): cmd_ticket_show,
    ("ticket", "assign"): cmd_ticket_assign,
    ("account", "add"): cmd_account_add,
    ("account", "list"): cmd_account_list,
    ("code", "issue"): cmd_code_issue,
    ("session", "list"): cmd_session_list,
    ("session", "end"): cmd_session_end,
    ("session", "handoff"): cmd_session_handoff,
    ("audit", "show"): cmd_audit_show,
    ("ssh-config", None): cmd_ssh_config,
}

#: commands whose handlers live in another module of broker (its ``HANDLERS``), imported only
#: when one of them runs: the evidence commands load the signing and SSH libraries
ELSEWHERE: dict[tuple[str, str | None], str] = {
    **dict.fromkeys(
        [
            ("audit", "pubkey"),
            ("audit", "verify"),
            ("audit", "export"),
            ("audit", "prune"),
            ("recording", "play"),
            ("recording", "export"),
        ],
        "cli_evidence",
    ),
    **dict.fromkeys(
        [
            ("account", "password"),
            ("account", "disable"),
            ("account", "enable"),
            ("token", "create"),
            ("token", "list"),
            ("token", "revoke"),
            ("certs", None),
        ],
        "cli_web",
    ),
    **dict.fromkeys(
        [
            ("ticket", "status"),
            ("ticket", "close"),
            ("code", "list"),
            ("code", "revoke"),
            ("session", "show"),
        ],
        "cli_verbs",
    ),
}


def handler(command: tuple[str, str | None]) -> Handler:
    if command in HANDLERS:
        return HANDLERS[command]
    found: Handler = importlib.import_module(f"broker.{ELSEWHERE[command]}").HANDLERS[command]
    return found


#: commands that write no audit event (the others sign the chain head when they are done)
READ_ONLY = {
    ("db", "upgrade"),
    ("ticket", "list"),
    ("ticket", "show"),
    ("account", "list"),
    ("session", "list"),
    ("audit", "show"),
    ("audit", "pubkey"),
    ("audit", "verify"),
    ("token", "list"),
    ("ssh-config", None),
    ("certs", None),
    ("code", "list"),
    ("session", "show"),
}


#: commands that only read what is there: on a data dir that does not exist, they refuse
ONLY_READ = READ_ONLY - {("db", "upgrade"), ("certs", None), ("audit", "pubkey")}


async def run(args: argparse.Namespace, settings: Settings) -> Any:
    """Run the command ``args`` names against the data dir and database of ``settings``."""
    command = (args.command, getattr(args, "action", None))
    if not settings.data_dir.exists():
        if command in ONLY_READ:  # a wrong directory must not turn into a second, empty store
            raise NotFound(
                f"There is no data dir {settings.data_dir.resolve()}. Give the broker's with "
                "--data-dir (or ASSIST_DATA_DIR)."
            )
        print(
            f"assist-broker: created a new data dir {settings.data_dir.resolve()}",
            file=sys.stderr,
        )
    ensure_data_dir(settings.data_dir)
    store = Store(settings.db_url)
    store.seal_key = load_seal_key(settings.data_dir)
    try:
        await store.upgrade()
        try:
            return await handler(command)(args, settings, store)
        finally:
            if command not in READ_ONLY:
                # What this command wrote is signed now, not when a broker next looks: the
                # head is always signed, with or without a broker running.
                from broker.evidence.checkpoints import Checkpointer
                from broker.evidence.signing import Signer

                await Checkpointer(store, Signer.load(settings.data_dir)).sign_quietly()
    finally:
        await store.close()
