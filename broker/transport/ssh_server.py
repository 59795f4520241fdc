"""The broker's one SSH listener. Each connection becomes a helper (user ``agent``, consent code)
or an engineer (user = ticket key, public key); every hook not needed keeps a refusal."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncssh
import structlog

from assist_protocol.constants import AGENT_USER
from broker.relay.observe import ObserverSession
from broker.relay.pump import RelaySession
from broker.relay.tcp import open_forward
from broker.resources import connection_budget
from broker.transport.agent_ssh import AgentEdge
from broker.transport.channel_guard import guard_channel
from broker.transport.context import CIPHERS, Context
from broker.transport.engineer_ssh import EngineerEdge
from broker.transport.listener import Limits, SharedListener
from broker.tunnels import TunnelRegistry

log = structlog.get_logger(__name__)


FORWARDING_REFUSED = "Port forwarding is only for engineers, within the customer's consent."


class BrokerSSHServer(asyncssh.SSHServer):
    def __init__(self, ctx: Context, tunnels: TunnelRegistry[AgentEdge]) -> None:
        self.ctx = ctx
        self.tunnels = tunnels
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer = "?"
        self.agent: AgentEdge | None = None
        self.engineer: EngineerEdge | None = None
        self.username: str | None = None
        #: set when the client changed its user name: nothing may authenticate any more
        self.locked = False
        #: public keys this connection offered (each is a database lookup)
        self.keys_offered: set[str] = set()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"

    def connection_lost(self, exc: Exception | None) -> None:
        if self.agent is not None:
            if self.agent.live is not None:
                self.tunnels.remove(self.agent.live.id, self.agent)
            self.agent.connection_lost()
        if self.engineer is not None:
            self.ctx.engineers.discard(self.engineer)
            self.engineer.connection_lost()

    # --- authentication --------------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        """One user name per connection. asyncssh calls this again when a client changes the
        name between attempts; a change would mix a helper's code with an engineer's key
        (probed without proof) on one connection, so it ends the attempt at logging in."""
        assert self.conn is not None
        if self.username is not None and username != self.username:
            log.warning("auth_username_changed", peer=self.peer)
            self.agent = self.engineer = None
            self.locked = True
            return True
        if self.username is not None:
            return True  # the same user again: keep the edge and what it has seen
        self.username = username
        if username == AGENT_USER:
            self.agent = AgentEdge(self.conn, self.ctx, self.peer)
        else:
            self.engineer = EngineerEdge(
                self.conn, self.ctx, self.peer, username[:64], self.tunnels.find
            )
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return self.agent is not None and not self.locked

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]] | bool:
        return self.agent.get_kbdint_challenge() if self.agent is not None else False

    async def validate_kbdint_response(self, username: str, responses: Any) -> bool:
        if self.agent is None or self.locked or username != self.username:
            return False
        accepted = await self.agent.validate_kbdint_response(list(responses))
        if accepted and self.agent.live is not None:
            self.tunnels.add(self.agent.live.id, self.agent)
        return accepted

    def public_key_auth_supported(self) -> bool:
        return True  # for helpers only to notice (and audit) keys offered as "agent"

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self.locked or username != self.username:
            return False
        fingerprint = str(key.get_fingerprint("sha256"))
        if fingerprint not in self.keys_offered:
            # Checked before the lookup: a client offering a thousand keys gets ten lookups
            # (OpenSSH's own server stops at MaxAuthTries, 6 by default).
            if len(self.keys_offered) >= self.ctx.settings.ssh_max_keys:
                self._too_many_keys()
                return False
            self.keys_offered.add(fingerprint)
        if self.agent is not None:
            self.agent.key_offered(str(key.get_fingerprint("sha256")))
            return False
        return self.engineer is not None and await self.engineer.validate_public_key(key)

    def _too_many_keys(self) -> None:
        if self.locked:
            return
        self.locked = True  # nothing may authenticate on this connection any more
        log.warning("auth_too_many_keys", peer=self.peer, offered=len(self.keys_offered))
        if self.ctx.metrics is not None:
            self.ctx.metrics.connections_refused.labels("too_many_keys").inc()
        assert self.conn is not None
        self.conn.disconnect(
            asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
            f"Too many keys offered (more than {self.ctx.settings.ssh_max_keys}). "
            "Use -i KEY -o IdentitiesOnly=yes.",
        )

    def auth_completed(self) -> None:
        # Belt and braces: exactly one edge, the one for the user name that logged in.
        assert self.conn is not None and not self.locked
        if self.conn.get_extra_info("username") != self.username or (
            (self.agent is None) == (self.engineer is None)
        ):
            log.error("auth_state_inconsistent", peer=self.peer)
            self.agent = self.engineer = None
            self.conn.close()
            return
        if self.engineer is not None:
            self.engineer.auth_completed()
            self.ctx.engineers.add(self.engineer)

    # --- channels --------------------------------------------------------------------------

    def session_requested(self) -> Any:
        if self.agent is not None:
            return self.agent.session_requested()
        if self.engineer is not None and self.conn is not None:
            edge = self.engineer
            chan = self.conn.create_server_channel(encoding=None)
            guard_channel(
                chan,
                lambda what: edge.ctx.spawn(
                    edge.refuse(what, f"{what} forwarding is never allowed"), None, edge.log_context
                ),
            )
            return chan, ObserverSession(edge) if edge.watch else RelaySession(edge)
        return False

    async def server_requested(self, listen_host: str, listen_port: int) -> Any:
        if self.agent is not None:
            return await self.agent.server_requested(listen_host, listen_port)
        if self.engineer is not None:
            reason = "remote forwarding (-R) is never allowed"
            # The reply to a global request carries no text: say why on the session's stderr.
            self.engineer.tell(await self.engineer.refusal(reason))
            await self.engineer.refuse(
                "remote-forward", reason, host=listen_host[:100], port=listen_port
            )
        return False

    async def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        if self.engineer is not None and not self.engineer.watch:
            return await open_forward(self.engineer, dest_host, dest_port, orig_host, orig_port)
        if self.engineer is not None:
            await self.engineer.refuse(
                "forward",
                "a watch connection only watches a shell",
                host=dest_host[:255],
                port=dest_port,
            )
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, FORWARDING_REFUSED
        )

    def unix_connection_requested(self, dest_path: str) -> bool:
        """``ssh -L port:/path``: never allowed, and audited like every refusal."""
        if self.engineer is not None:
            self.engineer.refuse_soon(
                "unix-forward", "forwarding to a Unix socket is never allowed", path=dest_path[:255]
            )
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        """``ssh -R /path:...``: never allowed, and audited like every refusal."""
        if self.engineer is not None:
            reason = "remote forwarding of a Unix socket is never allowed"
            self.engineer.tell(self.engineer.refused_text(reason))
            self.engineer.refuse_soon("unix-remote-forward", reason, path=listen_path[:255])
        return False


async def start_ssh_server(ctx: Context, tunnels: TunnelRegistry[AgentEdge]) -> SharedListener:
    """Listen on ``settings.ssh_host:ssh_port`` (port 0 picks a free port)."""
    settings = ctx.settings
    options = asyncssh.SSHServerConnectionOptions(
        server_factory=lambda: BrokerSSHServer(ctx, tunnels),
        server_host_keys=[ctx.keys.host_key],
        encryption_algs=list(CIPHERS),
        compression_algs=None,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_scp=False,
        keepalive_interval=settings.keepalive_interval,
        login_timeout=settings.login_timeout,
        encoding=None,
        config=None,
    )

    def on_link(nonce: bytes, sock: socket.socket, peer: str) -> bool:
        return ctx.links.arrived(nonce, sock)

    def refused(reason: str) -> None:
        if ctx.metrics is not None:
            ctx.metrics.connections_refused.labels(reason).inc()

    limits = Limits(
        settings.ssh_unauth_per_address, connection_budget(settings.ssh_unauth_total), refused
    )
    return await SharedListener.bind(settings.ssh_host, settings.ssh_port, options, on_link, limits)


async def close_ssh_server(server: SharedListener) -> None:
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), 5)
    except TimeoutError:
        log.warning("ssh_server_close_timeout")
