"""``assist-broker``: the admin and engineer command line. Every command takes ``--data-dir``
and ``--json``; errors print one plain line and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from assist_protocol.safetext import visible
from broker import cli_web, ops, render
from broker.cli_evidence import (
    cmd_audit_export,
    cmd_audit_prune,
    cmd_audit_pubkey,
    cmd_audit_verify,
    cmd_recording_export,
    cmd_recording_play,
    verify_bundle_file,
)
from broker.config import Settings, load_settings, parse_duration
from broker.errors import BrokerError, Invalid
from broker.evidence.checkpoints import Checkpointer
from broker.evidence.signing import Signer
from broker.keys import ensure_data_dir, load_code_key, load_seal_key
from broker.logsetup import configure_logging
from broker.ops import COMMAND_LINE, shapes
from broker.ops.control import ViaBroker
from broker.session.consent import CodeHasher, ConsentCodes
from broker.store import queries as q
from broker.store.db import Store

Handler = Callable[[argparse.Namespace, Settings, Store], Awaitable[Any]]


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="where keys and the database live (default ./var)")
    common.add_argument("--config", help="settings file (default DATA_DIR/broker.toml)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="assist-broker", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the broker")
    serve.add_argument("--ssh-listen", help="HOST:PORT for SSH (default 127.0.0.1:2222)")
    serve.add_argument("--http-listen", help="HOST:PORT for HTTP (default 127.0.0.1:8080)")
    serve.add_argument("--log-level", help="debug, info, warning (default info)")

    db = sub.add_parser("db", help="database maintenance").add_subparsers(
        dest="action", required=True
    )
    db.add_parser("upgrade", parents=[common], help="apply schema migrations")

    ticket = sub.add_parser("ticket", help="tickets").add_subparsers(dest="action", required=True)
    create = ticket.add_parser("create", parents=[common], help="open a ticket")
    create.add_argument("--title", required=True)
    create.add_argument("--severity", required=True, type=int, choices=(1, 2, 3, 4))
    create.add_argument("--customer-email")
    create.add_argument("--customer-name")
    create.add_argument("--key", help="use this key instead of T-<number>")
    ticket.add_parser("list", parents=[common], help="list tickets")
    assign = ticket.add_parser(
        "assign", parents=[common], help="restrict a ticket to these engineers (none: open to all)"
    )
    assign.add_argument("ticket")
    assign.add_argument("engineers", nargs="*")
    show = ticket.add_parser("show", parents=[common], help="show one ticket")
    show.add_argument("ticket")

    account = sub.add_parser("account", help="accounts").add_subparsers(
        dest="action", required=True
    )
    add = account.add_parser("add", parents=[common], help="add an account")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=q.ROLES)
    add.add_argument("--name", dest="display_name", help="display name, e.g. 'Alice Smith'")
    add.add_argument("--ssh-key", action="append", default=[], help="public key file (repeatable)")
    account.add_parser("list", parents=[common], help="list accounts")

    code = sub.add_parser("code", help="consent codes").add_subparsers(dest="action", required=True)
    issue = code.add_parser("issue", parents=[common], help="issue a one-time consent code")
    issue.add_argument("ticket")
    issue.add_argument("--engineer", required=True, help="the engineer who will connect")
    issue.add_argument("--ttl", help="how long the code stays valid (default 10m)")
    issue.add_argument("--scope", help="what the engineer may do (default shell,exec)")

    session = sub.add_parser("session", help="sessions").add_subparsers(
        dest="action", required=True
    )
    slist = session.add_parser("list", parents=[common], help="list sessions")
    slist.add_argument("--ticket")
    send = session.add_parser("end", parents=[common], help="end a live session (as admin)")
    send.add_argument("session", help="session id (or a unique prefix of it)")
    handoff = session.add_parser(
        "handoff", parents=[common], help="hand a session over: only this engineer may continue"
    )
    handoff.add_argument("session", help="session id (or a unique prefix of it)")
    handoff.add_argument("--to", required=True, help="the engineer who takes over")

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="action", required=True
    )
    ashow = audit.add_parser("show", parents=[common], help="a ticket's audit events")
    ashow.add_argument("ticket", nargs="?")
    apub = audit.add_parser(
        "pubkey", parents=[common], help="the public key that signs checkpoints"
    )
    apub.add_argument(
        "--allowed-signers", help="also write an allowed_signers file for ssh-keygen -Y verify"
    )
    averify = audit.add_parser(
        "verify", parents=[common], help="check the chain, the signatures and the recordings"
    )
    averify.add_argument("--ticket", help="count and check this ticket's events and recordings")
    averify.add_argument("--bundle", help="check an export bundle instead (no database needed)")
    averify.add_argument(
        "--pubkey", help="with --bundle: the broker's audit public key file (PEM or OpenSSH)"
    )
    averify.add_argument(
        "--allowed-signers", help="with --bundle: an allowed_signers file naming the key you trust"
    )
    aprune = audit.add_parser("prune", parents=[common], help="delete recordings past retention")
    aprune.add_argument("--dry-run", action="store_true", help="only list what would go")
    aexport = audit.add_parser("export", parents=[common], help="one ticket's evidence, one file")
    aexport.add_argument("--ticket", required=True)
    aexport.add_argument("--out", required=True, help="the bundle file to write (a tar)")

    recording = sub.add_parser("recording", help="recordings").add_subparsers(
        dest="action", required=True
    )
    rplay = recording.add_parser("play", parents=[common], help="replay a channel's recording")
    rplay.add_argument("channel", type=int, help="the channel id (in audit show)")
    rplay.add_argument("--speed", type=float, default=1.0, help="2 = twice as fast")
    rplay.add_argument("--idle", type=float, default=2.0, help="longest pause, in seconds")
    rexport = recording.add_parser("export", parents=[common], help="copy a recording out")
    rexport.add_argument("channel", type=int)
    rexport.add_argument("--out", required=True)

    cli_web.register(sub, account, common)

    sshconf = sub.add_parser("ssh-config", parents=[common], help="ssh_config block for a ticket")
    sshconf.add_argument("ticket")
    sshconf.add_argument("--identity", help="the engineer's private key file")
    return parser


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
    return render.ssh_config(ticket.key, settings, args.identity)


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
    ("audit", "pubkey"): cmd_audit_pubkey,
    ("audit", "verify"): cmd_audit_verify,
    ("audit", "export"): cmd_audit_export,
    ("audit", "prune"): cmd_audit_prune,
    ("recording", "play"): cmd_recording_play,
    ("recording", "export"): cmd_recording_export,
    ("ssh-config", None): cmd_ssh_config,
    **cli_web.HANDLERS,
}


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
}


async def _run(args: argparse.Namespace, settings: Settings) -> Any:
    ensure_data_dir(settings.data_dir)
    store = Store(settings.db_url)
    store.seal_key = load_seal_key(settings.data_dir)
    command = (args.command, getattr(args, "action", None))
    try:
        await store.upgrade()
        try:
            return await HANDLERS[command](args, settings, store)
        finally:
            if command not in READ_ONLY:
                # What this command wrote is signed now, not when a broker next looks: the
                # head is always signed, with or without a broker running.
                await Checkpointer(store, Signer.load(settings.data_dir)).sign_quietly()
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # keys, database and recordings are for the broker's user only
    args = build_parser().parse_args(argv)
    flags = {
        "data_dir": args.data_dir,
        "config": args.config,
        "ssh_listen": getattr(args, "ssh_listen", None),
        "http_listen": getattr(args, "http_listen", None),
        "log_level": getattr(args, "log_level", None),
    }
    try:
        settings = load_settings(flags)
        configure_logging(
            settings.log_level if args.command == "serve" else "warning", settings.log_format
        )
        if args.command == "serve":
            from broker.serve import serve

            return asyncio.run(serve(settings))
        if args.command == "audit" and args.action == "verify" and args.bundle:
            result = verify_bundle_file(args.bundle, args.pubkey, args.allowed_signers)
        else:
            result = asyncio.run(_run(args, settings))
    except BrokerError as exc:
        print(f"assist-broker: {visible(exc.message, keep_newlines=True)}", file=sys.stderr)
        return exc.exit_status
    except DBAPIError as exc:
        where = render.safe_url(settings.db_url)
        print(
            f"assist-broker: cannot use the database {where}: {visible(exc.orig)}", file=sys.stderr
        )
        return 3
    except OSError as exc:
        where = render.safe_url(settings.db_url) if "settings" in locals() else "the database"
        print(f"assist-broker: cannot use the database {where}: {visible(exc)}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    if isinstance(result, dict) and result.pop("_quiet", False) and not args.json:
        return 0
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(render.human(args.command, getattr(args, "action", None), result))
    return 0
