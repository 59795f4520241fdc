"""File transfer on an engineer's session channel: the ``sftp`` subsystem (sftp, and scp in its
default SFTP mode) and legacy ``scp -t`` / ``scp -f`` commands (``scp -O``).

Both are served by asyncssh's SFTP and scp server code on the broker, backed by
:class:`SFTPProxy`, which relays every operation to the helper and audits it.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncssh
import structlog
from asyncssh.scp import run_scp_server
from asyncssh.sftp import run_sftp_server
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

from assist_protocol.scope import ChannelRequest
from broker.errors import BrokerError
from broker.events import ChannelOpened, ChannelRef, FileOperation
from broker.relay.ports import Engineer
from broker.relay.sftp_proxy import SFTPProxy
from broker.sinks.dispatch import Dispatcher


class Host(Protocol):
    """The engineer's session channel that carries SFTP or scp (broker.relay.pump)."""

    edge: Engineer
    dispatcher: Dispatcher
    kind: str
    command: str | None
    ref: ChannelRef | None
    channel: int | None
    activity: Callable[[], None]
    reason: str | None

    def stop(self, message: str) -> None: ...


log = structlog.get_logger(__name__)

SFTP_VERSION = 3


def scp_mode(command: str) -> str | None:
    """``"download"`` for ``scp -f``, ``"upload"`` for ``scp -t``, else ``None``."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not words or words[0] != "scp":
        return None
    flags = "".join(w[1:] for w in words[1:] if w.startswith("-") and not w.startswith("--"))
    if "f" in flags and "t" not in flags:
        return "download"
    if "t" in flags and "f" not in flags:
        return "upload"
    return None


class FilesChannel:
    """Runs asyncssh's stream session for SFTP/scp on the relay's channel."""

    def __init__(self, relay: Host, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.relay = relay
        self.chan = chan
        self.proxy: SFTPProxy | None = None
        self.stopped = False
        # The stream session buffers the channel for asyncssh's readers and writers.
        self.stream = SSHServerStreamSession[bytes](None)
        self.stream.connection_made(chan)

    def start(self) -> None:
        """Serve SFTP or scp, then report an exit status like OpenSSH's sftp-server does.

        Without an exit status, ``ssh`` exits 255 and the default (SFTP-mode) ``scp`` turns that
        into exit 1 after a successful copy: the pitfall seen with asyncssh's own SFTP session.
        """
        stdin = SSHReader[bytes](self.stream, self.chan)
        stdout = _ExitingWriter(self, self.stream, self.chan)
        handler: Awaitable[None] | None
        if self.relay.kind == "sftp":
            handler = run_sftp_server(self._open(), stdin, stdout, SFTP_VERSION)
        else:
            stderr = SSHWriter[bytes](self.stream, self.chan, asyncssh.EXTENDED_DATA_STDERR)
            handler = run_scp_server(self._open(), self.relay.command or "", stdin, stdout, stderr)
        edge = self.relay.edge
        edge.ctx.spawn(self._serve(handler), "files", edge.log_context)

    async def _serve(self, handler: Awaitable[None] | None) -> None:
        status = 0
        try:
            if handler is not None:
                await handler
        except (OSError, asyncssh.Error) as exc:
            log.info("file_transfer_failed", error=str(exc))
            status = 1
        self.exit(status)

    def exit(self, status: int) -> None:
        """Report the exit status once (asyncssh's SFTP handler closes its writer when done)."""
        if not self.stopped:
            self.stopped = True
            self.chan.exit(status)

    @property
    def bytes_in(self) -> int:
        return self.proxy.bytes_written if self.proxy else 0

    @property
    def bytes_out(self) -> int:
        return self.proxy.bytes_read if self.proxy else 0

    async def _open(self) -> SFTPProxy:
        relay, edge = self.relay, self.relay.edge
        command = relay.command
        mode = scp_mode(command) if command else None
        detail: dict[str, Any] = {"command": command} if command else {"subsystem": "sftp"}
        try:
            request = ChannelRequest("sftp", write=mode != "download")
            if relay.kind == "sftp":  # sftp may only read; the proxy refuses changes then
                request = ChannelRequest("sftp", write=False)
            live, admitted = await edge.admit(relay.kind, request, "file transfer", detail, relay)
            relay.channel = admitted.channel
            assert live.granted is not None
            nested = await edge.nested(live)
            relay.ref = edge.ref(live, relay.kind)
            relay.activity = live.touch
            await relay.dispatcher.emit(ChannelOpened(relay.ref, detail))
            client = await nested.start_sftp_client()
        except BrokerError as exc:
            relay.reason = exc.code
            self.stopped = True
            relay.stop(exc.message)
            await edge.audit_refusal(relay.kind, exc, **detail)
            return SFTPProxy(self.chan, None, self._audit, read_only=True, granted="")
        except (OSError, asyncssh.Error) as exc:
            log.warning("sftp_open_failed", error=repr(exc))
            relay.reason = "helper_refused"
            self.stopped = True
            relay.stop(f"The customer's helper refused file transfer: {exc}")
            return SFTPProxy(self.chan, None, self._audit, read_only=True, granted="")
        self.proxy = SFTPProxy(
            self.chan,
            client,
            self._audit,
            read_only="sftp" not in live.granted.items,
            granted=str(live.granted),
        )
        return self.proxy

    async def _audit(self, action: str, detail: dict[str, Any]) -> None:
        """Each operation is audited before its result goes back (fail closed)."""
        ref: ChannelRef | None = self.relay.ref
        if ref is None:
            raise asyncssh.SFTPPermissionDenied("File transfer was refused for this channel.")
        try:
            await self.relay.dispatcher.emit(FileOperation(ref, action, detail))
        except BrokerError as exc:
            raise asyncssh.SFTPFailure(exc.message) from None


class _ExitingWriter(SSHWriter[bytes]):
    """Closing this writer ends the channel with exit status 0 instead of a bare close."""

    def __init__(
        self,
        files: FilesChannel,
        session: SSHServerStreamSession[bytes],
        chan: asyncssh.SSHServerChannel[bytes],
    ) -> None:
        super().__init__(session, chan)
        self._files = files

    def close(self) -> None:
        self._files.exit(0)
