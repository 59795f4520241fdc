"""The audit vocabulary: every action the broker writes into the chain, with its detail fields,
declared once.

The one writer (broker.store.queries.append_audit) refuses an action that is not declared here,
and details with a field not declared for it, so an auditor's list of what can happen (the
README's table, made from this module: ``python -m broker.vocabulary``) is complete by
construction, and a typo cannot create a new kind of event. Tests that need events of their
own declare them with :func:`declare`; the broker's code never does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Action:
    name: str
    #: who the actor usually is: customer, broker, an engineer, an account, unknown@SOURCE ...
    actor: str
    #: the detail fields it may carry (each optional)
    fields: tuple[str, ...]
    #: what happened, in a sentence
    means: str


_CHANNEL = (
    "channel_id",
    "kind",
    "command",
    "subsystem",
    "pty",
    "term",
    "width",
    "height",
    "host",
    "port",
    "path",
    "customer_host",
    "reattach",
    "driver",
    "driver_channel",
)
_FILE = ("channel_id", "path")
_ATTRS = ("mode", "size", "uid", "gid", "atime", "mtime")

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            "ticket.created",
            "account",
            ("key", "severity", "title", "customer_name", "customer_email"),
            "A ticket was opened; its evidence starts here.",
        ),
        Action("ticket.assigned", "admin", ("assignees",), "A ticket was restricted to engineers."),
        Action("ticket.updated", "account", ("status",), "A ticket's status changed."),
        Action(
            "account.added",
            "admin",
            ("account", "role", "keys", "password"),
            "An account was added (its key fingerprints; whether it has a password).",
        ),
        Action(
            "account.updated",
            "admin",
            (
                "account",
                "disabled",
                "display_name",
                "password_changed",
                "web_logins_ended",
                "other_web_logins_ended",
                "login_tokens_revoked",
            ),
            "An account was disabled, enabled, renamed or given a new password.",
        ),
        Action("token.created", "account", ("account", "token_id", "name"), "An API token."),
        Action("token.revoked", "account", ("token_id", "name"), "An API token was revoked."),
        Action("web.login", "account", ("source",), "A browser login."),
        Action("web.login_failed", "unknown@SOURCE", ("name",), "A wrong password."),
        Action("web.logout", "account", (), "A browser logout."),
        Action(
            "engineer.auth_failed",
            "unknown@SOURCE",
            ("user", "source", "keys", "reason"),
            "An SSH login with keys no engineer has (or with a key, as the helper).",
        ),
        Action(
            "access.rate_limited",
            "unknown@PREFIX",
            ("where", "prefix", "refused", "over_seconds", "window_seconds"),
            "Tries refused while a network was held back, counted per window.",
        ),
        Action(
            "consent.issued",
            "engineer",
            ("consent_id", "scope", "expires_at"),
            "A consent code was issued (never the code itself).",
        ),
        Action(
            "consent.redeemed",
            "customer",
            ("consent_id", "source", "scope"),
            "A customer's helper redeemed a code; the session begins.",
        ),
        Action(
            "consent.rejected",
            "customer",
            ("consent_id", "source", "reason"),
            "A code was refused (unknown, expired, used, revoked, malformed, busy).",
        ),
        Action("consent.revoked", "account", ("consent_id",), "An unused code was withdrawn."),
        Action(
            "session.consented",
            "customer",
            ("requested_scope", "granted_scope", "customer_host", "helper_host_key", "helper_link"),
            "The customer said yes, to this scope.",
        ),
        Action("session.declined", "customer", ("requested_scope",), "The customer said no."),
        Action("session.started", "customer", ("granted_scope",), "The helper's way in is up."),
        Action(
            "session.join_allowed",
            "customer",
            ("engineer", "what", "always"),
            "The customer let another engineer join.",
        ),
        Action(
            "session.join_declined",
            "customer",
            ("engineer", "what", "always"),
            "The customer did not let an engineer join.",
        ),
        Action(
            "session.join_unanswered",
            "broker",
            ("engineer", "what", "why"),
            "A join question was cut off (a drop, the end).",
        ),
        Action(
            "session.engineer_removed",
            "customer",
            ("engineer", "connections"),
            "The customer removed an engineer.",
        ),
        Action(
            "session.handoff",
            "admin",
            ("to", "previous", "disconnected"),
            "Only this engineer may continue, once the customer agrees.",
        ),
        Action("session.end_requested", "account", ("via",), "Someone asked to end the session."),
        Action(
            "session.disconnected",
            "broker",
            ("grace_seconds",),
            "The helper's connection dropped; the session waits for it.",
        ),
        Action(
            "session.resume_accepted",
            "customer",
            ("source", "gap_seconds"),
            "The helper came back with its resume token.",
        ),
        Action(
            "session.resume_refused",
            "customer",
            ("source", "reason"),
            "A resume was refused (never the token).",
        ),
        Action("session.resumed", "customer", ("gap_seconds",), "The session goes on."),
        Action("session.ended", "broker", ("reason",), "The session ended, with why."),
        Action(
            "session.interrupted",
            "broker",
            ("reason",),
            "The broker stopped without ending the session (found at the next start).",
        ),
        Action(
            "session.reviewed",
            "auditor",
            ("status", "note"),
            "An auditor reviewed or flagged the session.",
        ),
        Action("channel.opened", "engineer", _CHANNEL, "A channel was allowed and opened."),
        Action(
            "channel.refused",
            "engineer",
            (*_CHANNEL, "reason", "why", "names", "user"),
            "A channel or request was refused, with the reason.",
        ),
        Action(
            "channel.closed",
            "engineer",
            (
                "channel_id",
                "kind",
                "reason",
                "bytes_in",
                "bytes_out",
                "exit_status",
                "exit_signal",
                "duration_ms",
            ),
            "A channel ended: bytes each way, exit status, how long.",
        ),
        Action("sftp.open", "engineer", (*_FILE, "flags"), "A file was opened."),
        Action(
            "sftp.close",
            "engineer",
            (*_FILE, "bytes_read", "bytes_written", "sha256", "whole", "size"),
            "A file was closed: bytes read and written, and its SHA-256 when whole.",
        ),
        Action("sftp.list", "engineer", _FILE, "A folder was listed."),
        Action("sftp.setstat", "engineer", (*_FILE, *_ATTRS), "A file's attributes changed."),
        Action("sftp.remove", "engineer", _FILE, "A file was deleted."),
        Action("sftp.rename", "engineer", ("channel_id", "from", "to"), "A file was renamed."),
        Action("sftp.mkdir", "engineer", _FILE, "A folder was made."),
        Action("sftp.rmdir", "engineer", _FILE, "A folder was deleted."),
        Action("sftp.symlink", "engineer", (*_FILE, "target"), "A symbolic link was made."),
        Action("sftp.link", "engineer", (*_FILE, "target"), "A hard link was made."),
        Action(
            "sftp.denied",
            "engineer",
            (*_FILE, "op", "reason"),
            "A file operation outside the consent (read-only) was refused.",
        ),
        Action(
            "sftp.failed",
            "engineer",
            (*_FILE, *_ATTRS, "op", "error", "flags", "from", "to", "target"),
            "A file operation failed on the customer's side.",
        ),
        Action(
            "recording.closed",
            "broker",
            (
                "channel_id",
                "path",
                "sha256",
                "size",
                "record_input",
                "truncated",
                "truncated_by",
                "output_bytes",
                "output_sha256",
                "input_bytes",
                "input_sha256",
                "interrupted",
                "write_failed",
                "unwritten_bytes",
            ),
            "A recording was closed: its path, SHA-256 and size, the streams' totals.",
        ),
        Action(
            "recording.viewed",
            "account",
            ("channel_id", "how", "range"),
            "Recording bytes were read (played, exported, fetched over HTTP).",
        ),
        Action(
            "recording.pruned",
            "retention",
            ("channel_id", "ticket", "path", "sha256", "size", "retention_days"),
            "A recording past retention was deleted; its hash stays.",
        ),
        Action("bundle.exported", "account", ("via", "out"), "A ticket's evidence was exported."),
        Action("receipt.mailed", "broker", ("to", "sent", "error"), "The receipt was e-mailed."),
        Action(
            "broker.store_unavailable",
            "broker",
            ("since", "until", "error", "sessions_ended"),
            "The database could not be written; live sessions were ended.",
        ),
        Action(
            "audit.alarm",
            "broker",
            ("problem", "signing"),
            "The history did not verify before signing; nothing more is signed.",
        ),
    )
}


#: the broker's own actions (not those a test declares)
BROKER_ACTIONS = frozenset(ACTIONS)


class Undeclared(ValueError):
    """An action, or a detail field, that this vocabulary does not declare."""


def check(action: str, details: dict[str, object]) -> None:
    declared = ACTIONS.get(action)
    if declared is None:
        raise Undeclared(f"the audit action {action!r} is not declared in broker.vocabulary")
    unknown = sorted(set(details) - set(declared.fields))
    if unknown:
        raise Undeclared(f"{action} declares no detail field {', '.join(map(repr, unknown))}")


def declare(action: Action) -> None:
    """Add an action (for tests that write events of their own)."""
    ACTIONS[action.name] = action


def markdown() -> str:
    """The README's table of audit events."""
    rows = ["| action | actor | what happened | details |", "| --- | --- | --- | --- |"]
    for action in sorted((ACTIONS[n] for n in BROKER_ACTIONS), key=lambda a: a.name):
        fields = ", ".join(f"`{f}`" for f in action.fields) or "-"
        rows.append(f"| `{action.name}` | {action.actor} | {action.means} | {fields} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
