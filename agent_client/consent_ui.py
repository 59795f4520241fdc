"""Everything the customer reads, in plain words, and the yes/no question."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any, TextIO

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
    "Everything is recorded by the support desk. Press Ctrl-C at any time to end the session."
)
ENDED_BY_CUSTOMER = (
    "You ended the session. It is over: nobody can reach this computer through it any more."
)
DECLINED = "You said no. Nobody was given access to this computer."
SESSION_OVER = "The session is over: {message} Nobody can reach this computer through it any more."
LOST = (
    "The connection to the support broker was lost, so the session has ended. Nobody can reach\n"
    "this computer through it any more."
)


def consent_question(hello: dict[str, Any], scope_text: str) -> str:
    ticket = hello["ticket"]
    severity = SEVERITY.get(int(ticket["severity"]), f"Severity {ticket['severity']}")
    return (
        f"{hello['engineer']['display']} from support asks to {scope_text} on this computer "
        f"for ticket {ticket['key']} ({severity}: {ticket['title']}). Allow? [y/N] "
    )


class Console:
    """Prints for the customer and asks yes/no questions without blocking the event loop."""

    def __init__(self, out: TextIO = sys.stdout, inp: TextIO = sys.stdin) -> None:
        self.out = out
        self.inp = inp

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def ask_yes_no(self, question: str) -> bool:
        """Only "y" or "yes" is a yes; anything else, or end of input, is a no."""
        self.out.write(question)
        self.out.flush()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()

        def read() -> None:  # a daemon thread: an unanswered question never blocks exit
            try:
                line = self.inp.readline()
            except (OSError, ValueError):
                line = ""
            loop.call_soon_threadsafe(_settle, answer, line)

        threading.Thread(target=read, name="consent-prompt", daemon=True).start()
        line = await answer
        if not (line.endswith("\n") and self.inp.isatty()):
            self.out.write("\n")  # the terminal echoed nothing (piped input, or end of input)
        return line.strip().lower() in ("y", "yes")


def _settle(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)
