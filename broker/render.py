"""The command line's text: the plain dicts of a command's result (broker.ops.shapes, the same
as the API's JSON) as readable tables and sentences, every value from outside made visible."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy.engine import make_url

from assist_protocol.safetext import visible


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


#: the name the broker's host key is pinned under (ssh_config's HostKeyAlias)
HOST_KEY_ALIAS = "assist-broker"


def ssh_config(
    ticket_key: str,
    host: str,
    port: int,
    identity: str | None,
    known_hosts: str,
) -> str:
    """A Host block for ``ticket_key`` whose ssh accepts only the broker's own host key, from
    the ``known_hosts`` file (its one line: :func:`known_hosts_line`)."""
    lines = [
        f"Host {ticket_key}",
        f"    HostName {host}",
        f"    Port {port}",
        f"    User {ticket_key}",
        f"    HostKeyAlias {HOST_KEY_ALIAS}",
        f"    UserKnownHostsFile {known_hosts}",
        "    StrictHostKeyChecking yes",
        "    ForwardAgent no",
        "    ForwardX11 no",
    ]
    if identity:
        lines += [f"    IdentityFile {identity}", "    IdentitiesOnly yes"]
    return "\n".join(lines)


def known_hosts_line(host_key: str) -> str:
    return f"{HOST_KEY_ALIAS} {host_key}"


def _cell(column: str, value: Any) -> str:
    """A table cell; times to the second, in UTC (the JSON keeps them whole)."""
    if value is None:
        return ""
    if (column.endswith("_at") or column == "time") and isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
        return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    out = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in out)


def _details(details: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={json.dumps(v) if not isinstance(v, str) or ' ' in v else v}"
        for k, v in details.items()
        if v is not None
    )


#: values the broker composed itself over several lines (a PEM key, a settings snippet)
_OWN_LINES = frozenset({"public_key", "settings", "config"})


def shown(value: Any, *, own_lines: bool = False) -> Any:
    """``value`` with every string in it, keys included, made visible (assist_protocol.safetext):
    titles, names, host names, commands and failed login names come from outside and must
    not drive the admin's terminal. ``own_lines``: a text the broker composed of lines."""
    if isinstance(value, str):
        return visible(value, keep_newlines=own_lines)
    if isinstance(value, dict):
        return {visible(str(k)): shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shown(v) for v in value]
    return value


def human(command: str, action: str | None, result: Any) -> str:
    """The text form of a command's result, every value from outside made visible."""
    if isinstance(result, str):
        return visible(result, keep_newlines=True)
    if isinstance(result, dict):  # only a command's own top-level texts keep their lines
        result = {visible(str(k)): shown(v, own_lines=k in _OWN_LINES) for k, v in result.items()}
    else:
        result = shown(result)
    match (command, action):
        case ("code", "issue"):
            return "\n".join(
                [
                    f"Consent code for {result['ticket']}: {result['code']}",
                    f"It lets the engineer {result['scope_text']} ({result['scope']}), "
                    f"after the customer agrees.",
                    f"Valid until {result['expires_at']}, for one use. It is not shown again.",
                ]
            )
        case ("token", "create"):
            return (
                f"API token {result['id']} for {result['account']} (shown once, valid until "
                f"{result['expires_at']}):\n{result['token']}"
            )
        case ("certs", None):
            return (
                f"Wrote {result['certificate']} and {result['key']} for "
                f"{', '.join(result['hosts'])}. Add to the settings file:\n{result['settings']}"
            )
        case ("audit", "pubkey"):
            return (
                f"{result['public_key'].rstrip()}\n# key id {result['key_id']}\n"
                f"# OpenSSH: {result['openssh']}\n"
                f"# allowed_signers line (ssh-keygen -Y verify):\n{result['allowed_signers']}"
            )
        case ("audit", "prune"):
            return str(result["summary"])
        case ("audit", "export"):
            return (
                f"Wrote {result['out']}: {result['own_events']} events of {result['ticket']} "
                f"(in a chain of {result['events']}), {result['recordings']} recordings, "
                f"signed by {result['key_id']}."
            )
        case ("audit", "verify"):
            return str(result["summary"])
        case ("session", "end"):
            return f"Session {result['session']} ended."
        case ("session", "handoff"):
            gone = ", ".join(result["disconnected"]) or "nobody"
            return (
                f"Session {result['session']} is handed over to {result['to']} "
                f"(disconnected: {gone}). The customer will be asked to let them in."
            )
        case ("ticket", "assign"):
            who = ", ".join(result["assignees"]) or "every engineer"
            return f"{result['ticket']} is open to {who}."
        case ("ticket", "create"):
            return str(result["key"])
        case ("ticket", "list"):
            return _table(result, ["key", "severity", "status", "title", "customer_email"])
        case ("ticket", "show"):
            head = (
                f"{result['key']}  Severity {result['severity']}  {result['status']}\n"
                f"{result['title']}\ncustomer: {result['customer_email'] or '-'}\n"
                f"assignees: {', '.join(result['assignees']) or 'any engineer'}\n"
            )
            return (
                head
                + "\n"
                + _table(
                    result["sessions"], ["id", "state", "engineer", "started_at", "end_reason"]
                )
            )
        case ("account", "add"):
            keys = ", ".join(result["keys"]) or "no keys"
            return f"Added {result['role']} {result['name']} ({result['display_name']}): {keys}"
        case ("account", "disable") | ("account", "enable"):
            if not result["disabled"]:
                return f"{result['account']} is enabled again."
            return (
                f"{result['account']} is disabled: its browser logins and API tokens no longer "
                f"work; SSH logins ended: {result['ssh_logins_ended']}."
            )
        case ("account", "password"):
            return (
                f"The password of {result['account']} is set; "
                f"{result['web_logins_ended']} browser logins were ended and "
                f"{result['login_tokens_revoked']} API tokens made from browser logins revoked."
            )
        case ("account", "list"):
            return _table(result, ["name", "display_name", "role", "keys"])
        case ("session", "list"):
            return _table(
                result,
                [
                    "id",
                    "ticket",
                    "state",
                    "engineer",
                    "granted_scope",
                    "started_at",
                    "ended_at",
                    "end_reason",
                ],
            )
        case ("audit", "show"):
            rows = [{**r, "details": _details(r["details"])} for r in result]
            return _table(rows, ["seq", "time", "ticket", "actor", "action", "details"])
        case ("db", "upgrade"):
            return f"The database {result['database']} is {result['status']}."
        case ("token", "list"):
            return _table(result, ["id", "label", "expires_at", "revoked", "last_used_at"])
        case ("token", "revoke"):
            return f"API token {result['id']} is revoked."
        case ("code", "list"):
            columns = ["id", "ticket", "engineer", "scope", "state", "issued_at", "expires_at"]
            return _table(result, columns)
        case ("code", "revoke"):
            return f"Consent code {result['id']} is {result['state']}: it can no longer be used."
        case ("ticket", "status") | ("ticket", "close"):
            return f"{result['key']} is {result['status']}."
        case ("ssh-config", None):
            where = result["known_hosts_file"]
            pin = (
                f"# The broker's host key (the block accepts no other) is in {where}:"
                if result["known_hosts_written"]
                else f"# The block accepts only the broker's host key: put this line into {where}"
                "\n# (or run again with --known-hosts FILE to have it written):"
            )
            return f"{pin}\n# {result['known_hosts_line']}\n{result['config']}"
        case ("session", "show"):
            return _session(result)
        case ("recording", "export"):
            return f"Wrote {result['out']}."
    return _plain(result)


def _session(s: dict[str, Any]) -> str:
    head = [
        f"Session {s['id']}  {s['ticket']}  {s['state']}  engineer: {s['engineer'] or '-'}",
        f"scope: {s['granted_scope'] or '-'} (asked: {s['requested_scope']})",
        f"started: {_cell('started_at', s['started_at'])}  ended: "
        f"{_cell('ended_at', s['ended_at']) or '-'}  reason: {s['end_reason'] or '-'}",
        f"reviews: {', '.join(r['status'] for r in s['reviews']) or 'none'}",
        "",
    ]
    columns = ["id", "kind", "engineer", "opened_at", "bytes_in", "bytes_out", "close_reason"]
    return "\n".join(head) + _table(s["channels"], columns)


def _plain(result: Any) -> str:
    """Any other result as text: a dict as ``key: value`` lines, a list as a table (never
    JSON: that is what ``--json`` is for)."""
    if isinstance(result, dict):
        return "\n".join(f"{k}: {_cell(k, v)}" for k, v in result.items())
    if isinstance(result, list) and all(isinstance(r, dict) for r in result):
        return _table(result, list(result[0]) if result else [])
    return str(result)
