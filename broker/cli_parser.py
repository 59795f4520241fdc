"""The command line's grammar: every command, its options and their help, and nothing else.

Only the standard library is imported here, so ``assist-broker --help`` and a mistyped option
answer at once; the commands themselves (broker.cli_commands and friends) load the database,
SSH and crypto libraries when one runs.
"""

from __future__ import annotations

import argparse
from typing import Any

#: the account roles (broker.store.queries.ROLES; a test checks they agree)
ROLES = ("engineer", "auditor", "admin")
#: a ticket's statuses (broker.ops.tickets.STATUSES; a test checks they agree)
STATUSES = ("open", "pending", "resolved", "closed")

DESCRIPTION = """\
The admin and engineer command line of assist-broker. Every command takes --data-dir,
--config and --json, before or after the command's name. Output is text for people; --json
prints the same result as JSON for scripts. Errors print one line on standard error."""

EXIT_CODES = """\
exit status:
  0    done
  1    not found, not allowed, or a check failed (no such ticket, audit verify found a break,
       no broker answered)
  2    the command was wrong: a bad option or value, a bad settings file; nothing was done
  3    a file or the database could not be used (named in the message)
  4    audit verify --bundle found nothing wrong but had no trusted key to check with
  130  interrupted (Ctrl-C)
  141  the output was closed early (as in `... | head`); no traceback"""


def _globals(suppress: bool) -> argparse.ArgumentParser:
    """The options every command takes. The copy on each subcommand has no defaults
    (``SUPPRESS``), so it only sets what was given after the command's name and never
    overwrites what was given before it."""
    common = argparse.ArgumentParser(add_help=False)
    default: dict[str, object] = {"default": argparse.SUPPRESS} if suppress else {}
    group = common.add_argument_group("options of every command")
    group.add_argument(
        "--data-dir",
        help="where keys and the database live (default: ASSIST_DATA_DIR, else ./var)",
        **default,  # type: ignore[arg-type]
    )
    group.add_argument(
        "--config",
        help="settings file (default: ASSIST_CONFIG, else DATA_DIR/broker.toml)",
        **default,  # type: ignore[arg-type]
    )
    group.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON instead of text",
        **default,  # type: ignore[arg-type]
    )
    return common


def _group(sub: Any, name: str, help: str) -> Any:  # argparse keeps its subparser type private
    parser = sub.add_parser(name, parents=[_globals(suppress=True)], help=help, description=help)
    return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def build_parser() -> argparse.ArgumentParser:
    top = _globals(suppress=False)
    common = _globals(suppress=True)
    parser = argparse.ArgumentParser(
        prog="assist-broker",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        parents=[top],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def leaf(group: Any, name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(
            name,
            parents=[common],
            help=help,
            description=help,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return parser

    serve = leaf(sub, "serve", "run the broker")
    serve.add_argument("--ssh-listen", help="HOST:PORT for SSH (default 127.0.0.1:2222)")
    serve.add_argument("--http-listen", help="HOST:PORT for HTTP (default 127.0.0.1:8080)")
    serve.add_argument("--log-level", help="debug, info, warning (default info)")

    leaf(_group(sub, "db", "database maintenance"), "upgrade", "apply schema migrations")

    ticket = _group(sub, "ticket", "tickets")
    create = leaf(ticket, "create", "open a ticket")
    create.add_argument("--title", required=True, help="what the problem is, in one line")
    create.add_argument(
        "--severity", required=True, type=int, choices=(1, 2, 3, 4), help="1 (worst) to 4"
    )
    create.add_argument("--customer-email", help="where the session receipt is mailed")
    create.add_argument("--customer-name", help="the customer's name, as the engineer sees it")
    create.add_argument("--key", help="use this key instead of T-<number>")
    leaf(ticket, "list", "list tickets")
    show = leaf(ticket, "show", "show one ticket with its sessions")
    show.add_argument("ticket", help="the ticket's key, e.g. T-1")
    assign = leaf(ticket, "assign", "restrict a ticket to these engineers (none: open to all)")
    assign.add_argument("ticket", help="the ticket's key, e.g. T-1")
    assign.add_argument("engineers", nargs="*", help="account names (none: every engineer)")
    status = leaf(ticket, "status", "change a ticket's status")
    status.add_argument("ticket", help="the ticket's key, e.g. T-1")
    status.add_argument("status", choices=STATUSES, help=", ".join(STATUSES))
    close = leaf(ticket, "close", "close a ticket (the same as: ticket status TICKET closed)")
    close.add_argument("ticket", help="the ticket's key, e.g. T-1")

    account = _group(sub, "account", "accounts")
    add = leaf(account, "add", "add an account")
    add.add_argument("name", help="the login name, e.g. alice")
    add.add_argument("--role", required=True, choices=ROLES, help=", ".join(ROLES))
    add.add_argument("--name", dest="display_name", help="display name, e.g. 'Alice Smith'")
    add.add_argument(
        "--ssh-key",
        action="append",
        default=[],
        help="public key file, e.g. alice.pub from ssh-keygen -t ed25519 -f alice (repeatable)",
    )
    leaf(account, "list", "list accounts")
    password = leaf(account, "password", "set an account's web login password")
    password.add_argument("name", help="the account")
    password.add_argument(
        "--password-stdin", action="store_true", help="read it from standard input"
    )
    for verb, what in (
        ("disable", "disable an account (ends its logins at once)"),
        ("enable", "enable a disabled account"),
    ):
        leaf(account, verb, what).add_argument("name", help="the account")

    code = _group(sub, "code", "consent codes")
    issue = leaf(code, "issue", "issue a one-time consent code")
    issue.add_argument("ticket", help="the ticket's key, e.g. T-1")
    issue.add_argument("--engineer", required=True, help="the engineer who will connect")
    issue.add_argument("--ttl", help="how long the code stays valid (default 10m)")
    issue.add_argument("--scope", help="what the engineer may do (default shell,exec)")
    clist = leaf(code, "list", "list consent codes (never the codes themselves)")
    clist.add_argument("--ticket", help="only this ticket's codes")
    crevoke = leaf(code, "revoke", "withdraw an unused consent code")
    crevoke.add_argument("id", type=int, help="the code's id (in code list)")

    session = _group(sub, "session", "sessions")
    slist = leaf(session, "list", "list sessions")
    slist.add_argument("--ticket", help="only this ticket's sessions")
    sshow = leaf(session, "show", "one session with its channels and reviews")
    sshow.add_argument("session", help="session id")
    send = leaf(session, "end", "end a live session (as admin)")
    send.add_argument("session", help="session id (or a unique prefix of it)")
    handoff = leaf(session, "handoff", "hand a session over: only this engineer may continue")
    handoff.add_argument("session", help="session id (or a unique prefix of it)")
    handoff.add_argument("--to", required=True, help="the engineer who takes over")

    _evidence(leaf, sub)

    token = _group(sub, "token", "API tokens")
    tcreate = leaf(token, "create", "a new API token (shown once)")
    tcreate.add_argument("name", help="the account")
    tcreate.add_argument("--label", default="cli", help="what the token is for")
    tcreate.add_argument("--expires", default="90d", help="lifetime, e.g. 30d (default 90d)")
    leaf(token, "list", "an account's tokens").add_argument("name", help="the account")
    leaf(token, "revoke", "revoke a token").add_argument(
        "id", type=int, help="the token's id (in token list)"
    )

    certs = leaf(sub, "certs", "make a self-signed HTTPS certificate (for tests)")
    certs.add_argument("--host", action="append", help="name or address (repeatable)")
    certs.add_argument("--days", type=int, default=30, help="how long it is valid (default 30)")

    sshconf = leaf(sub, "ssh-config", "an ssh_config block for a ticket, pinning the host key")
    sshconf.add_argument("ticket", help="the ticket's key, e.g. T-1")
    sshconf.add_argument("--identity", help="the engineer's private key file")
    sshconf.add_argument(
        "--known-hosts",
        help="write the broker's host key line to this file, which the block names "
        "(default: the block names ~/.ssh/known_hosts.assist-broker, and the line is printed)",
    )
    return parser


def _evidence(leaf: Any, sub: Any) -> None:
    audit = _group(sub, "audit", "the audit trail")
    ashow = leaf(audit, "show", "the audit events (of one ticket, or all)")
    ashow.add_argument("ticket", nargs="?", help="the ticket's key (default: every event)")
    apub = leaf(audit, "pubkey", "the public key that signs checkpoints")
    apub.add_argument(
        "--allowed-signers", help="also write an allowed_signers file for ssh-keygen -Y verify"
    )
    averify = leaf(audit, "verify", "check the chain, the signatures and the recordings")
    averify.add_argument("--ticket", help="count and check this ticket's events and recordings")
    averify.add_argument("--bundle", help="check an export bundle instead (no database needed)")
    averify.add_argument(
        "--pubkey", help="with --bundle: the broker's audit public key file (PEM or OpenSSH)"
    )
    averify.add_argument(
        "--allowed-signers", help="with --bundle: an allowed_signers file naming the key you trust"
    )
    aprune = leaf(audit, "prune", "delete recordings past retention")
    aprune.add_argument("--dry-run", action="store_true", help="only list what would go")
    aexport = leaf(audit, "export", "one ticket's evidence, one file")
    aexport.add_argument("--ticket", required=True, help="the ticket's key, e.g. T-1")
    aexport.add_argument("--out", required=True, help="the bundle file to write (a tar)")

    recording = _group(sub, "recording", "recordings")
    rplay = leaf(recording, "play", "replay a channel's recording")
    rplay.add_argument("channel", type=int, help="the channel id (in audit show)")
    rplay.add_argument("--speed", type=float, default=1.0, help="2 = twice as fast")
    rplay.add_argument("--idle", type=float, default=2.0, help="longest pause, in seconds")
    rexport = leaf(recording, "export", "copy a recording out")
    rexport.add_argument("channel", type=int, help="the channel id (in audit show)")
    rexport.add_argument("--out", required=True, help="the file to write (asciicast or raw)")
