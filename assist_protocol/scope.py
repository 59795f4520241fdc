"""The consent scope language and the one decision function, shared by broker and helper.

Pure and standard-library only: the helper imports this module too, so that the customer's side
checks every channel against the same rules (a faulty broker still cannot widen the consent).

Scope items: ``shell`` (PTY shell), ``exec`` (commands), ``sftp`` (file transfer), ``sftp-read``
(downloads only), ``port:N`` / ``port:HOST:N`` (a ``-L`` destination on the customer's side),
``observe`` (read-only view of a shell).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SIMPLE_ITEMS = ("shell", "exec", "sftp", "sftp-read", "observe")

_PLAIN = {
    "shell": "open a shell",
    "exec": "run commands",
    "sftp": "copy, change and delete files",
    "sftp-read": "read and copy files (no changes)",
    "observe": "let colleagues watch",
}


class ScopeError(ValueError):
    """The scope text is not valid; the message says which item and why."""


@dataclass(frozen=True, order=True)
class PortGrant:
    host: str
    port: int

    def __str__(self) -> str:
        return f"port:{self.port}" if self.host == "localhost" else f"port:{self.host}:{self.port}"


@dataclass(frozen=True)
class Scope:
    """An immutable set of grants. ``str(scope)`` is its canonical text form."""

    items: frozenset[str]
    ports: frozenset[PortGrant]

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> Scope:
        parts = text.split(",") if isinstance(text, str) else list(text)
        items: set[str] = set()
        ports: set[PortGrant] = set()
        for raw in parts:
            item = raw.strip().lower()
            if not item:
                continue
            if item in SIMPLE_ITEMS:
                items.add(item)
            elif item.startswith("port:"):
                ports.add(_parse_port(item))
            else:
                known = ", ".join((*SIMPLE_ITEMS, "port:N", "port:HOST:N"))
                raise ScopeError(f"unknown scope item {raw.strip()!r} (known: {known})")
        if not items and not ports:
            raise ScopeError("the scope is empty: name at least one of shell, exec, sftp, port:N")
        return cls(frozenset(items), frozenset(ports))

    def __str__(self) -> str:
        ordered = [i for i in SIMPLE_ITEMS if i in self.items]
        return ",".join([*ordered, *(str(p) for p in sorted(self.ports))])

    def narrowed_to(self, other: Scope) -> Scope:
        """The part of ``other`` that this scope allows: a customer can narrow, never widen."""
        items = {i for i in other.items if i in self.items}
        if "sftp-read" in other.items and "sftp" in self.items:
            items.add("sftp-read")
        ports = {p for p in other.ports if p in self.ports}
        if not items and not ports:
            raise ScopeError("nothing of what was asked for would be left")
        return Scope(frozenset(items), frozenset(ports))

    def beyond(self, wanted: Scope) -> Scope | None:
        """What ``wanted`` names that this scope does not hold (``None``: nothing), so that a
        customer's narrower scope that names more is told, not silently cut."""
        items = {
            i
            for i in wanted.items
            if i not in self.items and not (i == "sftp-read" and "sftp" in self.items)
        }
        ports = {p for p in wanted.ports if p not in self.ports}
        return Scope(frozenset(items), frozenset(ports)) if items or ports else None

    def describe(self) -> str:
        """Plain words for the customer: "open a shell and run commands"."""
        phrases = [_PLAIN[i] for i in SIMPLE_ITEMS if i in self.items]
        if "sftp" in self.items and "sftp-read" in self.items:
            phrases.remove(_PLAIN["sftp-read"])
        for grant in sorted(self.ports):
            where = "" if grant.host == "localhost" else f" on {grant.host}"
            phrases.append(f"connect to port {grant.port}{where}")
        if len(phrases) == 1:
            return phrases[0]
        return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _parse_port(item: str) -> PortGrant:
    rest = item[len("port:") :]
    host, _, port = rest.rpartition(":")
    host = host.strip("[]") or "localhost"
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ScopeError(f"scope item {item!r} needs a port number from 1 to 65535")
    if not _HOST.fullmatch(host):
        raise ScopeError(
            f"the host in scope item {item!r} may hold only letters, digits, '.', '-', '_' "
            "(a name or an IPv4 address) or hex digits and ':' in brackets (IPv6)"
        )
    return PortGrant(host, int(port))


#: a host name, an IPv4 address, or an IPv6 address (its brackets stripped)
_HOST = re.compile(r"[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?|[0-9a-f:.]{2,45}", re.ASCII)


@dataclass(frozen=True)
class ChannelRequest:
    """What an engineer asks to open. ``kind`` is shell, exec, sftp, subsystem or forward."""

    kind: str
    pty: bool = False
    subsystem: str | None = None
    host: str | None = None
    port: int | None = None
    #: for ``sftp``: whether the channel may change files (scp uploads do; sftp may)
    write: bool = True


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: the scope item that allows it, or a plain-words reason for the refusal
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def decide(scope: Scope, request: ChannelRequest) -> Decision:
    """May a channel of this kind be opened under this granted scope? Deny by default."""
    granted = str(scope)
    if request.kind == "shell":
        if "shell" in scope.items:
            return Decision(True, "shell")
        return Decision(False, f"a shell is not in the consent (granted: {granted})")
    if request.kind == "exec":
        if "exec" in scope.items:
            return Decision(True, "exec")
        return Decision(False, f"running commands is not in the consent (granted: {granted})")
    if request.kind == "sftp":
        if "sftp" in scope.items:
            return Decision(True, "sftp")
        if "sftp-read" in scope.items:
            if not request.write:
                return Decision(True, "sftp-read")
            return Decision(False, f"uploads are not in the consent (granted: {granted})")
        return Decision(False, f"file transfer is not in the consent (granted: {granted})")
    if request.kind == "observe":
        if "observe" in scope.items:
            return Decision(True, "observe")
        return Decision(False, f"watching is not in the consent (granted: {granted})")
    if request.kind == "subsystem":
        return Decision(False, f"the subsystem {request.subsystem!r} is not available")
    if request.kind == "forward":
        host = (request.host or "").lower()
        for grant in scope.ports:
            same_host = host == grant.host or (host in _LOCAL_NAMES and grant.host == "localhost")
            if same_host and request.port == grant.port:
                return Decision(True, str(grant))
        return Decision(
            False, f"{request.host}:{request.port} is not in the consent (granted: {granted})"
        )
    return Decision(False, f"{request.kind} channels are not allowed")


#: environment variables an engineer's client may pass on to the customer's side
ALLOWED_ENV = re.compile(r"TERM|LANG|LC_[A-Z_]+")


def split_env(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The variables passed on, and the names of those refused."""
    allowed = {k: v for k, v in env.items() if ALLOWED_ENV.fullmatch(k)}
    return allowed, sorted(k[:64] for k in env if k not in allowed)
