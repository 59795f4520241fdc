"""The helper's embedded SSH server, reached only through the broker's nested connection.

Only the broker's relay key may log in (pinned from the control channel); the server's host key
is ephemeral (its fingerprint went to the broker over the control channel). Every channel is
checked against the customer's granted scope with the same function the broker uses.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncssh
from asyncssh.stream import SSHServerStreamSession

from agent_client.files import CustomerSFTPServer, ReadOnlySFTPServer
from agent_client.forward import open_target
from agent_client.park import ShellPark
from agent_client.pty import SIGNALS, PipeProcess, PtyProcess
from agent_client.server_util import user_shell
from assist_protocol.flow import ReadGate
from assist_protocol.scope import ChannelRequest, Scope, decide, split_env

EventHook = Callable[[str, dict[str, Any]], None]


class HelperServer(asyncssh.SSHServer):
    """One connection from the broker (one engineer login), over a reverse link or nested."""

    def __init__(
        self,
        scope: Scope,
        on_event: EventHook,
        mirror: Callable[[bytes], None] | None = None,
        park: ShellPark | None = None,
        dropped: Callable[[], bool] = lambda: False,
    ) -> None:
        #: true once the helper lost the broker and hung this connection up itself
        self.dropped = dropped
        #: the customer's live view: a copy of every PTY shell's output
        self.mirror = mirror
        #: where shells wait while the connection to the broker is down
        self.park = park
        self.scope = scope
        self.on_event = on_event
        self.engineer = "?"
        self.logged_in = False
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def begin_auth(self, username: str) -> bool:
        self.engineer = username
        return True

    def auth_completed(self) -> None:
        self.logged_in = True
        self.on_event("login", {"engineer": self.engineer})

    def connection_lost(self, exc: Exception | None) -> None:
        if self.logged_in:
            self.on_event("logout", {"engineer": self.engineer})

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return HelperSession(self)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        """A port forward: only to a destination the customer allowed (checked again here)."""
        decision = decide(self.scope, ChannelRequest("forward", host=dest_host, port=dest_port))
        if not decision:
            self.on_event("refused", {"engineer": self.engineer, "what": decision.reason})
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"Refused by the customer's helper: {decision.reason}",
            )
        return self._forward(dest_host, dest_port)

    async def _forward(self, host: str, port: int) -> asyncssh.SSHTCPSession[bytes]:
        """Connect to the destination ourselves, to tell the customer when it closes."""
        detail: dict[str, Any] = {"engineer": self.engineer, "host": host, "port": port}
        forward = await open_target(host, port, lambda: self.on_event("forward_closed", detail))
        detail["channel"] = id(forward)
        self.on_event("forward", detail)
        return forward

    def server_requested(self, *args: Any) -> bool:
        return False


class HelperSession(asyncssh.SSHServerSession[bytes]):
    """A shell or a command for the engineer, if the customer's scope allows it."""

    def __init__(self, server: HelperServer) -> None:
        self.server = server
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.process: PtyProcess | PipeProcess | None = None
        self.command: str | None = None
        self.kind = "shell"
        self.term: tuple[str, tuple[int, int, int, int]] | None = None
        # input that arrives while the process is still starting
        self._pending: list[bytes] = []
        self._pending_eof = False
        self.gate = ReadGate()
        #: for the sftp subsystem: asyncssh's SFTP server handles the channel
        self.files: SSHServerStreamSession[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        self.gate.attach(chan)

    def _allowed(self, request: ChannelRequest) -> bool:
        decision = decide(self.server.scope, request)
        if not decision:
            self.server.on_event(
                "refused", {"engineer": self.server.engineer, "what": decision.reason}
            )
        return decision.allowed

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self.term = (term_type, term_size)
        return True

    def shell_requested(self) -> bool:
        self.kind = "shell"
        return self._allowed(ChannelRequest("shell", pty=self.term is not None))

    def exec_requested(self, command: str) -> bool:
        self.kind, self.command = "exec", command
        return self._allowed(ChannelRequest("exec", pty=self.term is not None))

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return self._allowed(ChannelRequest("subsystem", subsystem=subsystem))
        decision = decide(self.server.scope, ChannelRequest("sftp", write=False))
        if not decision or self.chan is None:
            return self._allowed(ChannelRequest("sftp", write=False))
        self.kind = "sftp"
        factory = ReadOnlySFTPServer if decision.reason == "sftp-read" else CustomerSFTPServer
        self.files = SSHServerStreamSession[bytes](
            None, lambda chan: factory(chan, self._file_opened), 3
        )
        self.files.connection_made(self.chan)
        self._event("opened", kind="sftp")
        return True

    def session_started(self) -> None:
        if self.files is not None:
            self.files.session_started()
            return
        asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self.chan is not None
        park = self.server.park
        if self.term is not None and self.command is None and park is not None:
            taken = park.take(self.server.engineer)
            if taken is not None:
                self.server.on_event("unparked", {"engineer": taken.engineer, "channel": taken.key})
                await self._reattach(taken.process, time.monotonic() - taken.since)
                return
        shell, home = user_shell()
        argv = [shell, "-l"] if self.command is None else [shell, "-c", self.command]
        env = dict(os.environ)
        env.update(split_env(self.chan.get_environment())[0])  # only TERM, LANG, LC_*
        env["ASSIST_SESSION"] = "1"
        process: PtyProcess | PipeProcess
        try:
            if self.term is not None:
                term_type, (cols, rows, _, _) = self.term
                env["TERM"] = term_type or "xterm"
                process = PtyProcess(self)
                await process.start(argv, env, home, (cols or 80, rows or 24))
            else:
                process = PipeProcess(self)
                await process.start(argv, env, home)
        except OSError as exc:
            self.chan.write_stderr(f"The helper could not start {argv[0]}: {exc}\n".encode())
            self.chan.exit(127)
            return
        if self._gone():  # the engineer left while the process was starting
            process.close()
            return
        self.process = process
        for chunk in self._pending:
            self.process.write(chunk)
        if self._pending_eof:
            self.process.write_eof()
        self._pending.clear()
        self._event("opened", kind=self.kind, command=self.command)
        await self._serve(process)

    async def _reattach(self, process: PtyProcess, gap: float) -> None:
        """Give the engineer back the shell a network drop parked: a note, the last screen
        of output, then a redraw at the new terminal size."""
        assert self.chan is not None and self.term is not None
        self.process = process
        process.attach(self)
        _, (cols, rows, xpixel, ypixel) = self.term
        note = (
            f"\r\n[assist] The connection dropped for {round(gap)} s; your shell kept running. "
            "Its last output follows.\r\n"
        )
        self.chan.write(note.encode() + process.scrollback())
        process.resize(cols or 80, rows or 24, xpixel, ypixel)
        process.redraw()
        for chunk in self._pending:
            process.write(chunk)
        self._pending.clear()
        self._event("opened", kind="shell", reattached=True)
        await self._serve(process)

    async def _serve(self, process: PtyProcess | PipeProcess) -> None:
        status = await process.wait()
        if process.sink is not self:
            return  # parked during a drop: the shell is not this channel's any more
        if isinstance(process, PtyProcess):
            process.drain_output()
        process.close()
        self._event("closed", kind=self.kind)
        if self._gone():
            return
        assert self.chan is not None
        if status < 0:
            name = {v: k for k, v in SIGNALS.items()}.get(-status, "KILL")
            self.chan.exit_with_signal(name)
        else:
            self.chan.exit(status)

    def _event(self, what: str, **detail: Any) -> None:
        who = {"engineer": self.server.engineer, "channel": id(self)}
        self.server.on_event(what, {**who, **detail})

    def _file_opened(self, path: str, write: bool) -> None:
        self._event("file", path=path, write=write)

    def _gone(self) -> bool:
        return self.chan is None

    # --- Sink for the process --------------------------------------------------------------

    def output(self, data: bytes, stderr: bool) -> None:
        if self.server.mirror is not None and isinstance(self.process, PtyProcess):
            self.server.mirror(data)
        if self.chan is not None:
            self.chan.write(data, asyncssh.EXTENDED_DATA_STDERR if stderr else None)

    def input_paused(self, paused: bool) -> None:
        if paused:
            self.gate.pause()
        else:
            self.gate.resume()

    # --- from the engineer -----------------------------------------------------------------

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.files is not None:
            self.files.data_received(data, datatype)
        elif self.process is not None:
            self.process.write(data)
        else:
            self._pending.append(data)

    def eof_received(self) -> bool:
        if self.files is not None:
            return bool(self.files.eof_received())
        if self.process is not None:
            self.process.write_eof()
        else:
            self._pending_eof = True
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if isinstance(self.process, PtyProcess):
            self.process.resize(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.process is not None:
            self.process.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if isinstance(self.process, PtyProcess):
            self.process.send_signal("INT")
        return True

    def pause_writing(self) -> None:
        if self.files is not None:
            self.files.pause_writing()
        if self.process is not None:
            self.process.pause_output()

    def resume_writing(self) -> None:
        if self.files is not None:
            self.files.resume_writing()
        if self.process is not None:
            self.process.resume_output()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.files is not None:
            self.files.connection_lost(exc)
            self._event("closed", kind="sftp")
        self.chan = None
        self.gate.attach(None)
        process, park = self.process, self.server.park
        if process is None:
            return
        if (
            # the connection to the broker dropped (a hang-up comes clean)
            (exc is not None or self.server.dropped())
            and park is not None
            and isinstance(process, PtyProcess)
            and self.kind == "shell"
            and process.running
        ):
            park.keep(self.server.engineer, process, self.server.mirror, id(self))
            self._event("parked", kind="shell")
            return
        process.close()
