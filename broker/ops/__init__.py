"""Operations: each change people make (open a ticket, add an account, issue a code, end a
session ...) written once, with its input checks, who may do it, its effect and its audit event
in one transaction. The command line, the HTTP API (and later the support desk) call these; they
only turn their own input into arguments and the result into their own output.

Every operation takes the :class:`Actor` asking first; :func:`operation` declares the roles
that may call it, and the API declares its routes with the same roles (``op.roles``), so the
two cannot drift apart.
"""

from broker.ops import accounts, codes, sessions, tickets
from broker.ops.base import ADMIN, AUDITOR, COMMAND_LINE, ENGINEER, EVERYONE, Actor, Operation

__all__ = [
    "ADMIN",
    "AUDITOR",
    "COMMAND_LINE",
    "ENGINEER",
    "EVERYONE",
    "Actor",
    "Operation",
    "accounts",
    "codes",
    "sessions",
    "tickets",
]
