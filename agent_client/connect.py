"""The helper's session: dial out to the broker, redeem the code, ask the customer, serve the
engineers through the broker's connections to the embedded server, end when the customer says."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import platform
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from agent_client import compat
from agent_client import consent_ui as ui
from agent_client.activity import Activity
from agent_client.console import Console
from agent_client.control import ControlLoop, Outcome, read_message, send
from agent_client.dial import CONNECTION_GONE, DialFailed, dial
from agent_client.links import Link
from agent_client.park import ShellPark
from agent_client.screen import StatusLine
from agent_client.server import HelperServer
from assist_protocol import messages as msg
from assist_protocol.constants import CIPHERS, CONTROL_SUBSYSTEM, RESUME_PREFIX
from assist_protocol.receipt import receipt_text
from assist_protocol.scope import Scope, ScopeError

#: each of these ends the session (Ctrl-C, Ctrl-\\, a closed terminal window, kill)
ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
#: seconds between reconnect attempts after a drop: doubling from the first, up to the last
BACKOFF = (0.5, 10.0)

# exit statuses
EXIT_ENDED_BY_CUSTOMER = 0
EXIT_ENDED_OTHERWISE = 1
EXIT_REFUSED = 2  # never connected: bad code, bad fingerprint, unreachable, declined


@dataclass(frozen=True)
class Options:
    code: str
    host: str
    port: int
    fingerprint: str | None
    yes: bool = False
    scope: str | None = None
    receipt: str | None = None


def save_receipt(path: str, receipt: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(receipt, out, indent=2)
        out.write("\n")


def host_facts() -> dict[str, str]:
    return {
        "hostname": socket.gethostname(),
        "user": getpass.getuser(),
        "os": platform.platform(terse=True),
    }


class Helper:
    def __init__(self, opts: Options, console: Console) -> None:
        self.opts = opts
        self.console = console
        self.where = f"{opts.host}:{opts.port}"
        self.end_requested = asyncio.Event()
        self.ended: dict[str, Any] | None = None
        self.display_names: dict[str, str] = {}
        #: what engineers do here now: the status line, or one line per event
        self.activity = Activity(names=self.display_names)
        #: given by the broker at consent: the way back after a network drop
        self.resume_token: str | None = None
        self.grace = 120.0
        self.park: ShellPark | None = None
        self.resumes = 0
        #: how the broker reaches the embedded server: "reverse" links or "nested" (older)
        self.link_kind = "nested"
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")

    async def run(self) -> int:
        if not self.opts.fingerprint:
            self.console.say(ui.NEED_FINGERPRINT)
            return EXIT_REFUSED
        try:
            conn = await dial(self.opts.host, self.opts.port, self.opts.fingerprint, self.opts.code)
        except DialFailed as exc:
            self.console.say(exc.message)
            return EXIT_REFUSED
        try:
            return await self._session(conn)
        finally:
            if self.park is not None:
                self.park.close()  # shells still waiting for a reconnect are hung up
            conn.close()
            await conn.wait_closed()

    async def _session(self, conn: asyncssh.SSHClientConnection) -> int:
        try:
            writer, reader, _ = await conn.open_session(
                subsystem=CONTROL_SUBSYSTEM, encoding="utf-8"
            )
        except CONNECTION_GONE:  # gone before the consent: nothing to resume
            self.console.say(ui.LOST)
            return EXIT_ENDED_OTHERWISE
        hello = await read_message(reader)
        if not isinstance(hello, msg.Hello):
            self.console.say(ui.LOST)
            return EXIT_ENDED_OTHERWISE
        self.display_names[hello.engineer.name] = hello.engineer.display
        self.activity.ticket = hello.ticket.key
        self.link_kind = "reverse" if hello.link == "reverse" else "nested"
        requested = Scope.parse(hello.scope)
        try:
            offered, beyond = ui.offered(requested, self.opts.scope)
        except ScopeError as exc:
            self.console.say(f"--scope: {exc}. Nothing was allowed.")
            send(writer, msg.Decline())
            return EXIT_REFUSED
        if beyond:
            self.console.say(beyond)
        granting = offered.describe() if offered != requested else None
        question = ui.consent_question(hello, requested.describe(), granting)
        if self.opts.yes:
            self.console.say(question + "yes (--yes)")
        elif not await self.console.ask_yes_no(question):
            send(writer, msg.Decline())
            await read_message(reader)  # the broker confirms and hangs up
            self.console.say(ui.DECLINED)
            return EXIT_REFUSED

        send(
            writer,
            msg.Consent(
                host_key=self._host_key.export_public_key().decode().strip(),
                scope=str(offered),
                host=host_facts(),
                link=self.link_kind,  # how this helper lets the broker reach it
            ),
        )
        reply = await read_message(reader)
        if not isinstance(reply, msg.Consented):
            return self._over(reply if isinstance(reply, msg.Ended) else None)
        granted = offered.narrowed_to(Scope.parse(reply.scope))
        self.resume_token = reply.resume
        self.grace = reply.grace_seconds or self.grace
        self.park = ShellPark(
            self.grace,
            lambda engineer, key: self._event("closed", {"engineer": engineer, "channel": key}),
        )
        link = Link(conn, writer, reader)
        up = await self._up(link, granted, hello.relay_key)

        loop = asyncio.get_running_loop()
        for signum in ENDING_SIGNALS:
            loop.add_signal_handler(signum, self.end_requested.set)
        # Ctrl-Z would freeze the engineers' sessions with the terminal left in key mode.
        previous_tstp = signal.signal(signal.SIGTSTP, signal.SIG_IGN)
        connected = ui.CONNECTED_KEYS if self.console.interactive else ui.CONNECTED
        self.console.say(
            connected.format(
                engineer=hello.engineer.display, scope=granted.describe(), ticket=hello.ticket.key
            )
        )
        screen = contextlib.ExitStack()
        try:
            screen.enter_context(self.console.single_keys())
            if self.console.interactive:
                self.console.status = StatusLine(self.console.out, self.activity.status)
                self.console.status.start()
                screen.callback(self._status_off)
            while True:
                outcome = await self._control(link) if up else Outcome("lost")
                if outcome.how == "lost" and self.end_requested.is_set():
                    # the end met the drop: say it once the broker can be reached again
                    link.close(dropped=True)
                    if self.resume_token:
                        await self._end_remotely()
                    return self._finish(Outcome("customer"))
                if outcome.how != "lost" or not self.resume_token:
                    return self._finish(outcome)
                link.close(dropped=True)
                back = await self._reconnect(granted, hello.relay_key)
                if isinstance(back, Outcome):
                    return self._finish(back)
                link, up = back, True
        finally:
            screen.close()
            for signum in ENDING_SIGNALS:
                loop.remove_signal_handler(signum)
            signal.signal(signal.SIGTSTP, previous_tstp)
            link.close()

    def _status_off(self) -> None:
        if self.console.status is not None:
            self.console.status.stop()
            self.console.status = None

    async def _listen(self, link: Link, granted: Scope, relay_key: str) -> None:
        """The helper's embedded server, reachable only by the broker: over reverse links the
        helper dials when asked, or through the forward (the older nested design). The forward
        is asked for either way: it tells the broker the helper is ready."""
        authorized = asyncssh.import_authorized_keys(relay_key + "\n")
        mirror, park = self._mirror(), self.park
        options: dict[str, Any] = {
            "server_host_keys": [self._host_key],
            "authorized_client_keys": authorized,
            "encryption_algs": CIPHERS,
            "compression_algs": None,
            "encoding": None,
            "agent_forwarding": False,
            "x11_forwarding": False,
            "allow_scp": False,
            # the broker's relay key is the only way in: no GSS, host-based, password or
            # keyboard-interactive login, whatever this Python happens to have installed
            "gss_host": None,
            "gss_kex": False,
            "gss_auth": False,
            "host_based_auth": False,
            "password_auth": False,
            "kbdint_auth": False,
        }

        def server() -> HelperServer:
            return HelperServer(granted, self._event, mirror, park, link.dropped)

        await link.serve(self.link_kind, server, options)

    async def _up(self, link: Link, granted: Scope, relay_key: str) -> bool:
        """:meth:`_listen`, or ``False`` when the connection went away meanwhile."""
        try:
            await self._listen(link, granted, relay_key)
        except CONNECTION_GONE:
            return False
        return True

    async def _reconnect(self, granted: Scope, relay_key: str) -> Link | Outcome:
        """Dial again with the resume token until the grace period runs out (``gone``), the
        broker refuses (``told``: the customer has read why), or the customer ends it."""
        assert self.resume_token is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + self.grace
        self.activity.reconnecting = True
        self.console.say(ui.DROPPED.format(grace=ui.duration(round(self.grace))))
        try:
            return await self._redial(granted, relay_key, deadline)
        finally:
            self.activity.reconnecting = False
            if self.console.status is not None:
                self.console.status.draw()

    async def _redial(self, granted: Scope, relay_key: str, deadline: float) -> Link | Outcome:
        """Attempts with backoff. A network that flaps may cut an attempt at any step (the
        dial, the control channel, the ``resumed`` message, the forward): each such attempt
        just failed, and the next one follows after the backoff."""
        loop = asyncio.get_running_loop()
        began = deadline - self.grace
        delay = BACKOFF[0]
        while (left := deadline - loop.time()) > 0 and not self.end_requested.is_set():
            try:
                back = await self._attempt(granted, relay_key, max(1.0, min(10.0, left)))
            except DialFailed as exc:
                if exc.final:
                    self.console.say(exc.message)
                    return Outcome("told")
                back = None
            if isinstance(back, Link):
                self.console.say(ui.RECONNECTED.format(seconds=round(loop.time() - began)))
                return back
            if back is not None:
                return back
            wait = min(delay, max(deadline - loop.time(), 0.0))
            with contextlib.suppress(*compat.TIMEOUTS):  # unless the customer ends it meanwhile
                await asyncio.wait_for(self.end_requested.wait(), wait)
            delay = min(delay * 2, BACKOFF[1])
        if self.end_requested.is_set():
            await self._end_remotely()
            return Outcome("customer")
        return Outcome("gone")

    async def _attempt(
        self, granted: Scope, relay_key: str, timeout: float
    ) -> Link | Outcome | None:
        """One try to get back: the link, the broker's last word (``ended``), or ``None``
        when the connection went away again (or went silent for ``timeout`` seconds)."""
        assert self.resume_token is not None
        conn = await dial(
            self.opts.host,
            self.opts.port,
            str(self.opts.fingerprint),
            RESUME_PREFIX + self.resume_token,
            timeout=timeout,
        )
        back: Link | Outcome | None = None
        try:
            async with compat.timeout(timeout):
                back = await self._resume_on(conn, granted, relay_key)
        except (*CONNECTION_GONE, *compat.TIMEOUTS):
            back = None
        finally:
            if not isinstance(back, Link):
                conn.close()
        return back

    async def _resume_on(
        self, conn: asyncssh.SSHClientConnection, granted: Scope, relay_key: str
    ) -> Link | Outcome | None:
        writer, reader, _ = await conn.open_session(subsystem=CONTROL_SUBSYSTEM, encoding="utf-8")
        message = await read_message(reader)
        if not isinstance(message, msg.Resumed):
            if isinstance(message, msg.Ended):
                return Outcome("ended", message)
            return None
        # the next way back; the broker keeps the one just used valid until the forward is up
        self.resume_token = message.resume or self.resume_token
        link = Link(conn, writer, reader)
        await self._listen(link, granted, relay_key)
        self.resumes += 1
        return link

    async def _end_remotely(self) -> None:
        """The customer ended the session while the connection was down: one quick try to
        tell the broker, so that the record says who ended it."""
        assert self.resume_token is not None and self.opts.fingerprint is not None
        try:
            conn = await dial(
                self.opts.host,
                self.opts.port,
                self.opts.fingerprint,
                RESUME_PREFIX + self.resume_token,
                timeout=3,
            )
        except DialFailed:
            return
        try:
            writer, reader, _ = await conn.open_session(
                subsystem=CONTROL_SUBSYSTEM, encoding="utf-8"
            )
            send(writer, msg.End())
            async with compat.timeout(3):
                while (message := await read_message(reader)) is not None:
                    if isinstance(message, msg.Ended):
                        break
        except (*CONNECTION_GONE, *compat.TIMEOUTS):
            pass
        finally:
            conn.close()

    async def _control(self, link: Link) -> Outcome:
        loop = ControlLoop(
            link.writer,
            link.reader,
            self.console,
            yes=self.opts.yes,
            end_requested=self.end_requested,
            names=self.display_names,
            on_limits=self.activity.set_time_left,
            on_removed=self._removed,
            limits_told=self.resumes > 0,
            on_link=link.dial,
        )
        return await loop.run()

    def _removed(self, engineer: str) -> None:
        if self.park is not None and self.park.close_for(engineer):
            self.console.say(f"{self.activity.who(engineer)}'s waiting shell was closed.")

    def _finish(self, outcome: Outcome) -> int:
        """Tell the customer how it ended, with the receipt when the broker sent one."""
        receipt = outcome.message.receipt if outcome.message is not None else None
        if outcome.how == "customer":
            self.console.say(ui.ENDED_BY_CUSTOMER)
            status = EXIT_ENDED_BY_CUSTOMER
        elif outcome.how == "gone":
            self.console.say(ui.NOT_BACK.format(grace=ui.duration(round(self.grace))))
            status = EXIT_ENDED_OTHERWISE
        elif outcome.how == "told":
            status = EXIT_ENDED_OTHERWISE
        else:
            status = self._over(outcome.message)
        if isinstance(receipt, dict):
            self.console.say(receipt_text(receipt).rstrip())
            if self.opts.receipt:
                save_receipt(self.opts.receipt, receipt)
                self.console.say(f"The receipt was saved to {self.opts.receipt}.")
        return status

    def _over(self, message: msg.Ended | None) -> int:
        if message is None:
            self.console.say(ui.LOST)
        else:
            text = message.message or "it was ended."
            self.console.say(ui.SESSION_OVER.format(message=text))
        return EXIT_ENDED_OTHERWISE

    def _mirror(self) -> Callable[[bytes], None] | None:
        """On a terminal, the customer sees what the engineer's shell shows (a live view)."""
        out = self.console.out
        if not out.isatty():
            return None  # logs or a pipe: one line per event only
        buffer = getattr(out, "buffer", None)

        def show(data: bytes) -> None:
            if buffer is not None:
                buffer.write(data)
            else:
                out.write(data.decode(errors="replace"))
            out.flush()

        return show

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        """An event from the embedded server: the status line shows it on a terminal;
        elsewhere the customer reads one line per event."""
        line = self.activity.event(kind, detail)
        if self.console.status is not None:
            self.console.status.draw()
            if kind == "refused" and line:
                self.console.say(line)
        elif line:
            self.console.say(line)
