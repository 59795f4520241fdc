"""Everything the customer reads, in plain words, and the yes/no question."""

from __future__ import annotations

from assist_protocol.messages import Hello
from assist_protocol.scope import Scope

SEVERITY = {
    1: "Severity 1",
    2: "Severity 2",
    3: "Severity 3",
    4: "Severity 4",
}

NEED_FINGERPRINT = (
    "To connect safely, the helper needs the broker's fingerprint (it starts with SHA256:).\n"
    "Ask the engineer for the full command, including --fingerprint, and run that."
)
MISMATCH = (
    "Stop: the broker at {where} could not prove it is the one the engineer named.\n"
    "Its fingerprint is {got}, but the command says {expected}.\n"
    "Nothing was sent. Do not try again with this address: tell the engineer, who should\n"
    "check the broker's address and fingerprint."
)
UNREACHABLE = (
    "Could not reach the support broker at {where} ({reason}).\n"
    "Check the address the engineer gave you and your internet connection, then try again."
)
CONNECTED = (
    "Connected. {engineer} can now {scope} on this computer for ticket {ticket}.\n"
    "Everything is recorded by the support desk. Press Ctrl-C at any time to end the session.\n"
    "Type 'who' to see who is connected, 'remove NAME' to remove one engineer."
)
CONNECTED_KEYS = (
    "Connected. {engineer} can now {scope} on this computer for ticket {ticket}.\n"
    "Everything is recorded by the support desk. You see what the engineer's shell shows.\n"
    "Press q (or Ctrl-C) at any time to end the session; r removes one engineer, w shows who\n"
    "is connected."
)
KEYS_HELP = "Keys: q or Ctrl-C ends the session, r removes one engineer, w shows who is connected."
JOIN_QUESTION = (
    "{engineer} from support wants to join: {what}. Allow? "
    "[y = yes, a = always for {engineer}, N = no] "
)
CONFIRM_ALWAYS = (
    "Let {engineer} in now and whenever they connect again in this session, without asking? "
    "Press y to confirm (any other key: no)."
)
HELP = (
    "Type 'who' to see who is connected, 'remove NAME' to remove one engineer, "
    "'end' (or Ctrl-C) to end the session."
)
ENDED_BY_CUSTOMER = (
    "You ended the session. It is over: nobody can reach this computer through it any more."
)
DECLINED = "You said no. Nobody was given access to this computer."
SESSION_OVER = "The session is over: {message} Nobody can reach this computer through it any more."
DROPPED = (
    "The connection to the support broker dropped. Reconnecting... The engineer's shell keeps\n"
    "running meanwhile; the session ends if the connection is not back within {grace}.\n"
    "Press Ctrl-C to end the session now."
)
RECONNECTED = "Reconnected after {seconds} s. The session goes on."
NOT_BACK = (
    "The connection to the support broker could not be restored within {grace}, so the\n"
    "session has ended. Nobody can reach this computer through it any more."
)
LOST = (
    "The connection to the support broker was lost, so the session has ended. Nobody can reach\n"
    "this computer through it any more."
)


def duration(seconds: int) -> str:
    """``120`` -> ``2 minutes``, ``45`` -> ``45 seconds``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour" + ("s" if hours != 1 else "")
    if seconds >= 60:
        minutes = round(seconds / 60)
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    return f"{seconds} second" + ("s" if seconds != 1 else "")


def limits_text(seconds: int, idle_seconds: int) -> str:
    return (
        f"The session can last up to {duration(seconds)}; it ends sooner if nobody uses it "
        f"for {duration(idle_seconds)}. You will be warned before the time is up."
    )


SCOPE_BEYOND = (
    "--scope names more than the engineer asked for: {words} ({scope}). That is not allowed; "
    "only what was asked for can be."
)


def offered(requested: Scope, narrower: str | None) -> tuple[Scope, str | None]:
    """What the customer offers (what was asked, or less with ``--scope``) and, when ``--scope``
    names more than was asked, the words that say so: told, never given. Raises
    :class:`~assist_protocol.scope.ScopeError` for a ``--scope`` that leaves nothing."""
    if not narrower:
        return requested, None
    wanted = Scope.parse(narrower)
    extra = requested.beyond(wanted)
    told = SCOPE_BEYOND.format(words=extra.describe(), scope=extra) if extra else None
    return requested.narrowed_to(wanted), told


def consent_question(hello: Hello, asked: str, granting: str | None = None) -> str:
    """The question: what the engineer asked for and, when ``--scope`` narrowed it, what the
    customer is about to allow."""
    ticket = hello.ticket
    severity = SEVERITY.get(ticket.severity, f"Severity {ticket.severity}")
    narrowed = f"\nWith --scope you allow only: {granting}." if granting is not None else ""
    return (
        f"{hello.engineer.display} from support asks to {asked} on this computer "
        f"for ticket {ticket.key} ({severity}: {ticket.title}).{narrowed} Allow? [y/N] "
    )
