"""While a session runs: the broker's control messages (join requests, the list of engineers,
the end) and the customer's own lines (answers, ``who``, ``remove NAME``, ``end``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from agent_client import consent_ui as ui
from agent_client.compat import TIMEOUTS
from agent_client.console import Console
from assist_protocol import messages as msg
from assist_protocol.safetext import visible

T = TypeVar("T")


async def read_message(reader: asyncssh.SSHReader[str]) -> msg.Message | None:
    """The next control message (its text made visible), or ``None`` when the broker hung up
    or sent something this helper does not understand."""
    while True:
        try:
            line = await reader.readline()
        except (asyncssh.Error, OSError):
            return None
        if not line:
            return None
        if line.strip():
            try:
                message = msg.decode(line)
            except msg.ProtocolError:
                return None
            return shown(message)


def shown(value: T) -> T:
    """Every string the broker sends (ticket titles, names, commands, notices ...) with its
    control characters made visible: the helper prints some of them on the customer's
    terminal, and no text it did not write itself may drive that terminal."""
    result: Any = value
    if isinstance(value, str):
        result = visible(value)
    elif isinstance(value, dict):
        result = {visible(k): shown(v) for k, v in value.items()}
    elif isinstance(value, list):
        result = [shown(v) for v in value]
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: shown(getattr(value, f.name)) for f in dataclasses.fields(value)}
        result = dataclasses.replace(value, **changes)
    return result  # type: ignore[no-any-return]


def send(writer: asyncssh.SSHWriter[str], message: msg.Message) -> bool:
    """Write one control message; ``False`` when the connection to the broker is gone (a
    drop shows itself on a write as often as on a read)."""
    try:
        writer.write(msg.encode(message).decode())
    except (OSError, asyncssh.Error):
        return False
    return True


@dataclass
class Outcome:
    """How the session ended: ``customer``, ``ended`` (by the broker's word) or ``lost``."""

    how: str
    message: msg.Ended | None = None


class ControlLoop:
    def __init__(
        self,
        writer: asyncssh.SSHWriter[str],
        reader: asyncssh.SSHReader[str],
        console: Console,
        *,
        yes: bool,
        end_requested: asyncio.Event,
        names: dict[str, str],
        on_limits: Callable[[float], None] | None = None,
        on_removed: Callable[[str], None] | None = None,
        limits_told: bool = False,
        on_link: Callable[[str], None] | None = None,
    ) -> None:
        #: told the nonce when the broker asks for a reverse link
        self.on_link = on_link
        #: told the name of an engineer the broker removed (their parked shells go too)
        self.on_removed = on_removed
        #: told the seconds left whenever the broker sends the session's limits
        self.on_limits = on_limits
        self.writer = writer
        self.reader = reader
        self.console = console
        self.yes = yes
        self.end_requested = end_requested
        self.pending: deque[msg.Join] = deque()
        #: engineer account name -> display name, for the customer's messages
        self.names = names
        #: after ``r``: the engineers to choose from, by number
        self.choosing: list[msg.Person] | None = None
        #: after ``a`` on a join question: the second key confirms "always"
        self.confirming = False
        #: inside an escape sequence the terminal sent (a reply to a query the engineer's
        #: output made, a function key): 1 after ESC, 2 inside CSI/OSC; such keys answer nothing
        self.escape = 0
        self.limits_told = limits_told
        self.asked_removal = False
        #: set when a write found the connection gone: the loop ends as ``lost``
        self.lost = False

    def _next_input(self) -> asyncio.Future[str | None]:
        source = self.console.next_key if self.console.keyed else self.console.next_line
        return asyncio.ensure_future(source())

    async def run(self) -> Outcome:
        message_task = asyncio.ensure_future(read_message(self.reader))
        line_task: asyncio.Future[str | None] | None = self._next_input()
        end_task = asyncio.ensure_future(self.end_requested.wait())
        try:
            while True:
                waiting = {message_task, end_task} | ({line_task} if line_task else set())
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if end_task in done:
                    return await self._end(message_task)
                if message_task in done:
                    message = message_task.result()
                    if message is None:
                        return Outcome("lost")
                    if isinstance(message, msg.Ended):
                        return Outcome("ended", message)
                    self._on_message(message)
                    message_task = asyncio.ensure_future(read_message(self.reader))
                if line_task is not None and line_task in done:
                    line = line_task.result()
                    if line is None:
                        line_task = None  # no more input: Ctrl-C still ends the session
                    else:
                        if self.console.keyed:
                            self._on_key(line)
                        else:
                            self._on_line(line.strip())
                        line_task = self._next_input()
                if self.lost:
                    return Outcome("lost")
        finally:
            for task in (message_task, line_task, end_task):
                if task is not None:
                    task.cancel()

    async def _end(self, message_task: asyncio.Future[msg.Message | None]) -> Outcome:
        if not send(self.writer, msg.End()):
            return Outcome("lost")  # the caller tells the broker once it is back
        deadline = asyncio.get_running_loop().time() + 2
        try:  # the broker confirms (with the receipt); do not wait long for it
            while True:
                left = deadline - asyncio.get_running_loop().time()
                message = await asyncio.wait_for(asyncio.shield(message_task), max(left, 0.01))
                if message is None or isinstance(message, msg.Ended):
                    return Outcome("customer", message)
                message_task = asyncio.ensure_future(read_message(self.reader))
        except (*TIMEOUTS, asyncssh.Error, OSError):
            return Outcome("customer")

    def _send(self, message: msg.Message) -> None:
        if not send(self.writer, message):
            self.lost = True

    # --- from the broker -------------------------------------------------------------------

    def _on_message(self, message: msg.Message) -> None:
        if isinstance(message, msg.Join):
            self.names[message.engineer.name] = message.engineer.display
            if self.yes:
                who = message.engineer.display
                self.console.say(f"{who} joined: {message.what} (allowed by --yes).")
                self._send(msg.JoinAnswer(id=message.id, allow=True))
                return
            self.pending.append(message)
            if len(self.pending) == 1:
                self._ask_next()
        elif isinstance(message, msg.Engineers):
            if self.asked_removal:
                self.asked_removal = False
                self._offer_removal(message.engineers)
                return
            names = [f"{e.display} ({e.name})" for e in message.engineers]
            self.console.say("Connected: " + (", ".join(names) if names else "nobody right now."))
        elif isinstance(message, msg.Limits):
            if not self.limits_told:  # again after a reconnect: only the status line changes
                self.limits_told = True
                self.console.say(ui.limits_text(message.seconds, message.idle_seconds))
            if self.on_limits is not None:
                self.on_limits(float(message.seconds_left))
        elif isinstance(message, msg.Removed):
            if self.on_removed is not None:
                self.on_removed(message.engineer)
        elif isinstance(message, msg.Link):
            if self.on_link is not None:
                self.on_link(message.nonce)
        elif isinstance(message, msg.Notice):
            self.console.say(message.message)
        elif isinstance(message, msg.Error):
            self.console.say(f"The broker said: {message.message}")

    def _ask_next(self) -> None:
        if self.pending:
            self.console.discard_input()  # keys typed before the question answer nothing
            join = self.pending[0]
            self.console.out.write(
                visible(ui.JOIN_QUESTION.format(engineer=join.engineer.display, what=join.what))
            )
            self.console.out.flush()

    def _answer(self, answer: str) -> None:
        join = self.pending.popleft()
        allow = answer in ("y", "yes", "a", "always")
        self._send(msg.JoinAnswer(id=join.id, allow=allow, always=answer in ("a", "always")))
        who = join.engineer.display
        self.console.say(f"{who} may join." if allow else f"{who} was not let in.")
        self._ask_next()

    def _offer_removal(self, engineers: list[msg.Person]) -> None:
        if not engineers:
            self.console.say("Nobody is connected right now.")
            return
        self.choosing = engineers[:9]
        choices = ", ".join(f"{n} = {e.display}" for n, e in enumerate(self.choosing, 1))
        self.console.say(f"Remove whom? {choices} (any other key: nobody)")

    # --- single keys (on a terminal) -------------------------------------------------------

    def _on_key(self, key: str) -> None:
        if self.pending:
            self._answer_key(key)
            return
        key = key.lower()
        if self.choosing is not None:
            choosing, self.choosing = self.choosing, None
            if key.isdigit() and 1 <= int(key) <= len(choosing):
                self._send(msg.Remove(choosing[int(key) - 1].name))
            else:
                self.console.say("Nobody was removed.")
            return
        if key == "q":
            self.end_requested.set()
        elif key == "r":
            self.asked_removal = True
            self._send(msg.Who())
        elif key == "w":
            self._send(msg.Who())
        elif key in ("?", "h"):
            self.console.say(ui.KEYS_HELP)

    def _answer_key(self, key: str) -> None:
        """A join question takes one key, pressed after it was shown (those typed before were
        discarded): "y" allows, any other key says no, so a command typed into the live view by
        habit lets nobody in. "a" (always) asks once more, so that "apt ..." typed by habit is
        a no too. An escape sequence (what a terminal sends for a function key, or as its reply
        to a query the engineer's output made) answers nothing."""
        if self._in_escape(key):
            return
        key = key.lower()
        if self.confirming:
            self.confirming = False
            answer = "a" if key == "y" else "n"
        elif key == "a":
            self.confirming = True
            who = self.pending[0].engineer.display
            self.console.out.write("a\n")
            self.console.say(ui.CONFIRM_ALWAYS.format(engineer=who))
            return
        else:
            answer = "y" if key == "y" else "n"
        self.console.out.write(answer + "\n")
        self.console.out.flush()
        self._answer(answer)

    def _in_escape(self, key: str) -> bool:
        """Whether ``key`` belongs to an escape sequence: ESC, then CSI (``[`` ... a final byte
        @ to ~), OSC (``]`` ... BEL or ESC \\), SS3 (``O`` and one key) or one key."""
        state = self.escape
        if key == "\x1b":
            self.escape = 1
        elif state == 1:
            self.escape = {"[": 2, "]": 3, "O": 4}.get(key, 0)
        elif state == 2:
            self.escape = 0 if "\x40" <= key <= "\x7e" else 2
        elif state == 3:
            self.escape = 0 if key == "\x07" else 3
        elif state == 4:
            self.escape = 0
        else:
            return False
        return True

    # --- from the customer -----------------------------------------------------------------

    def _on_line(self, line: str) -> None:
        if self.pending:
            self._answer(line.lower())
            return
        word, _, rest = line.partition(" ")
        word = word.lower()
        if word == "who":
            self._send(msg.Who())
        elif word == "remove" and rest.strip():
            self._send(msg.Remove(rest.strip()))
        elif word in ("end", "q", "quit", "exit"):
            self.end_requested.set()
        elif word:
            self.console.say(ui.HELP)
