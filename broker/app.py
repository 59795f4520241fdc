"""Puts the pieces together: store, keys, session manager, sinks and the SSH listener."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass

import structlog
from aiohttp import web

from broker import listening as listening_file
from broker.admin import AdminWorker
from broker.config import Settings
from broker.credentials import PasswordChecker
from broker.errors import ConfigError
from broker.evidence.checkpoints import Checkpointer
from broker.evidence.publish import CheckpointPoster
from broker.evidence.recovery import recover
from broker.evidence.signing import Signer
from broker.keys import BrokerKeys, ensure_data_dir, load_seal_key
from broker.metrics import Metrics, MetricsSink
from broker.ops.control import LiveControl
from broker.resources import connection_budget
from broker.session.consent import CodeHasher, ConsentCodes
from broker.session.manager import SessionManager
from broker.session.ratelimit import RateLimiter
from broker.session.refusals import RefusalReporter
from broker.session.watchdog import StoreWatchdog
from broker.sinks.audit import AuditSink
from broker.sinks.dispatch import Dispatcher
from broker.sinks.logline import LogLineSink
from broker.sinks.recorder import RecorderSink
from broker.store.db import Store
from broker.store.lease import DataDirLock, NodeLease
from broker.transport.agent_ssh import AgentEdge
from broker.transport.context import Context
from broker.transport.listener import SharedListener
from broker.transport.ssh_server import close_ssh_server, start_ssh_server
from broker.tunnels import TunnelRegistry
from broker.web.app import create_app
from broker.web.capped import CappedSite, ConnectionCaps
from broker.web.deps import Deps
from broker.web.helper_download import HelperDownload

log = structlog.get_logger(__name__)

#: how long a stopping broker waits for channels to close and their rows to be written (a
#: channel whose client does not answer is hung up on 2 s after its session ended)
STOP_GRACE = 10.0
#: codes that no longer work (used, expired, withdrawn, malformed) a source may try per window,
#: as a multiple of the wrong guesses it may make: a customer retrying an old code is not locked
#: out, a flood of them is (each is an audit event)
STALE_FACTOR = 4


@dataclass
class Listening:
    ssh_host: str
    ssh_port: int
    fingerprint: str
    http_host: str
    http_port: int


class Broker:
    """``await broker.start()`` ... ``await broker.stop()``; used by ``serve`` and by tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.db_url)
        self.keys: BrokerKeys | None = None
        self.ctx: Context | None = None
        self.tunnels: TunnelRegistry[AgentEdge] = TunnelRegistry()
        self._server: SharedListener | None = None
        self._http: web.AppRunner | None = None
        self._background: list[asyncio.Task[None]] = []
        self.checkpointer: Checkpointer | None = None
        self.metrics: Metrics | None = None
        self.refusals: RefusalReporter | None = None
        self.lock: DataDirLock | None = None
        self.lease: NodeLease | None = None

    @property
    def manager(self) -> SessionManager:
        assert self.ctx is not None
        return self.ctx.manager

    async def start(self) -> Listening:
        # Before anything touches live state (or creates a key): a second broker on this data
        # dir (or under this node name on a shared database) stops here, and the first one's
        # sessions stay as they are.
        ensure_data_dir(self.settings.data_dir)
        self.lock = DataDirLock(self.settings.data_dir)
        self.lock.acquire()
        self.keys = BrokerKeys.load(self.settings.data_dir)
        self.store.seal_key = load_seal_key(self.settings.data_dir)
        await self.store.upgrade()
        self.lease = NodeLease(self.store, socket.gethostname())
        await self.lease.take()
        await recover(
            self.store, socket.gethostname(), self.settings.recordings, self.settings.data_dir
        )
        limiter = self._limiter()
        stale = self._limiter(STALE_FACTOR)
        logins = self._limiter()
        auth_failures = self._limiter()
        self.refusals = RefusalReporter(
            self.store,
            {"codes": limiter, "stale_codes": stale, "logins": logins, "ssh_auth": auth_failures},
        )
        codes = ConsentCodes(
            self.store,
            CodeHasher(self.keys.code_key),
            limiter,
            stale=stale,
            node=socket.gethostname(),
        )
        recorder = RecorderSink(
            self.store,
            self.settings.recordings,
            self.settings.data_dir,
            record_input=self.settings.record_input,
            cap=self.settings.recording_cap,
            input_cap=self.settings.recording_input_cap,
            session_cap=self.settings.recording_session_cap,
            min_free=self.settings.recordings_min_free,
        )
        self.metrics = metrics = Metrics()
        codes.counted = lambda outcome: metrics.codes.labels(outcome).inc()
        self.store.audit_timer = metrics.audit_write.observe
        dispatcher = Dispatcher(
            [AuditSink(self.store), recorder, LogLineSink(), MetricsSink(metrics)]
        )
        signer = Signer.load(self.settings.data_dir)
        self.checkpointer = Checkpointer(
            self.store, signer, on_alarm=lambda _problem: metrics.audit_alarms.inc()
        )
        manager = SessionManager(self.store, codes, self.checkpointer.sign_quietly, self.settings)
        metrics.watch(lambda: len(manager.live()), lambda: len(self.tunnels))
        self.ctx = Context(
            self.settings,
            self.keys,
            self.store,
            manager,
            dispatcher,
            metrics,
            auth_failures=auth_failures,
        )
        recorder.end_session = self._recording_stopped
        manager.ended_hooks.append(recorder.forget)
        try:
            self._server = await start_ssh_server(self.ctx, self.tunnels)
        except OSError as exc:
            where = f"{self.settings.ssh_host}:{self.settings.ssh_port}"
            raise ConfigError(f"cannot listen for SSH on {where}: {exc.strerror or exc}") from None
        control = LiveControl(self.store, manager, self.tunnels, self.ctx.engineers)
        self._background = [
            asyncio.create_task(
                AdminWorker(self.store, control).run(),
                name="admin-requests",
            ),
            asyncio.create_task(
                self.checkpointer.run(self.settings.checkpoint_interval), name="audit-checkpoints"
            ),
            asyncio.create_task(StoreWatchdog(self.store, manager).run(), name="store-watchdog"),
            asyncio.create_task(self.refusals.run(), name="rate-limit-reports"),
            asyncio.create_task(self.lease.run(), name="node-lease"),
        ]
        if self.settings.checkpoint_post_url:
            poster = CheckpointPoster(
                self.settings.checkpoint_post_url,
                self.checkpointer.log,
                self.settings.data_dir,
                counted=lambda outcome: metrics.checkpoint_posts.labels(outcome).inc(),
            )
            self._background.append(
                asyncio.create_task(
                    poster.run(self.settings.checkpoint_interval), name="checkpoint-posts"
                )
            )
        ssh_name = self._server.sockets[0].getsockname()
        host = self.settings.advertised_host
        address = f"[{host}]:{ssh_name[1]}" if ":" in host else f"{host}:{ssh_name[1]}"
        helper_app = HelperDownload(address, self.keys.host_fingerprint)
        deps = Deps(
            settings=self.settings,
            store=self.store,
            manager=manager,
            tunnels=self.tunnels,
            engineers=self.ctx.engineers,
            control=control,
            codes=codes,
            signer=signer,
            checkpointer=self.checkpointer,
            metrics=metrics,
            logins=logins,
            passwords=PasswordChecker(),
            helper_app=helper_app,
            broker_address=address,
            fingerprint=self.keys.host_fingerprint,
        )
        http_name = await self._start_http(deps)
        listening = Listening(
            ssh_name[0], ssh_name[1], self.keys.host_fingerprint, http_name[0], http_name[1]
        )
        # ssh-config and people read the port from here: with port 0 only this process knows it
        listening_file.write(self.settings.data_dir, host, ssh_name[1])
        log.info(
            "broker_started",
            ssh=f"{listening.ssh_host}:{listening.ssh_port}",
            http=f"{listening.http_host}:{listening.http_port}",
            fingerprint=listening.fingerprint,
        )
        return listening

    def _recording_stopped(self, session_id: str) -> None:
        """The recorder can no longer record a session: end it, fail closed (engineers and the
        customer are told why; ``session.ended`` with reason ``sink_failed``)."""
        assert self.ctx is not None
        live = self.ctx.manager.find_id(session_id)
        if live is not None:
            end = self.ctx.manager.end(live, "sink_failed")
            self.ctx.spawn(end, "recording-stopped", {"session": session_id})

    def _limiter(self, factor: int = 1) -> RateLimiter:
        return RateLimiter(
            per_source=self.settings.code_fail_per_source * factor,
            per_prefix=self.settings.code_fail_per_prefix * factor,
            overall=self.settings.code_fail_global * factor,
            window=self.settings.code_fail_window,
        )

    async def _start_http(self, deps: Deps) -> tuple[str, int]:
        tls = self._tls()
        # aiohttp's keep-alive timer runs from the moment a connection is made and is not reset
        # by bytes that do not complete a request: it is the header timeout, for the first
        # request and every later one on the connection (a slow client is cut off).
        # After an answer to a request whose body was not all read (a 408), aiohttp reads on
        # for ``lingering_time`` (10 s by default) before it closes: 1 s is plenty.
        self._http = web.AppRunner(
            create_app(deps),
            access_log=None,
            keepalive_timeout=self.settings.http_header_timeout,
            lingering_time=1.0,
        )
        await self._http.setup()
        # Bind the socket here so that port 0 tells which port was picked.
        host, port = self.settings.http_host, self.settings.http_port
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = info[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}") from None
        caps = ConnectionCaps(
            self.settings.http_connections_per_address,
            connection_budget(self.settings.http_connections_total),
            lambda reason: (
                self.metrics.connections_refused.labels(reason).inc() if self.metrics else None
            ),
        )
        await CappedSite(self._http, sock, caps, ssl_context=tls).start()
        name = sock.getsockname()
        return str(name[0]), int(name[1])

    def _tls(self) -> ssl.SSLContext | None:
        cert, key = self.settings.http_tls_cert, self.settings.http_tls_key
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise ConfigError("HTTPS needs both http_tls_cert and http_tls_key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot use the HTTPS certificate {cert}: {exc}") from None
        return context

    async def stop(self) -> None:
        """Graceful: every live session ends with reason ``shutdown`` and engineers are told."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.ctx is not None:
            await self.ctx.manager.shutdown()
        if self._server is not None:
            await close_ssh_server(self._server)
            self._server = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        if self.ctx is not None:
            # every channel closed and its recording hashed before the store closes
            late = await self.ctx.drain(timeout=STOP_GRACE)
            for task in late:  # nothing may run on after the store is closed
                task.cancel()
            if late:
                log.warning("tasks_cancelled_at_stop", names=sorted(t.get_name() for t in late))
                await asyncio.wait(late, timeout=1)
        if self.refusals is not None:
            try:
                await self.refusals.report(flush=True)
            except Exception:
                log.exception("rate_limit_report_failed")
        if self.checkpointer is not None:
            await self.checkpointer.sign_quietly()
        if self.lease is not None:
            try:
                await self.lease.give_back()
            except Exception:
                log.exception("node_lease_not_given_back")
            self.lease = None
        listening_file.remove(self.settings.data_dir)
        await self.store.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        log.info("broker_stopped")
