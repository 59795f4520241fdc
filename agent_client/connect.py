"""The helper's session: dial out to the broker, redeem the code, ask the customer, serve the
engineer through the broker's nested connection, and end when the customer says so."""

from __future__ import annotations

import asyncio
import getpass
import hmac
import json
import platform
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from agent_client import consent_ui as ui
from agent_client.control import ControlLoop, read_message, send
from agent_client.server import HelperServer
from broker.session.policy import Scope, ScopeError

CONTROL_SUBSYSTEM = "assist-control"
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]

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


class HelperClient(asyncssh.SSHClient):
    """Pins the broker's host key by fingerprint and answers the code prompt."""

    def __init__(self, code: str, fingerprint: str) -> None:
        self._code = code
        self.expected = fingerprint
        self.seen: str | None = None
        self.banner = ""
        self._answered = False

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.seen = str(key.get_fingerprint("sha256"))
        return hmac.compare_digest(self.seen.encode(), self.expected.encode())

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banner += msg

    def kbdint_auth_requested(self) -> str | None:
        if self._answered:
            return None  # one try per connection: a refused code is final
        return ""  # no submethods: the broker asks for the code

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Any
    ) -> list[str]:
        if len(prompts) != 1:
            return []
        self._answered = True
        return [self._code]

    def refusal(self) -> str:
        """The broker's reason, sent as ``reason: message`` in a banner."""
        text = self.banner.strip()
        _, _, message = text.partition(": ")
        return message or "The broker did not accept the code."


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
    def __init__(self, opts: Options, console: ui.Console) -> None:
        self.opts = opts
        self.console = console
        self.where = f"{opts.host}:{opts.port}"
        self.end_requested = asyncio.Event()
        self.ended: dict[str, Any] | None = None
        self.display_names: dict[str, str] = {}

    async def run(self) -> int:
        if not self.opts.fingerprint:
            self.console.say(ui.NEED_FINGERPRINT)
            return EXIT_REFUSED
        client = HelperClient(self.opts.code, self.opts.fingerprint)
        try:
            conn = await asyncssh.connect(
                self.opts.host,
                self.opts.port,
                username="agent",
                client_factory=lambda: client,
                known_hosts=([], [], []),
                server_host_key_algs=["ssh-ed25519"],
                client_keys=None,
                agent_path=None,
                config=None,
                password=None,
                preferred_auth="keyboard-interactive",
                encryption_algs=CIPHERS,
                compression_algs=None,
                keepalive_interval=15,
                connect_timeout=20,
            )
        except (asyncssh.HostKeyNotVerifiable, asyncssh.KeyExchangeFailed) as exc:
            if client.seen is not None and client.seen != client.expected:
                self.console.say(
                    ui.MISMATCH.format(where=self.where, got=client.seen, expected=client.expected)
                )
            else:
                self.console.say(ui.UNREACHABLE.format(where=self.where, reason=exc.reason))
            return EXIT_REFUSED
        except asyncssh.PermissionDenied:
            self.console.say(client.refusal())
            return EXIT_REFUSED
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            self.console.say(ui.UNREACHABLE.format(where=self.where, reason=reason or "timeout"))
            return EXIT_REFUSED
        try:
            return await self._session(conn)
        finally:
            conn.close()
            await conn.wait_closed()

    async def _session(self, conn: asyncssh.SSHClientConnection) -> int:
        writer, reader, _ = await conn.open_session(subsystem=CONTROL_SUBSYSTEM, encoding="utf-8")
        hello = await read_message(reader)
        if hello is None or hello.get("type") != "hello":
            self.console.say(ui.LOST)
            return EXIT_ENDED_OTHERWISE
        self.display_names[hello["engineer"]["name"]] = hello["engineer"]["display"]
        requested = Scope.parse(hello["scope"])
        try:
            offered = (
                requested.narrowed_to(Scope.parse(self.opts.scope))
                if self.opts.scope
                else requested
            )
        except ScopeError as exc:
            self.console.say(f"--scope: {exc}. Nothing was allowed.")
            send(writer, {"type": "decline"})
            return EXIT_REFUSED
        question = ui.consent_question(hello, offered.describe())
        if self.opts.yes:
            self.console.say(question + "yes (--yes)")
        elif not await self.console.ask_yes_no(question):
            send(writer, {"type": "decline"})
            await read_message(reader)  # the broker confirms and hangs up
            self.console.say(ui.DECLINED)
            return EXIT_REFUSED

        host_key = asyncssh.generate_private_key("ssh-ed25519")
        send(
            writer,
            {
                "type": "consent",
                "scope": str(offered),
                "host_key": host_key.export_public_key().decode().strip(),
                "host": host_facts(),
            },
        )
        reply = await read_message(reader)
        if reply is None or reply.get("type") != "consented":
            return self._over(reply)
        granted = offered.narrowed_to(Scope.parse(reply["scope"]))

        authorized = asyncssh.import_authorized_keys(hello["relay_key"] + "\n")
        listener = await asyncssh.listen(
            tunnel=conn,
            host="session",
            port=22,
            server_factory=lambda: HelperServer(granted, self._event, self._mirror()),
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            encryption_algs=CIPHERS,
            compression_algs=None,
            encoding=None,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.end_requested.set)
        loop.add_signal_handler(signal.SIGTERM, self.end_requested.set)
        self.console.say(
            ui.CONNECTED.format(
                engineer=hello["engineer"]["display"],
                scope=granted.describe(),
                ticket=hello["ticket"]["key"],
            )
        )
        try:
            return await self._wait(writer, reader)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            listener.close()

    async def _wait(self, writer: asyncssh.SSHWriter[str], reader: asyncssh.SSHReader[str]) -> int:
        loop = ControlLoop(
            writer,
            reader,
            self.console,
            yes=self.opts.yes,
            end_requested=self.end_requested,
            names=self.display_names,
        )
        outcome = await loop.run()
        receipt = (outcome.message or {}).get("receipt")
        if outcome.how == "customer":
            self.console.say(ui.ENDED_BY_CUSTOMER)
            status = EXIT_ENDED_BY_CUSTOMER
        else:
            status = self._over(outcome.message)
        if isinstance(receipt, dict):
            self.console.say(str((outcome.message or {}).get("receipt_text", "")).rstrip())
            if self.opts.receipt:
                save_receipt(self.opts.receipt, receipt)
                self.console.say(f"The receipt was saved to {self.opts.receipt}.")
        return status

    def _over(self, message: dict[str, Any] | None) -> int:
        if message is None:
            self.console.say(ui.LOST)
        else:
            text = str(message.get("message") or "it was ended.")
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
        who = self.display_names.get(str(detail.get("engineer")), str(detail.get("engineer")))
        if kind == "opened":
            what = {"shell": "a shell", "sftp": "a file transfer"}.get(
                str(detail.get("kind")), "a command"
            )
            command = f": {detail['command']}" if detail.get("command") else ""
            self.console.say(f"{who} opened {what}{command}")
        elif kind == "closed":
            what = {"shell": "shell", "sftp": "file transfer"}.get(
                str(detail.get("kind")), "command"
            )
            self.console.say(f"{who}'s {what} ended.")
        elif kind == "forward":
            self.console.say(f"{who} connected to port {detail['port']} on {detail['host']}.")
        elif kind == "refused":
            self.console.say(f"Refused for {who}: {detail.get('what')}.")
