"""While a session runs: the broker's control messages (join requests, the list of engineers,
the end) and the customer's own lines (answers, ``who``, ``remove NAME``, ``end``)."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from agent_client import consent_ui as ui
from agent_client.console import Console
from broker.safetext import visible


async def read_message(reader: asyncssh.SSHReader[str]) -> dict[str, Any] | None:
    """The next control message, or ``None`` when the broker hung up."""
    while True:
        try:
            line = await reader.readline()
        except (asyncssh.Error, OSError):
            return None
        if not line:
            return None
        if line.strip():
            try:
                message = json.loads(line)
            except ValueError:
                return None
            return _shown(message) if isinstance(message, dict) else None


def _shown(value: Any) -> Any:
    """Every string the broker sends (ticket titles, names, commands, notices ...) with its
    control characters made visible: the helper prints some of them on the customer's
    terminal, and no text it did not write itself may drive that terminal."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {visible(k): _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


def send(writer: asyncssh.SSHWriter[str], message: dict[str, Any]) -> bool:
    """Write one control message; ``False`` when the connection to the broker is gone (a
    drop shows itself on a write as often as on a read)."""
    try:
        writer.write(json.dumps(message) + "\n")
    except (OSError, asyncssh.Error):
        return False
    return True


@dataclass
class Outcome:
    """How the session ended: ``customer``, ``ended`` (by the broker's word) or ``lost``."""

    how: str
    message: dict[str, Any] | None = None


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
        self.pending: deque[dict[str, Any]] = deque()
        #: engineer account name -> display name, for the customer's messages
        self.names = names
        #: after ``r``: the engineers to choose from, by number
        self.choosing: list[dict[str, str]] | None = None
        #: what the customer typed so far in answer to a join question (single-key mode)
        self.typed = ""
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
                    if message.get("type") == "ended":
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

    async def _end(self, message_task: asyncio.Future[dict[str, Any] | None]) -> Outcome:
        if not send(self.writer, {"type": "end"}):
            return Outcome("lost")  # the caller tells the broker once it is back
        deadline = asyncio.get_running_loop().time() + 2
        try:  # the broker confirms (with the receipt); do not wait long for it
            while True:
                left = deadline - asyncio.get_running_loop().time()
                message = await asyncio.wait_for(asyncio.shield(message_task), max(left, 0.01))
                if message is None or message.get("type") == "ended":
                    return Outcome("customer", message)
                message_task = asyncio.ensure_future(read_message(self.reader))
        except (TimeoutError, asyncssh.Error, OSError):
            return Outcome("customer")

    def _send(self, message: dict[str, Any]) -> None:
        if not send(self.writer, message):
            self.lost = True

    # --- from the broker -------------------------------------------------------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "join":
            self.names[message["engineer"]["name"]] = message["engineer"]["display"]
            if self.yes:
                who = message["engineer"]["display"]
                self.console.say(f"{who} joined: {message['what']} (allowed by --yes).")
                self._send({"type": "join_answer", "id": message["id"], "allow": True})
                return
            self.pending.append(message)
            if len(self.pending) == 1:
                self._ask_next()
        elif kind == "engineers":
            engineers = list(message.get("engineers", []))
            if self.asked_removal:
                self.asked_removal = False
                self._offer_removal(engineers)
                return
            names = [f"{e['display']} ({e['name']})" for e in engineers]
            self.console.say("Connected: " + (", ".join(names) if names else "nobody right now."))
        elif kind == "limits":
            if not self.limits_told:  # again after a reconnect: only the status line changes
                self.limits_told = True
                self.console.say(
                    ui.limits_text(int(message["seconds"]), int(message["idle_seconds"]))
                )
            if self.on_limits is not None:
                self.on_limits(float(message.get("seconds_left", message["seconds"])))
        elif kind == "removed":
            if self.on_removed is not None:
                self.on_removed(str(message.get("engineer", "")))
        elif kind == "link":
            if self.on_link is not None:
                self.on_link(str(message.get("nonce", "")))
        elif kind == "notice":
            self.console.say(str(message.get("message", "")))
        elif kind == "error":
            self.console.say(f"The broker said: {message.get('message')}")

    def _ask_next(self) -> None:
        if self.pending:
            self.console.discard_input()  # keys typed before the question answer nothing
            self.typed = ""
            join = self.pending[0]
            self.console.out.write(
                visible(
                    ui.JOIN_QUESTION.format(engineer=join["engineer"]["display"], what=join["what"])
                )
            )
            self.console.out.flush()

    def _answer(self, answer: str) -> None:
        join = self.pending.popleft()
        allow = answer in ("y", "yes", "a", "always")
        self._send(
            {
                "type": "join_answer",
                "id": join["id"],
                "allow": allow,
                "always": answer in ("a", "always"),
            },
        )
        who = join["engineer"]["display"]
        self.console.say(f"{who} may join." if allow else f"{who} was not let in.")
        self._ask_next()

    def _offer_removal(self, engineers: list[dict[str, str]]) -> None:
        if not engineers:
            self.console.say("Nobody is connected right now.")
            return
        self.choosing = engineers[:9]
        choices = ", ".join(f"{n} = {e['display']}" for n, e in enumerate(self.choosing, 1))
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
                self._send({"type": "remove", "engineer": choosing[int(key) - 1]["name"]})
            else:
                self.console.say("Nobody was removed.")
            return
        if key == "q":
            self.end_requested.set()
        elif key == "r":
            self.asked_removal = True
            self._send({"type": "who"})
        elif key == "w":
            self._send({"type": "who"})
        elif key in ("?", "h"):
            self.console.say(ui.KEYS_HELP)

    def _answer_key(self, key: str) -> None:
        """A join question takes a whole answer and Enter (keys typed into the live view
        must not let anyone in): only "y", "yes", "a" or "always" allow."""
        out = self.console.out
        if key in ("\n", "\r"):
            answer, self.typed = self.typed.strip().lower(), ""
            out.write("\n")
            self._answer(answer)
        elif key in ("\x7f", "\b"):
            if self.typed:
                self.typed = self.typed[:-1]
                out.write("\b \b")
        elif key.isprintable() and len(self.typed) < 20:
            self.typed += key
            out.write(key)
        out.flush()

    # --- from the customer -----------------------------------------------------------------

    def _on_line(self, line: str) -> None:
        if self.pending:
            self._answer(line.lower())
            return
        word, _, rest = line.partition(" ")
        word = word.lower()
        if word == "who":
            self._send({"type": "who"})
        elif word == "remove" and rest.strip():
            self._send({"type": "remove", "engineer": rest.strip()})
        elif word in ("end", "q", "quit", "exit"):
            self.end_requested.set()
        elif word:
            self.console.say(ui.HELP)
